package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Enable enrols a machine with an auth token, or re-enrols it with a new token and tier.
func (db *DB) Enable(ctx context.Context, e server.Enrolment, now time.Time) (_ server.Machine, err error) {
	defer classifyInto(&err)
	var m server.Machine
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		m, err = enable(ctx, tx, e, now)
		return err
	})
	return m, err
}

// authTokenRow is what Enable needs of an auth token.
type authTokenRow struct {
	id          int64
	label       string
	tierID      sql.NullInt64
	tier        string
	expiresAt   sql.NullTime
	maxMachines int
	revoked     bool
}

func enable(ctx context.Context, tx *sql.Tx, e server.Enrolment, now time.Time) (server.Machine, error) {
	tok, err := findAuthToken(ctx, tx, e.AuthTokenHash, "")
	if err != nil {
		return server.Machine{}, err
	}
	if tok.maxMachines > 0 {
		// Lock the token so that concurrent enables count each other's machines.
		if tok, err = findAuthToken(ctx, tx, e.AuthTokenHash, "FOR UPDATE OF a"); err != nil {
			return server.Machine{}, err
		}
	}
	switch {
	case tok.revoked:
		return server.Machine{}, server.Errorf(server.CodeUnauthorized, "auth token has been revoked")
	case tok.expiresAt.Valid && !now.Before(tok.expiresAt.Time):
		return server.Machine{}, server.Errorf(server.CodeUnauthorized, "auth token has expired")
	case !tok.tierID.Valid:
		return server.Machine{}, server.Errorf(server.CodeUnauthorized, "auth token has no tier")
	}
	if tok.maxMachines > 0 {
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM machines WHERE auth_token_id = $1 AND id <> $2`, tok.id, e.MachineID).Scan(&others); err != nil {
			return server.Machine{}, fmt.Errorf("cannot count machines of auth token %q: %w", tok.label, err)
		}
		if others >= tok.maxMachines {
			return server.Machine{}, server.Errorf(server.CodeForbidden, "auth token %q has reached its limit of %d machines", tok.label, tok.maxMachines)
		}
	}
	row := tx.QueryRowContext(ctx, `
		INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, first_seen)
		VALUES ($1, $2, $3, $4, $5, $5)
		ON CONFLICT (id) DO UPDATE SET tier_id = EXCLUDED.tier_id, auth_token_id = EXCLUDED.auth_token_id,
			machine_token_hash = EXCLUDED.machine_token_hash, enabled_at = EXCLUDED.enabled_at
		WHERE machines.machine_token_hash = $6
		RETURNING `+machineColumns(""), e.MachineID, tok.tierID, tok.id, e.MachineTokenHash, now, e.CurrentTokenHash)
	m, err := scanMachine(row, false)
	if errors.Is(err, sql.ErrNoRows) {
		// The id is enrolled and the caller did not prove it is that machine.
		return server.Machine{}, server.Errorf(server.CodeConflict,
			"machine %q is enabled already and this request does not hold its machine token: "+
				"only that machine can enable it again; if it lost its token, an administrator removes it "+
				"(livepatch-admin machines remove %s) and it enables as a new machine", e.MachineID, e.MachineID)
	}
	if isForeignKey(err, "machines_tier_id_fkey") {
		return server.Machine{}, server.Errorf(server.CodeConflict, "the tier of auth token %q is being deleted", tok.label)
	}
	if err != nil {
		return server.Machine{}, fmt.Errorf("cannot enrol machine %q: %w", e.MachineID, err)
	}
	m.Tier, m.TokenID = tok.tier, tok.label
	if err := recordChange(ctx, tx, m, server.CauseEnable, now); err != nil {
		return server.Machine{}, err
	}
	return m, nil
}

// recordChange appends a row of m's compact history.
func recordChange(ctx context.Context, tx *sql.Tx, m server.Machine, cause string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO machine_changes (machine_id, changed_at, cause, tier, kernel, patch_state, patch_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, m.ID, now, cause, m.Tier, m.Kernel, m.PatchState, m.PatchVersion)
	if err != nil {
		return fmt.Errorf("cannot record the history of machine %q: %w", m.ID, err)
	}
	return nil
}

// findAuthToken finds an auth token by hash; unauthorized when there is none. lock is a
// locking clause or empty.
func findAuthToken(ctx context.Context, tx *sql.Tx, hash []byte, lock string) (authTokenRow, error) {
	var a authTokenRow
	err := tx.QueryRowContext(ctx, `
		SELECT a.id, a.label, a.tier_id, coalesce(t.name, ''), a.expires_at, a.max_machines, a.revoked_at IS NOT NULL
		FROM auth_tokens a LEFT JOIN tiers t ON t.id = a.tier_id
		WHERE a.token_hash = $1 `+lock, hash).
		Scan(&a.id, &a.label, &a.tierID, &a.tier, &a.expiresAt, &a.maxMachines, &a.revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return authTokenRow{}, server.Errorf(server.CodeUnauthorized, "invalid auth token")
	}
	if err != nil {
		return authTokenRow{}, fmt.Errorf("cannot find auth token: %w", err)
	}
	return a, nil
}

// RemoveMachine unregisters a machine whatever its token.
func (db *DB) RemoveMachine(ctx context.Context, machineID string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `DELETE FROM machines WHERE id = $1`, machineID)
		if err != nil {
			return fmt.Errorf("cannot remove machine %q: %w", machineID, err)
		}
		if n == 0 {
			return machineNotFound(machineID)
		}
		return forgetChanges(ctx, tx, machineID)
	})
}

// Disable unregisters a machine whose id and token hash match.
func (db *DB) Disable(ctx context.Context, machineID string, machineTokenHash []byte) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `DELETE FROM machines WHERE id = $1 AND machine_token_hash = $2`, machineID, machineTokenHash)
		if err != nil {
			return fmt.Errorf("cannot disable machine %q: %w", machineID, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeUnauthorized, "unknown machine or invalid machine token")
		}
		return forgetChanges(ctx, tx, machineID)
	})
}

// forgetChanges deletes the compact history of a machine that is no longer enrolled: if
// it enrols again, its history starts anew. Its check-ins stay until report retention.
func forgetChanges(ctx context.Context, tx *sql.Tx, machineID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM machine_changes WHERE machine_id = $1`, machineID); err != nil {
		return fmt.Errorf("cannot delete the history of machine %q: %w", machineID, err)
	}
	return nil
}

