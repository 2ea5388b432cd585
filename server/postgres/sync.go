package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/server"
)

// maxSyncReports bounds the sync report history: older reports are forgotten.
const maxSyncReports = 1000

// syncMachineRetention is how long a machine a downstream stopped reporting is kept, and a
// downstream deployment that stopped syncing (ForgetDownstreams).
const syncMachineRetention = 30 * 24 * time.Hour

// CreateSyncToken records a new sync token for a tier.
func (db *DB) CreateSyncToken(ctx context.Context, t server.NewSyncToken) (_ server.SyncToken, err error) {
	defer classifyInto(&err)
	if err := server.CheckLabel("sync token name", t.Name); err != nil {
		return server.SyncToken{}, err
	}
	token := server.SyncToken{Name: t.Name, Tier: t.Tier}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		tier, err := findTier(ctx, tx, t.Tier)
		if err != nil {
			return err
		}
		var valid sql.NullTime
		if t.ValidUntil != nil {
			valid = sql.NullTime{Time: *t.ValidUntil, Valid: true}
		}
		err = tx.QueryRowContext(ctx, `
			INSERT INTO sync_tokens (name, tier_id, token_hash, valid_until)
			VALUES ($1, $2, $3, $4)
			RETURNING created_at, valid_until`, t.Name, tier.id, t.Hash, valid).
			Scan(&token.CreatedAt, &valid)
		switch {
		case isUnique(err, "sync_tokens_name_key"):
			return server.Errorf(server.CodeConflict, "sync token %q already exists", t.Name)
		case isUnique(err, "sync_tokens_token_hash_key"):
			return server.Errorf(server.CodeConflict, "sync token %q: the token value is already in use", t.Name)
		case isForeignKey(err, "sync_tokens_tier_id_fkey"):
			return server.Errorf(server.CodeNotFound, "tier %q not found", t.Tier)
		case err != nil:
			return fmt.Errorf("cannot insert sync token %q: %w", t.Name, err)
		}
		token.CreatedAt = utc(token.CreatedAt)
		token.ValidUntil = timePtr(valid)
		return nil
	})
	if err != nil {
		return server.SyncToken{}, err
	}
	return token, nil
}

// syncTokenColumns are the columns scanSyncToken reads, from sync_tokens s joined with
// tiers t.
const syncTokenColumns = `s.name, coalesce(t.name, ''), s.created_at, s.valid_until, s.revoked_at IS NOT NULL`

func scanSyncToken(row interface{ Scan(...any) error }) (server.SyncToken, error) {
	var s server.SyncToken
	var valid sql.NullTime
	if err := row.Scan(&s.Name, &s.Tier, &s.CreatedAt, &valid, &s.Revoked); err != nil {
		return server.SyncToken{}, err
	}
	s.CreatedAt = utc(s.CreatedAt)
	s.ValidUntil = timePtr(valid)
	return s, nil
}

