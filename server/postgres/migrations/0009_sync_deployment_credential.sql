-- 0009: the credential a downstream deployment id is bound to (the stored hash of the sync
-- or resource token that recorded it), so that one sync-token holder cannot overwrite
-- another deployment's record or machine reports by sending its id. Additive only: a
-- nullable column the previous server neither reads nor writes; rows it writes keep NULL
-- and are bound by the next request.
ALTER TABLE sync_deployments ADD COLUMN credential bytea;