// machineNotFound is the error for an unknown machine id.
func machineNotFound(id string) error {
	return server.Errorf(server.CodeNotFound, "machine %q not found", id)
}

// CheckMachineToken checks that a machine exists with this token hash, in one indexed read.
func (db *DB) CheckMachineToken(ctx context.Context, machineID string, machineTokenHash []byte) (err error) {
	defer classifyInto(&err)
	var one int
	err = db.db.QueryRowContext(ctx, `SELECT 1 FROM machines WHERE id = $1 AND machine_token_hash = $2`, machineID, machineTokenHash).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return errUnknownMachine
	}
	if err != nil {
		return fmt.Errorf("cannot check the token of machine %q: %w", machineID, err)
	}
	return nil
}

// machineColumns returns the columns of machines that scanMachine reads, without the tier
// and token names, qualified by prefix ("m." or "").
func machineColumns(prefix string) string {
	cols := []string{"id", "enabled_at", "coalesce(first_seen, enabled_at)", "last_seen", "state_since",
		"kernel", "architecture", "cpu_model", "boot_time", "uptime", "client_version", "patch_state",
		"patch_version", "hostname", "cloud", "region", "zone", "tags"}
	for i, c := range cols {
		if strings.HasPrefix(c, "coalesce(") {
			cols[i] = "coalesce(" + prefix + "first_seen, " + prefix + "enabled_at)"
			continue
		}
		cols[i] = prefix + c
	}
	return strings.Join(cols, ", ")
}

// machineSelect selects machines m with their tier and token names, for scanMachine
// with names.
var machineSelect = `SELECT ` + machineColumns("m.") + `, t.name, a.label
	FROM machines m
	JOIN tiers t ON t.id = m.tier_id
	JOIN auth_tokens a ON a.id = m.auth_token_id`

// Machines lists machines matching f in id order, at most f.Limit of them after f.After.
func (db *DB) Machines(ctx context.Context, f server.MachineFilter) (_ []server.Machine, err error) {
	defer classifyInto(&err)
	var machines []server.Machine
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		where, args, err := machineWhere(ctx, tx, f, nil)
		if err != nil {
			return err
		}
		args = append(args, f.After)
		query := machineSelect + ` WHERE ` + where + fmt.Sprintf(` AND m.id > $%d ORDER BY m.id`, len(args))
		if f.Limit > 0 {
			args = append(args, f.Limit)
			query += fmt.Sprintf(` LIMIT $%d`, len(args))
		}
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("cannot list machines: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			m, err := scanMachine(rows, true)
			if err != nil {
				return fmt.Errorf("cannot list machines: %w", err)
			}
			machines = append(machines, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list machines: %w", err)
		}
		return nil
	})
	return machines, err
}

