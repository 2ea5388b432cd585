-- 0006: the downstream deployments that sync from this server (upstream side), for the
-- downstream report: one row per deployment id, the telemetry of its last sync list
-- request. Additive only: a new table the previous server neither reads nor writes.
CREATE TABLE sync_deployments (
	deployment_id text CONSTRAINT sync_deployments_pkey PRIMARY KEY,
	-- How the request authenticated; sync_token names the sync token ('' with a resource
	-- token).
	via           text NOT NULL
		CONSTRAINT sync_deployments_via_check CHECK (via IN ('sync-token', 'resource-token')),
	sync_token    text NOT NULL DEFAULT '',
	tier          text NOT NULL,
	-- Livepatch-Machine-Count as sent (bucketed or exact); NULL when not sent.
	machine_count bigint,
	first_seen    timestamptz NOT NULL,
	last_sync     timestamptz NOT NULL
);

-- Deployments not seen for the retention period are forgotten by the cleanup job.
CREATE INDEX sync_deployments_last_sync_idx ON sync_deployments (last_sync);
