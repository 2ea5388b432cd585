-- 0010: the compact history of a machine (one row per change of its state, not per
-- check-in) and an index that reads one machine's check-ins.
--
-- Why a table of changes, not a window over machine_reports: a machine checks in every
-- hour or so and the history keeps 90 days (machine-reports.retention-days), so deriving
-- the changes with lag() over one machine's rows reads ~2,000 heap rows scattered over
-- the whole table (check-ins of all machines interleave) for every machine show, and a
-- fleet-wide question ("what changed since") reads the whole history. A row per change
-- costs one conditional insert at the check-in that changes something, which is rare,
-- and its table stays a small fraction of machine_reports.
--
-- The check-in detects a change with state_since: it keeps the time the machine's kernel,
-- patch state or patch version last changed, and the check-in statement sets it to its
-- own time only when one of them differs from the stored row (SET expressions read the
-- old row), so "state_since = last_seen" after the update says the check-in changed it.
-- Machines enrolled before this migration have state_since NULL: their next check-in is
-- their first recorded change. Additive only: the previous server neither reads nor
-- writes the new column, table or index.
ALTER TABLE machines ADD COLUMN state_since timestamptz;

-- What the operator recognises a machine by: the time it first enrolled (enabled_at is
-- replaced when it enables again; NULL for machines enrolled before this migration), the
-- hostname and cloud placement it reports, and the administrator's tags. None of them is
-- written by a check-in that does not change it, and last_seen stays unindexed, so that
-- a check-in remains a HOT update (no index entries to write).
ALTER TABLE machines
	ADD COLUMN first_seen timestamptz,
	ADD COLUMN hostname   text NOT NULL DEFAULT '',
	ADD COLUMN cloud      text NOT NULL DEFAULT '',
	ADD COLUMN region     text NOT NULL DEFAULT '',
	ADD COLUMN zone       text NOT NULL DEFAULT '',
	ADD COLUMN tags       jsonb NOT NULL DEFAULT '{}';

CREATE INDEX machines_hostname_idx ON machines (hostname);
CREATE INDEX machines_tags_idx ON machines USING gin (tags jsonb_path_ops);

CREATE TABLE machine_changes (
	id            bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT machine_changes_pkey PRIMARY KEY,
	machine_id    text COLLATE "C" NOT NULL,
	changed_at    timestamptz NOT NULL,
	-- What changed: 'check-in' (kernel, patch state or version), 'move' (an
	-- administrator moved it to tier), 'enable' (enrolled, or enrolled again).
	cause         text NOT NULL
		CONSTRAINT machine_changes_cause_check CHECK (cause IN ('check-in', 'move', 'enable')),
	tier          text NOT NULL,
	kernel        text NOT NULL DEFAULT '',
	patch_state   text NOT NULL DEFAULT '',
	patch_version text NOT NULL DEFAULT ''
);

CREATE INDEX machine_changes_machine_id_idx ON machine_changes (machine_id, changed_at);
CREATE INDEX machine_changes_changed_at_idx ON machine_changes (changed_at);

-- Every check-in of one machine (machine history --all). It builds on the existing
-- history while check-ins wait (a migration is one transaction: no CONCURRENTLY); see
-- docs/admin.md for its cost on a large history.
CREATE INDEX machine_reports_machine_id_idx ON machine_reports (machine_id, reported_at);