// SyncTokens lists every sync token, revoked ones included, by name.
func (db *DB) SyncTokens(ctx context.Context) (_ []server.SyncToken, err error) {
	defer classifyInto(&err)
	var tokens []server.SyncToken
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT `+syncTokenColumns+`
			FROM sync_tokens s LEFT JOIN tiers t ON t.id = s.tier_id
			ORDER BY s.name, s.created_at, s.id`)
		if err != nil {
			return fmt.Errorf("cannot list sync tokens: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			s, err := scanSyncToken(rows)
			if err != nil {
				return fmt.Errorf("cannot list sync tokens: %w", err)
			}
			tokens = append(tokens, s)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list sync tokens: %w", err)
		}
		return nil
	})
	return tokens, err
}

// SyncToken returns the sync token with that hash.
func (db *DB) SyncToken(ctx context.Context, hash []byte) (_ server.SyncToken, err error) {
	defer classifyInto(&err)
	var s server.SyncToken
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		s, err = scanSyncToken(tx.QueryRowContext(ctx, `
			SELECT `+syncTokenColumns+`
			FROM sync_tokens s LEFT JOIN tiers t ON t.id = s.tier_id
			WHERE s.token_hash = $1`, hash))
		if errors.Is(err, sql.ErrNoRows) {
			return server.Errorf(server.CodeNotFound, "unknown sync token")
		}
		if err != nil {
			return fmt.Errorf("cannot read sync token: %w", err)
		}
		return nil
	})
	return s, err
}

// RevokeSyncToken revokes the unrevoked sync token with name; downstream servers using it
// can no longer sync.
func (db *DB) RevokeSyncToken(ctx context.Context, name string) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `UPDATE sync_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL`, name)
		if err != nil {
			return fmt.Errorf("cannot revoke sync token %q: %w", name, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeNotFound, "sync token %q not found", name)
		}
		return nil
	})
}

// AddSyncReport records a sync run and forgets reports beyond the newest maxSyncReports.
func (db *DB) AddSyncReport(ctx context.Context, r server.SyncReport) (_ server.SyncReport, err error) {
	defer classifyInto(&err)
	switch r.Outcome {
	case server.SyncSuccess, server.SyncFailed, server.SyncSkipped:
	default:
		return server.SyncReport{}, server.Errorf(server.CodeInvalid, "invalid sync outcome %q", r.Outcome)
	}
	// PostgreSQL keeps microseconds: return what a later read returns.
	switch r.Source {
	case "":
		r.Source = server.SyncFromUpstream
	case server.SyncFromUpstream, server.SyncFromBundle:
	default:
		return server.SyncReport{}, server.Errorf(server.CodeInvalid, "invalid sync source %q", r.Source)
	}
	r.StartedAt, r.EndedAt = utc(r.StartedAt).Truncate(time.Microsecond), utc(r.EndedAt).Truncate(time.Microsecond)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `
			INSERT INTO sync_reports (started_at, ended_at, outcome, patches_added, bytes, error, unit, source)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			RETURNING id`, r.StartedAt, r.EndedAt, r.Outcome, r.PatchesAdded, r.Bytes, r.Error, r.Unit, r.Source).
			Scan(&r.ID)
		if err != nil {
			return fmt.Errorf("cannot insert sync report: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sync_reports WHERE id <= $1`, r.ID-maxSyncReports); err != nil {
			return fmt.Errorf("cannot delete old sync reports: %w", err)
		}
		return nil
	})
	if err != nil {
		return server.SyncReport{}, err
	}
	return r, nil
}

// SyncReports lists sync reports matching f, newest first.
func (db *DB) SyncReports(ctx context.Context, f server.SyncReportFilter) (_ []server.SyncReport, err error) {
	defer classifyInto(&err)
	var reports []server.SyncReport
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		limit := sql.NullInt64{Int64: int64(f.Limit), Valid: f.Limit > 0}
		rows, err := tx.QueryContext(ctx, `
			SELECT id, started_at, ended_at, outcome, patches_added, bytes, error, unit, source
			FROM sync_reports
			WHERE $1 = '' OR outcome = $1
			ORDER BY id DESC
			LIMIT $2`, f.Outcome, limit)
		if err != nil {
			return fmt.Errorf("cannot list sync reports: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var r server.SyncReport
			if err := rows.Scan(&r.ID, &r.StartedAt, &r.EndedAt, &r.Outcome, &r.PatchesAdded, &r.Bytes, &r.Error, &r.Unit, &r.Source); err != nil {
				return fmt.Errorf("cannot list sync reports: %w", err)
			}
			r.StartedAt, r.EndedAt = utc(r.StartedAt), utc(r.EndedAt)
			reports = append(reports, r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list sync reports: %w", err)
		}
		return nil
	})
	return reports, err
}

