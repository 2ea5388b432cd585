package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// deploymentRebindAfter is how long a downstream deployment id stays bound to the
// credential that last recorded it once that credential stops syncing: after it, another
// credential may take the id over (a downstream whose resource token was renewed, say).
const deploymentRebindAfter = 7 * 24 * time.Hour

// boundElsewhere is the SQL condition, on a sync_deployments row d, that its id is bound
// to a credential other than $cred that may still use it: one that recorded it within
// deploymentRebindAfter before $now and, if a sync token, is neither revoked nor expired.
// $cred and $now are the parameter numbers given.
func boundElsewhere(cred, now int) string {
	return fmt.Sprintf(`(d.credential IS NOT NULL AND d.credential <> $%[1]d
		AND d.last_sync >= $%[2]d::timestamptz - interval '%[3]d seconds'
		AND (d.via <> 'sync-token' OR EXISTS (
			SELECT 1 FROM sync_tokens t WHERE t.token_hash = d.credential AND t.revoked_at IS NULL
				AND (t.valid_until IS NULL OR t.valid_until > $%[2]d))))`,
		cred, now, int(deploymentRebindAfter.Seconds()))
}

// errDeploymentBound is the conflict of a request whose deployment id belongs to another
// downstream.
func errDeploymentBound(id string) error {
	return server.Errorf(server.CodeConflict, "deployment id %q is in use by another downstream deployment (another credential synced with it in the last %d days): give each downstream its own patch-sync.id", id, int(deploymentRebindAfter.Hours()/24))
}

// RecordDownstreamSync upserts the last sync list request of a downstream deployment with
// one statement, outside an explicit transaction: it runs on every list request. A
// deployment seen again after the retention period (and not yet forgotten) starts anew.
func (db *DB) RecordDownstreamSync(ctx context.Context, s server.DownstreamSync) (err error) {
	defer classifyInto(&err)
	if err := server.CheckDeploymentID(s.DeploymentID); err != nil {
		return err
	}
	if s.Via != server.ViaSyncToken && s.Via != server.ViaResourceToken {
		return server.Errorf(server.CodeInvalid, "invalid sync credential %q: want %s or %s", s.Via, server.ViaSyncToken, server.ViaResourceToken)
	}
	if len(s.Credential) == 0 {
		return server.Errorf(server.CodeInvalid, "the sync of deployment %q has no credential", s.DeploymentID)
	}
	var count sql.NullInt64
	if s.MachineCount != nil {
		count = sql.NullInt64{Int64: int64(*s.MachineCount), Valid: true}
	}
	// The row comes back unless the id is bound to another credential: a request older
	// than the recorded one updates nothing but is no conflict.
	var bound bool
	err = db.db.QueryRowContext(ctx, `
		WITH up AS (
			INSERT INTO sync_deployments AS d (deployment_id, via, sync_token, tier, machine_count, first_seen, last_sync, credential)
			VALUES ($1, $2, $3, $4, $5, $6, $6, $8)
			ON CONFLICT (deployment_id) DO UPDATE
			SET via = EXCLUDED.via, sync_token = EXCLUDED.sync_token, tier = EXCLUDED.tier,
				machine_count = EXCLUDED.machine_count, last_sync = EXCLUDED.last_sync,
				credential = EXCLUDED.credential,
				first_seen = CASE WHEN d.last_sync < $7 OR d.credential <> EXCLUDED.credential
					THEN EXCLUDED.first_seen ELSE d.first_seen END
			WHERE d.last_sync <= EXCLUDED.last_sync AND NOT `+boundElsewhere(8, 6)+`
			RETURNING 1)
		SELECT NOT EXISTS (SELECT 1 FROM up) AND EXISTS (
			SELECT 1 FROM sync_deployments d WHERE d.deployment_id = $1 AND `+boundElsewhere(8, 6)+`)`,
		s.DeploymentID, s.Via, s.SyncToken, s.Tier, count, s.At, s.At.Add(-syncMachineRetention), s.Credential).Scan(&bound)
	if err != nil {
		return classify(fmt.Errorf("cannot record the sync of deployment %q: %w", s.DeploymentID, err))
	}
	if bound {
		return errDeploymentBound(s.DeploymentID)
	}
	return nil
}

