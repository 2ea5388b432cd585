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

var _ server.RolloutStore = (*DB)(nil)

// SetRolloutPolicy records a tier's policy, replacing any.
func (db *DB) SetRolloutPolicy(ctx context.Context, p server.RolloutPolicy) (err error) {
	defer classifyInto(&err)
	if err := p.Check(); err != nil {
		return err
	}
	timeout := time.Duration(p.ApplyTimeout)
	if timeout == 0 {
		timeout = server.DefaultApplyTimeout
	}
	tier := p.Tier
	p.Tier = ""
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("cannot encode rollout policy: %w", err)
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := findTier(ctx, tx, tier)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO rollout_policies (tier_id, policy, apply_timeout, updated_at)
			VALUES ($1, $2, make_interval(secs => $3), now())
			ON CONFLICT (tier_id) DO UPDATE SET policy = excluded.policy,
				apply_timeout = excluded.apply_timeout, updated_at = excluded.updated_at`,
			t.id, data, timeout.Seconds())
		if err != nil {
			return fmt.Errorf("cannot record rollout policy of tier %q: %w", tier, err)
		}
		return nil
	})
}

// DeleteRolloutPolicy forgets a tier's policy; not-found when it has none.
func (db *DB) DeleteRolloutPolicy(ctx context.Context, tier string) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := findTier(ctx, tx, tier)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM rollout_policies WHERE tier_id = $1`, t.id)
		if err != nil {
			return fmt.Errorf("cannot delete rollout policy of tier %q: %w", tier, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return server.Errorf(server.CodeNotFound, "tier %q has no rollout policy", tier)
		}
		return nil
	})
}

// RolloutPolicies lists every policy by tier.
func (db *DB) RolloutPolicies(ctx context.Context) (_ []server.RolloutPolicy, err error) {
	defer classifyInto(&err)
	var out []server.RolloutPolicy
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		out, err = listPolicies(ctx, tx, "")
		return err
	})
	return out, err
}

func listPolicies(ctx context.Context, tx *sql.Tx, tier string) ([]server.RolloutPolicy, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT t.name, p.policy FROM rollout_policies p JOIN tiers t ON t.id = p.tier_id
		WHERE $1 = '' OR t.name = $1 ORDER BY t.position`, tier)
	if err != nil {
		return nil, fmt.Errorf("cannot list rollout policies: %w", err)
	}
	defer rows.Close()
	var out []server.RolloutPolicy
	for rows.Next() {
		var name string
		var data []byte
		if err := rows.Scan(&name, &data); err != nil {
			return nil, fmt.Errorf("cannot list rollout policies: %w", err)
		}
		var p server.RolloutPolicy
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("cannot decode rollout policy of tier %q: %w", name, err)
		}
		p.Tier = name
		out = append(out, p)
	}
	return out, rows.Err()
}

// rolloutColumns are the columns scanRollout reads, of rollouts r joined to tiers t.
const rolloutColumns = `t.name, r.version, r.state, r.reason, r.started_at, r.canaries_done,
	r.claimed, r.period_start, r.period_claimed, r.halt_baseline, t.id`

func scanRollout(row interface{ Scan(...any) error }) (server.Rollout, int64, error) {
	var r server.Rollout
	var done, period pq.NullTime
	var tierID int64
	err := row.Scan(&r.Tier, &r.Version, &r.State, &r.Reason, &r.StartedAt, &done,
		&r.Claimed, &period, &r.PeriodClaimed, &r.HaltBaseline, &tierID)
	r.CanariesDone, r.PeriodStart = done.Time, period.Time
	return r, tierID, err
}

// Rollouts lists the rollouts, of tier when not empty, with their counts at now.
func (db *DB) Rollouts(ctx context.Context, tier string, now time.Time) (_ []server.Rollout, err error) {
	defer classifyInto(&err)
	var out []server.Rollout
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if tier != "" {
			if _, err := findTier(ctx, tx, tier); err != nil {
				return err
			}
		}
		out, err = listRollouts(ctx, tx, tier, now, `$1 = '' OR t.name = $1`, tier)
		return err
	})
	return out, err
}

// RolloutsOf lists the rollouts of refs that have started, with their counts at now.
func (db *DB) RolloutsOf(ctx context.Context, refs []server.RolloutRef, now time.Time) (_ []server.Rollout, err error) {
	defer classifyInto(&err)
	if len(refs) == 0 {
		return nil, nil
	}
	tiers, versions := make(pq.StringArray, len(refs)), make(pq.StringArray, len(refs))
	for i, r := range refs {
		tiers[i], versions[i] = r.Tier, r.Version
	}
	var out []server.Rollout
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		out, err = listRollouts(ctx, tx, "", now,
			`(t.name, r.version) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, tiers, versions)
		return err
	})
	return out, err
}