// LastSyncList returns the generation time of the newest applied patch list of an
// upstream tier; zero when none was applied.
func (db *DB) LastSyncList(ctx context.Context, tier string) (time.Time, error) {
	var t time.Time
	err := db.db.QueryRowContext(ctx, `SELECT generated_at FROM sync_lists WHERE tier = $1`, tier).Scan(&t)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, classify(fmt.Errorf("cannot read the last patch list of tier %q: %w", tier, err))
	}
	return utc(t), nil
}

// RecordSyncList records the generation time of an applied patch list of an upstream
// tier, in one statement: an older time than the recorded one changes nothing.
func (db *DB) RecordSyncList(ctx context.Context, tier string, generatedAt time.Time) error {
	_, err := db.db.ExecContext(ctx, `
		INSERT INTO sync_lists AS l (tier, generated_at) VALUES ($1, $2)
		ON CONFLICT (tier) DO UPDATE SET generated_at = EXCLUDED.generated_at
		WHERE l.generated_at < EXCLUDED.generated_at`, tier, utc(generatedAt))
	if err != nil {
		return classify(fmt.Errorf("cannot record the patch list of tier %q: %w", tier, err))
	}
	return nil
}

// RecordSyncMachines upserts the machines a downstream deployment reported, in one
// statement, and forgets the machines of that deployment not reported for
// syncMachineRetention. When an id appears twice, the last report wins.
func (db *DB) RecordSyncMachines(ctx context.Context, deploymentID string, credential []byte, machines []server.SyncMachine, now time.Time) (err error) {
	defer classifyInto(&err)
	index := make(map[string]int, len(machines))
	var ids, tiers, seen, statuses []string
	for _, m := range machines {
		st, err := json.Marshal(m.Status)
		if err != nil {
			return fmt.Errorf("cannot encode status of machine %s: %w", m.ID, err)
		}
		lastSeen := ""
		if !m.LastSeen.IsZero() {
			lastSeen = m.LastSeen.UTC().Format(time.RFC3339Nano)
		}
		if i, ok := index[m.ID]; ok {
			tiers[i], seen[i], statuses[i] = m.Tier, lastSeen, string(st)
			continue
		}
		index[m.ID] = len(ids)
		ids, tiers, seen, statuses = append(ids, m.ID), append(tiers, m.Tier), append(seen, lastSeen), append(statuses, string(st))
	}
	if len(credential) == 0 {
		return server.Errorf(server.CodeInvalid, "the machine reports of deployment %q have no credential", deploymentID)
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		// The binding row is share-locked so that it cannot move to this credential's
		// rival between the check and the write.
		var bound bool
		err := tx.QueryRowContext(ctx, `
			SELECT EXISTS (SELECT 1 FROM sync_deployments d WHERE d.deployment_id = $1 AND `+boundElsewhere(2, 3)+` FOR SHARE)`,
			deploymentID, credential, now).Scan(&bound)
		if err != nil {
			return fmt.Errorf("cannot read deployment %q: %w", deploymentID, err)
		}
		if bound {
			return errDeploymentBound(deploymentID)
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO sync_machines (deployment_id, machine_id, tier, last_seen, status, reported_at)
			SELECT $1, u.id, u.tier, nullif(u.seen, '')::timestamptz, u.status::jsonb, $6
			FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, tier, seen, status)
			ON CONFLICT (deployment_id, machine_id) DO UPDATE
			SET tier = EXCLUDED.tier, last_seen = EXCLUDED.last_seen, status = EXCLUDED.status,
				reported_at = EXCLUDED.reported_at`,
			deploymentID, pq.Array(ids), pq.Array(tiers), pq.Array(seen), pq.Array(statuses), now)
		if err != nil {
			return fmt.Errorf("cannot record machines of deployment %q: %w", deploymentID, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sync_machines WHERE deployment_id = $1 AND reported_at < $2`,
			deploymentID, now.Add(-syncMachineRetention)); err != nil {
			return fmt.Errorf("cannot forget old machines of deployment %q: %w", deploymentID, err)
		}
		return nil
	})
}
