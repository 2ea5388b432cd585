-- 0005: tier mirroring (patch-sync.sync-tiers). A downstream that mirrors its upstream
-- blocks the synced patches the upstream no longer lists, and lifts that block when the
-- upstream lists them again. upstream_blocked marks a block sync set, so that sync lifts
-- only its own blocks, never an administrator's (an administrator's block or unblock
-- clears it). Expand-only: the previous server neither reads nor writes it.
ALTER TABLE patches ADD COLUMN upstream_blocked boolean NOT NULL DEFAULT false;
