-- 0007: where a sync run's patch list came from (an upstream or an offline bundle), and
-- the newest list applied per upstream tier, so an offline bundle older than what is
-- already applied is refused. Additive only: a column with a default the previous server
-- neither reads nor writes, and a new table.
ALTER TABLE sync_reports ADD COLUMN source text NOT NULL DEFAULT 'upstream'
	CONSTRAINT sync_reports_source_check CHECK (source IN ('upstream', 'offline-bundle'));

CREATE TABLE sync_lists (
	tier         text CONSTRAINT sync_lists_pkey PRIMARY KEY,
	generated_at timestamptz NOT NULL
);
