-- The origin's signature of a synced patch file, as the upstream lists it, so that this
-- server can offer it to clients that check signatures (trusted-key) and pass it on to
-- its own downstream servers. Both columns are NULL for uploads and for patches synced
-- from upstreams that do not sign them; the previous server never reads them.
ALTER TABLE patches
	ADD COLUMN signature        bytea,
	ADD COLUMN signature_key_id text;