// listRollouts lists the rollouts of rollouts r joined to tiers t where where holds (with
// args), and counts them at now under the policies of tier (every tier when empty).
func listRollouts(ctx context.Context, tx *sql.Tx, tier string, now time.Time, where string, args ...any) ([]server.Rollout, error) {
	policies, err := listPolicies(ctx, tx, tier)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+rolloutColumns+`
		FROM rollouts r JOIN tiers t ON t.id = r.tier_id
		WHERE `+where+` ORDER BY t.position, r.started_at, r.version`, args...)
	if err != nil {
		return nil, fmt.Errorf("cannot list rollouts: %w", err)
	}
	var out []server.Rollout
	var ids []int64
	for rows.Next() {
		r, id, err := scanRollout(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("cannot list rollouts: %w", err)
		}
		out, ids = append(out, r), append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list rollouts: %w", err)
	}
	for i := range out {
		if err := countRollout(ctx, tx, ids[i], &out[i], policyOf(policies, out[i].Tier), now); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func policyOf(policies []server.RolloutPolicy, tier string) server.RolloutPolicy {
	for _, p := range policies {
		if p.Tier == tier {
			return p
		}
	}
	return server.RolloutPolicy{Tier: tier}
}

// rolloutMachinesSQL classifies the machines offered a rollout's patch ($1 tier id, $2
// version) at $3, with the apply timeout $4 (seconds), in offer order: applied when it
// runs the version; failed when it reported a failure after the offer; timed out when
// neither within the timeout; downloaded when it reported after the offer holding a
// verified patch it has not applied (unapplied). The machine's last report is what the
// check-in recorded: classifying costs the check-in nothing. Machines removed since are
// left out.
const rolloutMachinesSQL = `
	SELECT row_number() OVER (ORDER BY o.id) AS n, o.machine_id, o.offered_at,
		m.patch_state, m.patch_version, s.state
	FROM rollout_offers o JOIN machines m ON m.id = o.machine_id
	CROSS JOIN LATERAL (SELECT CASE
		WHEN m.patch_version = o.version AND m.patch_state = 'applied' THEN 'applied'
		WHEN m.patch_state IN ('apply-failed', 'check-failed') AND m.last_seen > o.offered_at THEN 'failed'
		WHEN o.offered_at < $3::timestamptz - make_interval(secs => $4) THEN 'timed-out'
		WHEN m.patch_state = 'unapplied' AND m.last_seen > o.offered_at THEN 'downloaded'
		ELSE 'offered' END AS state) s
	WHERE o.tier_id = $1 AND o.version = $2`

// countRollout fills r's counts: the tier's machines and the offered machines by state.
func countRollout(ctx context.Context, tx *sql.Tx, tierID int64, r *server.Rollout, p server.RolloutPolicy, now time.Time) error {
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM machines WHERE tier_id = $1`, tierID).Scan(&r.Machines); err != nil {
		return fmt.Errorf("cannot count machines of tier %q: %w", r.Tier, err)
	}
	target := p.CanaryCount(r.Machines)
	err := tx.QueryRowContext(ctx, `
		SELECT count(*), count(*) FILTER (WHERE state = 'downloaded'), count(*) FILTER (WHERE state = 'applied'),
			count(*) FILTER (WHERE state = 'failed'), count(*) FILTER (WHERE state = 'timed-out'),
			count(*) FILTER (WHERE n <= $5), count(*) FILTER (WHERE n <= $5 AND state = 'applied')
		FROM (`+rolloutMachinesSQL+`) x`, tierID, r.Version, now, applyTimeout(p).Seconds(), target).
		Scan(&r.Offered, &r.Downloaded, &r.Applied, &r.Failed, &r.TimedOut, &r.Canaries, &r.CanariesApplied)
	if err != nil {
		return fmt.Errorf("cannot count the rollout of %s in tier %q: %w", r.Version, r.Tier, err)
	}
	return nil
}

func applyTimeout(p server.RolloutPolicy) time.Duration {
	if p.ApplyTimeout > 0 {
		return time.Duration(p.ApplyTimeout)
	}
	return server.DefaultApplyTimeout
}

// maxRolloutMachines bounds a rollout's machine listing.
const maxRolloutMachines = 10000

// RolloutMachines lists the machines offered version in tier with their update state.
func (db *DB) RolloutMachines(ctx context.Context, tier, version string, now time.Time) (_ []server.RolloutMachine, err error) {
	defer classifyInto(&err)
	var out []server.RolloutMachine
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		r, id, err := findRollout(ctx, tx, tier, version, "")
		if err != nil {
			return err
		}
		policies, err := listPolicies(ctx, tx, tier)
		if err != nil {
			return err
		}
		p := policyOf(policies, tier)
		if err := countRollout(ctx, tx, id, &r, p, now); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, rolloutMachinesSQL+` ORDER BY n LIMIT $5`, id, version, now, applyTimeout(p).Seconds(), maxRolloutMachines)
		if err != nil {
			return fmt.Errorf("cannot list the machines of a rollout: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var m server.RolloutMachine
			var n int
			if err := rows.Scan(&n, &m.MachineID, &m.OfferedAt, &m.PatchState, &m.PatchVersion, &m.State); err != nil {
				return fmt.Errorf("cannot list the machines of a rollout: %w", err)
			}
			m.Canary = n <= r.Canaries
			out = append(out, m)
		}
		return rows.Err()
	})
	return out, err
}

// findRollout returns a rollout and its tier's id; not-found when it has not started.
func findRollout(ctx context.Context, tx *sql.Tx, tier, version, lock string) (server.Rollout, int64, error) {
	r, id, err := scanRollout(tx.QueryRowContext(ctx, `SELECT `+rolloutColumns+`
		FROM rollouts r JOIN tiers t ON t.id = r.tier_id WHERE t.name = $1 AND r.version = $2 `+lock, tier, version))
	if errors.Is(err, sql.ErrNoRows) {
		return r, 0, server.Errorf(server.CodeNotFound, "no rollout of %s in tier %q", version, tier)
	}
	if err != nil {
		return r, 0, fmt.Errorf("cannot read the rollout of %s in tier %q: %w", version, tier, err)
	}
	return r, id, nil
}

// startRollout creates a rollout that has not started, in state, and locks its row.
func startRollout(ctx context.Context, tx *sql.Tx, tier, version, state string, now time.Time) (server.Rollout, int64, error) {
	t, err := findTier(ctx, tx, tier)
	if err != nil {
		return server.Rollout{}, 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (tier_id, version, state, started_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, t.id, version, state, now); err != nil {
		return server.Rollout{}, 0, fmt.Errorf("cannot start the rollout of %s in tier %q: %w", version, tier, err)
	}
	return findRollout(ctx, tx, tier, version, "FOR UPDATE OF r")
}

// SetRolloutState pauses, resumes or halts a rollout, starting it when it has not.
func (db *DB) SetRolloutState(ctx context.Context, tier, version, state, reason string, now time.Time) (changed bool, err error) {
	defer classifyInto(&err)
	if err := server.CheckVersion(version); err != nil {
		return false, err
	}
	switch state {
	case server.RolloutActive, server.RolloutPaused, server.RolloutHalted:
	default:
		return false, server.Errorf(server.CodeInvalid, "invalid rollout state %q", state)
	}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		r, id, err := startRollout(ctx, tx, tier, version, state, now)
		if err != nil {
			return err
		}
		baseline := r.HaltBaseline
		if state == server.RolloutActive {
			policies, err := listPolicies(ctx, tx, tier)
			if err != nil {
				return err
			}
			if err := countRollout(ctx, tx, id, &r, policyOf(policies, tier), now); err != nil {
				return err
			}
			baseline = r.Failed + r.TimedOut
		}
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = $3, reason = $4, halt_baseline = $5
			WHERE tier_id = $1 AND version = $2 AND (state, reason) IS DISTINCT FROM ($3, $4)`, id, version, state, reason, baseline)
		if err != nil {
			return fmt.Errorf("cannot set the state of the rollout of %s in tier %q: %w", version, tier, err)
		}
		n, _ := res.RowsAffected()
		changed = n > 0 || r.State != state
		return nil
	})
	return changed, err
}