// Downstreams lists the deployments seen in the retention period before now: those that
// made a sync list request, those that reported machines, or both, with their machines
// counted per patch state.
func (db *DB) Downstreams(ctx context.Context, now time.Time) (_ []server.Downstream, err error) {
	defer classifyInto(&err)
	var out []server.Downstream
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			WITH d AS (
				SELECT deployment_id, via, sync_token, tier, machine_count, first_seen, last_sync
				FROM sync_deployments WHERE last_sync >= $1
			), m AS (
				SELECT deployment_id, status->>'patch-state' AS state, count(*) AS n, max(reported_at) AS last_report
				FROM sync_machines WHERE reported_at >= $1
				GROUP BY 1, 2
			)
			SELECT coalesce(d.deployment_id, m.deployment_id) AS id, d.via, d.sync_token, d.tier, d.machine_count,
				d.first_seen, d.last_sync, m.state, m.n, m.last_report
			FROM d FULL JOIN m ON m.deployment_id = d.deployment_id
			ORDER BY id, m.state`, now.Add(-syncMachineRetention))
		if err != nil {
			return fmt.Errorf("cannot list downstream deployments: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id                    string
				via, token, tier, st  sql.NullString
				count, n              sql.NullInt64
				first, last, reported sql.NullTime
			)
			if err := rows.Scan(&id, &via, &token, &tier, &count, &first, &last, &st, &n, &reported); err != nil {
				return fmt.Errorf("cannot list downstream deployments: %w", err)
			}
			if len(out) == 0 || out[len(out)-1].ID != id {
				d := server.Downstream{ID: id, Via: via.String, SyncToken: token.String, Tier: tier.String, PatchStates: map[string]int{}}
				if first.Valid {
					d.FirstSeen, d.LastSync = utc(first.Time), utc(last.Time)
				}
				if count.Valid {
					c := int(count.Int64)
					d.MachineCount = &c
				}
				out = append(out, d)
			}
			if !st.Valid {
				continue // no machine reports
			}
			d := &out[len(out)-1]
			d.PatchStates[st.String] = int(n.Int64)
			d.ReportedMachines += int(n.Int64)
			if r := utc(reported.Time); r.After(d.LastReport) {
				d.LastReport = r
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list downstream deployments: %w", err)
		}
		return nil
	})
	return out, err
}

// DownstreamMachines lists the machines a deployment reported in the retention period
// before now, matching f, by id.
func (db *DB) DownstreamMachines(ctx context.Context, f server.DownstreamMachineFilter, now time.Time) (_ []server.DownstreamMachine, err error) {
	defer classifyInto(&err)
	var machines []server.DownstreamMachine
	since := now.Add(-syncMachineRetention)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		limit := sql.NullInt64{Int64: int64(f.Limit), Valid: f.Limit > 0}
		rows, err := tx.QueryContext(ctx, `
			SELECT machine_id, tier, last_seen, status, reported_at
			FROM sync_machines
			WHERE deployment_id = $1 AND reported_at >= $2 AND machine_id > $3
				AND ($4 = '' OR tier = $4)
				AND ($5 = '' OR status->>'patch-state' = $5)
			ORDER BY machine_id
			LIMIT $6`, f.DeploymentID, since, f.After, f.Tier, f.PatchState, limit)
		if err != nil {
			return fmt.Errorf("cannot list the machines of deployment %q: %w", f.DeploymentID, err)
		}
		defer rows.Close()
		for rows.Next() {
			var m server.DownstreamMachine
			var seen sql.NullTime
			var status []byte
			if err := rows.Scan(&m.ID, &m.Tier, &seen, &status, &m.ReportedAt); err != nil {
				return fmt.Errorf("cannot list the machines of deployment %q: %w", f.DeploymentID, err)
			}
			if err := json.Unmarshal(status, &m.Status); err != nil {
				return fmt.Errorf("cannot decode the status of machine %s of deployment %q: %w", m.ID, f.DeploymentID, err)
			}
			if seen.Valid {
				m.LastSeen = utc(seen.Time)
			}
			m.ReportedAt = utc(m.ReportedAt)
			machines = append(machines, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list the machines of deployment %q: %w", f.DeploymentID, err)
		}
		if len(machines) > 0 {
			return nil
		}
		var known bool
		err = tx.QueryRowContext(ctx, `
			SELECT EXISTS (SELECT 1 FROM sync_deployments WHERE deployment_id = $1 AND last_sync >= $2)
				OR EXISTS (SELECT 1 FROM sync_machines WHERE deployment_id = $1 AND reported_at >= $2)`,
			f.DeploymentID, since).Scan(&known)
		if err != nil {
			return fmt.Errorf("cannot read deployment %q: %w", f.DeploymentID, err)
		}
		if !known {
			return server.Errorf(server.CodeNotFound, "downstream deployment %q not found: it has not synced or reported machines in the last %d days", f.DeploymentID, int(syncMachineRetention.Hours()/24))
		}
		return nil
	})
	return machines, err
}

// ForgetDownstreams deletes the deployments whose last sync list request, and the reported
// machines whose last report, is older than the retention period before now.
func (db *DB) ForgetDownstreams(ctx context.Context, now time.Time) (_ int, err error) {
	defer classifyInto(&err)
	before := now.Add(-syncMachineRetention)
	var total int
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `DELETE FROM sync_deployments WHERE last_sync < $1`, before)
		if err != nil {
			return fmt.Errorf("cannot forget downstream deployments: %w", err)
		}
		m, err := execCount(ctx, tx, `DELETE FROM sync_machines WHERE reported_at < $1`, before)
		if err != nil {
			return fmt.Errorf("cannot forget downstream machines: %w", err)
		}
		total = n + m
		return nil
	})
	return total, err
}
