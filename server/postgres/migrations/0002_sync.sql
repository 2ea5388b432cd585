-- 0002: upstream sync. Additive only (see 0001): a binary built for schema 1 keeps working.

-- One row per sync run of this deployment (any unit). The store keeps a bounded history.
CREATE TABLE sync_reports (
	id            bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT sync_reports_pkey PRIMARY KEY,
	started_at    timestamptz NOT NULL,
	ended_at      timestamptz NOT NULL,
	outcome       text NOT NULL
		CONSTRAINT sync_reports_outcome_check CHECK (outcome IN ('success', 'failed', 'skipped')),
	patches_added integer NOT NULL DEFAULT 0,
	bytes         bigint NOT NULL DEFAULT 0,
	error         text NOT NULL DEFAULT '',
	unit          text NOT NULL DEFAULT ''
);

CREATE INDEX sync_reports_outcome_id_idx ON sync_reports (outcome, id);

-- Machines that downstream deployments report when they send machine reports (upstream
-- side). machine_id is an HMAC of the real id keyed with the deployment id.
CREATE TABLE sync_machines (
	deployment_id text NOT NULL,
	machine_id    text NOT NULL,
	tier          text NOT NULL DEFAULT '',
	last_seen     timestamptz,
	status        jsonb NOT NULL,
	reported_at   timestamptz NOT NULL,
	CONSTRAINT sync_machines_pkey PRIMARY KEY (deployment_id, machine_id)
);

CREATE INDEX sync_machines_reported_at_idx ON sync_machines (reported_at);
