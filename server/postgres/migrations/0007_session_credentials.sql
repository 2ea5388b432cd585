-- 0007: admin sessions bound to the credential they logged in with, and named by an id
-- that administrators list and revoke them by. Additive only: nullable columns the previous
-- server neither reads nor writes. Sessions it creates (no credential) are refused by the
-- new server: their users log in again.
ALTER TABLE sessions ADD COLUMN id text;
-- SHA-256 of the user's "user:bcrypt-hash" entry at login: a removed user or a changed
-- password ends the session.
ALTER TABLE sessions ADD COLUMN credential_hash bytea;

CREATE UNIQUE INDEX sessions_id_key ON sessions (id);
CREATE INDEX sessions_user_name_idx ON sessions (user_name);