// machineWhere returns the condition on machines m that selects the machines of f (its
// After and Limit aside), and args with its parameters appended: they are numbered after
// those already in args. An unknown tier is not-found.
func machineWhere(ctx context.Context, tx *sql.Tx, f server.MachineFilter, args []any) (string, []any, error) {
	conds := []string{"true"}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if f.Tier != "" {
		t, err := findTier(ctx, tx, f.Tier)
		if err != nil {
			return "", nil, err
		}
		add("m.tier_id = $?", t.id)
	}
	if f.PatchVersion != "" {
		add("m.patch_version = $?", f.PatchVersion)
	}
	if f.PatchState != "" {
		add("m.patch_state = $?", f.PatchState)
	}
	if f.Kernel != "" {
		add("m.kernel = $?", f.Kernel)
	}
	if f.Hostname != "" {
		add("m.hostname = $?", f.Hostname)
	}
	if len(f.Tags) > 0 {
		tags, err := json.Marshal(f.Tags)
		if err != nil {
			return "", nil, fmt.Errorf("cannot encode tags: %w", err)
		}
		add("m.tags @> $?::jsonb", string(tags))
	}
	// last_seen has no index (a check-in stays a HOT update): these filter the rows the
	// other conditions and the id order select.
	if !f.SeenBefore.IsZero() {
		add("(m.last_seen IS NULL OR m.last_seen < $?)", f.SeenBefore)
	}
	if !f.SeenAfter.IsZero() {
		add("m.last_seen >= $?", f.SeenAfter)
	}
	return strings.Join(conds, " AND "), args, nil
}

// scanMachine reads machineColumns, followed by the tier and token names when names is
// set.
func scanMachine(row interface{ Scan(...any) error }, names bool) (server.Machine, error) {
	var m server.Machine
	var lastSeen, stateSince, bootTime sql.NullTime
	var tags []byte
	dest := []any{&m.ID, &m.EnabledAt, &m.FirstSeen, &lastSeen, &stateSince, &m.Kernel, &m.Architecture,
		&m.CPUModel, &bootTime, &m.Uptime, &m.ClientVersion, &m.PatchState, &m.PatchVersion,
		&m.Hostname, &m.Cloud.Name, &m.Cloud.Region, &m.Cloud.Zone, &tags}
	if names {
		dest = append(dest, &m.Tier, &m.TokenID)
	}
	if err := row.Scan(dest...); err != nil {
		return server.Machine{}, err
	}
	m.EnabledAt, m.FirstSeen = utc(m.EnabledAt), utc(m.FirstSeen)
	if lastSeen.Valid {
		m.LastSeen = utc(lastSeen.Time)
	}
	if stateSince.Valid {
		m.StateSince = utc(stateSince.Time)
	}
	if bootTime.Valid {
		m.BootTime = utc(bootTime.Time)
	}
	if err := json.Unmarshal(tags, &m.Tags); err != nil {
		return server.Machine{}, fmt.Errorf("cannot decode the tags of machine %q: %w", m.ID, err)
	}
	if len(m.Tags) == 0 {
		m.Tags = nil
	}
	return m, nil
}

// PatchHealth counts the machines of tier running version, per patch state.
func (db *DB) PatchHealth(ctx context.Context, tier, version string) (_ map[string]int, err error) {
	defer classifyInto(&err)
	counts := make(map[string]int)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := findTier(ctx, tx, tier)
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `
			SELECT patch_state, count(*) FROM machines
			WHERE tier_id = $1 AND patch_version = $2
			GROUP BY patch_state`, t.id, version)
		if err != nil {
			return fmt.Errorf("cannot count patch states: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var state string
			var n int
			if err := rows.Scan(&state, &n); err != nil {
				return fmt.Errorf("cannot count patch states: %w", err)
			}
			counts[state] = n
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot count patch states: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// Kernels counts machines per kernel and architecture, most used first. Machines that
// have not reported yet are left out.
func (db *DB) Kernels(ctx context.Context) (_ []server.KernelCount, err error) {
	defer classifyInto(&err)
	var kernels []server.KernelCount
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT kernel, architecture, count(*) FROM machines
			WHERE kernel <> ''
			GROUP BY kernel, architecture
			ORDER BY count(*) DESC, kernel, architecture`)
		if err != nil {
			return fmt.Errorf("cannot count kernels: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k server.KernelCount
			if err := rows.Scan(&k.Kernel, &k.Architecture, &k.Machines); err != nil {
				return fmt.Errorf("cannot count kernels: %w", err)
			}
			kernels = append(kernels, k)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot count kernels: %w", err)
		}
		return nil
	})
	return kernels, err
}

// CleanupReports deletes at most limit history rows reported before before, so that each
// call is a short transaction however much history has piled up.
func (db *DB) CleanupReports(ctx context.Context, before time.Time, limit int) (_ int, err error) {
	defer classifyInto(&err)
	if limit <= 0 {
		return 0, server.Errorf(server.CodeInvalid, "invalid cleanup row limit %d: want 1 or more", limit)
	}
	var n int
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		n, err = execCount(ctx, tx, `
			DELETE FROM machine_reports WHERE id IN (
				SELECT id FROM machine_reports WHERE reported_at < $1 LIMIT $2
			)`, before, limit)
		if err != nil {
			return fmt.Errorf("cannot delete machine reports: %w", err)
		}
		changes, err := execCount(ctx, tx, `
			DELETE FROM machine_changes WHERE id IN (
				SELECT id FROM machine_changes WHERE changed_at < $1 LIMIT $2
			)`, before, limit)
		if err != nil {
			return fmt.Errorf("cannot delete machine changes: %w", err)
		}
		n += changes
		return nil
	})
	return n, err
}