// HaltRollout halts the active rollout when p says it must, from its counts under its row
// lock; it returns the reason, "" when it did not halt it.
func (db *DB) HaltRollout(ctx context.Context, p server.RolloutPolicy, version string, now time.Time) (reason string, err error) {
	defer classifyInto(&err)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		reason = ""
		r, id, err := findRollout(ctx, tx, p.Tier, version, "FOR UPDATE OF r")
		if err != nil {
			return err
		}
		if err := countRollout(ctx, tx, id, &r, p, now); err != nil {
			return err
		}
		if reason = p.HaltReason(r); reason == "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = 'halted', reason = $3 WHERE tier_id = $1 AND version = $2`,
			id, version, reason); err != nil {
			return fmt.Errorf("cannot halt the rollout of %s in tier %q: %w", version, p.Tier, err)
		}
		return nil
	})
	return reason, err
}

// ClaimSlots grants offer slots under the rollout's row lock, so that units never
// together exceed what the policy allows.
func (db *DB) ClaimSlots(ctx context.Context, c server.SlotClaim, p server.RolloutPolicy, now time.Time) (granted int, err error) {
	defer classifyInto(&err)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		granted = 0
		r, id, err := startRollout(ctx, tx, c.Tier, c.Version, server.RolloutActive, now)
		if err != nil {
			return err
		}
		r.Claimed = max(0, r.Claimed-c.Unused)
		if err := countRollout(ctx, tx, id, &r, p, now); err != nil {
			return err
		}
		granted, r = p.Grant(r, c.Want, now)
		_, err = tx.ExecContext(ctx, `UPDATE rollouts SET claimed = $3, period_start = $4,
			period_claimed = $5, canaries_done = $6 WHERE tier_id = $1 AND version = $2`,
			id, c.Version, r.Claimed, nullTime(r.PeriodStart), r.PeriodClaimed, nullTime(r.CanariesDone))
		if err != nil {
			return fmt.Errorf("cannot claim offer slots of the rollout of %s in tier %q: %w", c.Version, c.Tier, err)
		}
		return nil
	})
	return granted, err
}

