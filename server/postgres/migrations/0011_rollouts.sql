-- 0011: rollout policies per tier and the state of each rollout (one patch version in one
-- tier). Additive only: new tables that the previous server neither reads nor writes.

-- A tier's rollout policy (server.RolloutPolicy, without its tier), as JSON; apply_timeout
-- is its apply timeout, which the rollout counts need in SQL.
CREATE TABLE rollout_policies (
	tier_id       bigint NOT NULL CONSTRAINT rollout_policies_pkey PRIMARY KEY
		CONSTRAINT rollout_policies_tier_id_fkey REFERENCES tiers (id) ON DELETE CASCADE,
	policy        jsonb NOT NULL,
	apply_timeout interval NOT NULL,
	updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Units load the policies with the catalog, so that no unit serves a patch recorded after
-- a policy without the policy: a change of policy moves the catalog version.
CREATE TRIGGER rollout_policies_catalog_version AFTER INSERT OR UPDATE OR DELETE ON rollout_policies
	FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();

-- One row per rollout. Units claim offer slots by updating the row under its lock:
-- claimed counts the offers made and the slots units hold; period_claimed the slots
-- claimed in the rate period that began at period_start.
CREATE TABLE rollouts (
	tier_id        bigint NOT NULL CONSTRAINT rollouts_tier_id_fkey REFERENCES tiers (id) ON DELETE CASCADE,
	version        text NOT NULL,
	state          text NOT NULL DEFAULT 'active'
		CONSTRAINT rollouts_state_check CHECK (state IN ('active', 'paused', 'halted')),
	reason         text NOT NULL DEFAULT '',
	started_at     timestamptz NOT NULL,
	canaries_done  timestamptz,
	claimed        integer NOT NULL DEFAULT 0 CONSTRAINT rollouts_claimed_check CHECK (claimed >= 0),
	period_start   timestamptz,
	period_claimed integer NOT NULL DEFAULT 0,
	halt_baseline  integer NOT NULL DEFAULT 0,
	CONSTRAINT rollouts_pkey PRIMARY KEY (tier_id, version)
);

-- The machines a rollout offered its patch, in order: the first ones are its canaries.
-- id orders offers across units, and lets units load the offers made since they last
-- looked.
CREATE TABLE rollout_offers (
	id         bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT rollout_offers_id_key UNIQUE,
	tier_id    bigint NOT NULL,
	version    text NOT NULL,
	machine_id text NOT NULL,
	offered_at timestamptz NOT NULL,
	CONSTRAINT rollout_offers_pkey PRIMARY KEY (tier_id, version, machine_id),
	CONSTRAINT rollout_offers_rollout_fkey FOREIGN KEY (tier_id, version)
		REFERENCES rollouts (tier_id, version) ON DELETE CASCADE
);
