-- 0001: the initial schema.
--
-- Migrations are expand-first: a later migration only adds (tables, nullable or defaulted
-- columns, indexes), so that a binary built for an older schema keeps working on a newer one
-- while units are upgraded one by one. Removing what old binaries use waits for a later
-- release.

-- Tiers in promotion order: positions are 1..n without gaps. The position constraint is
-- checked at commit, so that inserting or deleting a tier can shift the others.
CREATE TABLE tiers (
	id       bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT tiers_pkey PRIMARY KEY,
	name     text NOT NULL CONSTRAINT tiers_name_key UNIQUE,
	position integer NOT NULL CONSTRAINT tiers_position_check CHECK (position > 0),
	CONSTRAINT tiers_position_key UNIQUE (position) DEFERRABLE INITIALLY DEFERRED
);

INSERT INTO tiers (name, position) VALUES ('edge', 1), ('beta', 2), ('candidate', 3), ('stable', 4);

-- Patch files. tier_id is the highest tier the patch has been promoted to.
CREATE TABLE patches (
	filename     text NOT NULL CONSTRAINT patches_pkey PRIMARY KEY,
	version      text NOT NULL,
	kernel       text NOT NULL,
	flavour      text NOT NULL,
	architecture text NOT NULL,
	sha256       text NOT NULL,
	size         bigint NOT NULL,
	module       text NOT NULL,
	description  text NOT NULL DEFAULT '',
	fixes        jsonb NOT NULL DEFAULT '[]',
	tier_id      bigint NOT NULL CONSTRAINT patches_tier_id_fkey REFERENCES tiers (id),
	blocked      boolean NOT NULL DEFAULT false,
	block_reason text NOT NULL DEFAULT '',
	source       text NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX patches_version_idx ON patches (version);
CREATE INDEX patches_tier_id_idx ON patches (tier_id);

-- The contents of patch files for the postgres patch store (package patchstore). A file is
-- a head row naming its current generation and chunks of at most chunk_size bytes; Put
-- writes a new generation and switches the head in one transaction, so readers see the old
-- or the new file, never a mix.
CREATE SEQUENCE patch_file_generations;

CREATE TABLE patch_files (
	filename    text NOT NULL CONSTRAINT patch_files_pkey PRIMARY KEY,
	generation  bigint NOT NULL,
	size        bigint NOT NULL,
	chunk_size  integer NOT NULL CONSTRAINT patch_files_chunk_size_check CHECK (chunk_size > 0),
	modified_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE patch_file_data (
	filename   text NOT NULL CONSTRAINT patch_file_data_filename_fkey
		REFERENCES patch_files (filename) ON DELETE CASCADE,
	generation bigint NOT NULL,
	chunk      integer NOT NULL,
	data       bytea NOT NULL,
	CONSTRAINT patch_file_data_pkey PRIMARY KEY (filename, generation, chunk)
);

-- Patch archives are already compressed: do not try again.
ALTER TABLE patch_file_data ALTER COLUMN data SET STORAGE EXTERNAL;

-- Auth tokens let machines of a tier enable themselves. label is the admin-visible id; at
-- most one unrevoked token has a label. tier_id is cleared when the tier of a revoked token
-- is deleted.
CREATE TABLE auth_tokens (
	id           bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT auth_tokens_pkey PRIMARY KEY,
	label        text NOT NULL,
	tier_id      bigint CONSTRAINT auth_tokens_tier_id_fkey REFERENCES tiers (id) ON DELETE SET NULL,
	token_hash   bytea NOT NULL CONSTRAINT auth_tokens_token_hash_key UNIQUE,
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz,
	max_machines integer NOT NULL DEFAULT 0 CONSTRAINT auth_tokens_max_machines_check CHECK (max_machines >= 0),
	revoked_at   timestamptz
);

CREATE UNIQUE INDEX auth_tokens_label_key ON auth_tokens (label) WHERE revoked_at IS NULL;

-- Admin login sessions, by the hash of their bearer token.
CREATE TABLE sessions (
	token_hash bytea NOT NULL CONSTRAINT sessions_pkey PRIMARY KEY,
	user_name  text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL
);

CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Enrolled machines and their latest status. Ids are ASCII; byte order makes listing
-- pages (id > cursor) cheap and the same everywhere.
CREATE TABLE machines (
	id                 text COLLATE "C" NOT NULL CONSTRAINT machines_pkey PRIMARY KEY,
	tier_id            bigint NOT NULL CONSTRAINT machines_tier_id_fkey REFERENCES tiers (id),
	auth_token_id      bigint NOT NULL CONSTRAINT machines_auth_token_id_fkey REFERENCES auth_tokens (id),
	machine_token_hash bytea NOT NULL,
	enabled_at         timestamptz NOT NULL,
	last_seen          timestamptz,
	kernel             text NOT NULL DEFAULT '',
	architecture       text NOT NULL DEFAULT '',
	cpu_model          text NOT NULL DEFAULT '',
	boot_time          timestamptz,
	uptime             bigint NOT NULL DEFAULT 0,
	client_version     text NOT NULL DEFAULT '',
	patch_state        text NOT NULL DEFAULT '',
	patch_version      text NOT NULL DEFAULT ''
);

CREATE INDEX machines_auth_token_id_idx ON machines (auth_token_id);
CREATE INDEX machines_tier_id_patch_version_idx ON machines (tier_id, patch_version);

-- Status history. It outlives a disabled machine until retention cleanup deletes it.
CREATE TABLE machine_reports (
	id             bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT machine_reports_pkey PRIMARY KEY,
	machine_id     text NOT NULL,
	reported_at    timestamptz NOT NULL,
	kernel         text NOT NULL,
	architecture   text NOT NULL,
	cpu_model      text NOT NULL DEFAULT '',
	boot_time      timestamptz,
	uptime         bigint NOT NULL DEFAULT 0,
	client_version text NOT NULL DEFAULT '',
	patch_state    text NOT NULL,
	patch_version  text NOT NULL DEFAULT ''
);

CREATE INDEX machine_reports_reported_at_idx ON machine_reports (reported_at);

-- Sync tokens let downstream servers sync a tier from this server.
CREATE TABLE sync_tokens (
	id          bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT sync_tokens_pkey PRIMARY KEY,
	name        text NOT NULL,
	tier_id     bigint CONSTRAINT sync_tokens_tier_id_fkey REFERENCES tiers (id) ON DELETE SET NULL,
	token_hash  bytea NOT NULL CONSTRAINT sync_tokens_token_hash_key UNIQUE,
	created_at  timestamptz NOT NULL DEFAULT now(),
	valid_until timestamptz,
	revoked_at  timestamptz
);

CREATE UNIQUE INDEX sync_tokens_name_key ON sync_tokens (name) WHERE revoked_at IS NULL;

-- A counter that every change to tiers or patches bumps, with a NOTIFY on channel
-- livepatch_catalog, so that every unit knows when to reload its catalog cache.
CREATE TABLE catalog_version (
	singleton boolean NOT NULL DEFAULT true CONSTRAINT catalog_version_pkey PRIMARY KEY
		CONSTRAINT catalog_version_singleton_check CHECK (singleton),
	version   bigint NOT NULL
);

INSERT INTO catalog_version (version) VALUES (1);

CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	v bigint;
BEGIN
	UPDATE catalog_version SET version = version + 1 RETURNING version INTO v;
	PERFORM pg_notify('livepatch_catalog', v::text);
	RETURN NULL;
END
$$;

CREATE TRIGGER tiers_catalog_version AFTER INSERT OR UPDATE OR DELETE ON tiers
	FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER patches_catalog_version AFTER INSERT OR UPDATE OR DELETE ON patches
	FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