// RecordOffers records offers made; a machine offered twice keeps its first time.
func (db *DB) RecordOffers(ctx context.Context, tier, version string, offers []server.RolloutOffer) (err error) {
	defer classifyInto(&err)
	if len(offers) == 0 {
		return nil
	}
	ids, times := make(pq.StringArray, len(offers)), make([]time.Time, len(offers))
	for i, o := range offers {
		ids[i], times[i] = o.MachineID, o.OfferedAt
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO rollout_offers (tier_id, version, machine_id, offered_at)
			SELECT t.id, $2, o.machine_id, o.offered_at
			FROM tiers t, unnest($3::text[], $4::timestamptz[]) AS o (machine_id, offered_at)
			WHERE t.name = $1 ORDER BY o.offered_at
			ON CONFLICT DO NOTHING`, tier, version, ids, timestampArray(times, false))
		if err != nil {
			return fmt.Errorf("cannot record %d offers of %s in tier %q: %w", len(offers), version, tier, err)
		}
		return nil
	})
}

// OffersSince returns up to limit offers recorded after cursor, and the next cursor.
func (db *DB) OffersSince(ctx context.Context, cursor int64, limit int) (_ []server.RolloutOfferRecord, next int64, err error) {
	defer classifyInto(&err)
	next = cursor
	var out []server.RolloutOfferRecord
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT o.id, t.name, o.version, o.machine_id
			FROM rollout_offers o JOIN tiers t ON t.id = o.tier_id
			WHERE o.id > $1 ORDER BY o.id LIMIT $2`, cursor, limit)
		if err != nil {
			return fmt.Errorf("cannot load rollout offers: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var o server.RolloutOfferRecord
			if err := rows.Scan(&next, &o.Tier, &o.Version, &o.MachineID); err != nil {
				return fmt.Errorf("cannot load rollout offers: %w", err)
			}
			out = append(out, o)
		}
		return rows.Err()
	})
	return out, next, err
}

// RolloutOffers returns the machines offered version in tier, in offer order.
func (db *DB) RolloutOffers(ctx context.Context, tier, version string) (_ []string, err error) {
	defer classifyInto(&err)
	var out []string
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT o.machine_id FROM rollout_offers o JOIN tiers t ON t.id = o.tier_id
			WHERE t.name = $1 AND o.version = $2 ORDER BY o.id`, tier, version)
		if err != nil {
			return fmt.Errorf("cannot load the offers of %s in tier %q: %w", version, tier, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("cannot load the offers of %s in tier %q: %w", version, tier, err)
			}
			out = append(out, id)
		}
		return rows.Err()
	})
	return out, err
}
