package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Machine returns a machine with its newest changes.
func (db *DB) Machine(ctx context.Context, id string, historyLimit int) (_ server.MachineDetail, err error) {
	defer classifyInto(&err)
	var d server.MachineDetail
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		if d.Machine, err = findMachine(ctx, tx, id, ""); err != nil {
			return err
		}
		d.History, err = changes(ctx, tx, id, server.HistoryFilter{Limit: historyLimit})
		return err
	})
	return d, err
}

// findMachine reads one machine with its tier and token names; lock is a locking clause
// or empty.
func findMachine(ctx context.Context, tx *sql.Tx, id, lock string) (server.Machine, error) {
	m, err := scanMachine(tx.QueryRowContext(ctx, machineSelect+` WHERE m.id = $1 `+lock, id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return server.Machine{}, machineNotFound(id)
	}
	if err != nil {
		return server.Machine{}, fmt.Errorf("cannot read machine %q: %w", id, err)
	}
	return m, nil
}

// MachineHistory lists the changes of a machine, or every check-in with f.All.
func (db *DB) MachineHistory(ctx context.Context, id string, f server.HistoryFilter) (_ []server.MachineEvent, err error) {
	defer classifyInto(&err)
	if f.Limit < 1 {
		return nil, server.Errorf(server.CodeInvalid, "invalid history limit %d: want 1 or more", f.Limit)
	}
	var events []server.MachineEvent
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM machines WHERE id = $1`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return machineNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("cannot read machine %q: %w", id, err)
		}
		if f.All {
			events, err = checkIns(ctx, tx, id, f)
		} else {
			events, err = changes(ctx, tx, id, f)
		}
		return err
	})
	return events, err
}

// before returns the id cursor of f as a bound: every id when f.Before is 0.
func before(f server.HistoryFilter) int64 {
	if f.Before <= 0 {
		return 1<<63 - 1
	}
	return f.Before
}

// changes reads the compact history of a machine, newest first, through
// machine_changes_machine_id_idx.
func changes(ctx context.Context, tx *sql.Tx, id string, f server.HistoryFilter) ([]server.MachineEvent, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, changed_at, cause, tier, kernel, patch_state, patch_version
		FROM machine_changes WHERE machine_id = $1 AND id < $2
		ORDER BY changed_at DESC, id DESC LIMIT $3`, id, before(f), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("cannot read the history of machine %q: %w", id, err)
	}
	return scanEvents(rows, id, func(e *server.MachineEvent) []any {
		return []any{&e.ID, &e.Time, &e.Cause, &e.Tier, &e.Kernel, &e.PatchState, &e.PatchVersion}
	})
}

// checkIns reads every check-in of a machine still in the history, newest first, through
// machine_reports_machine_id_idx.
func checkIns(ctx context.Context, tx *sql.Tx, id string, f server.HistoryFilter) ([]server.MachineEvent, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, reported_at, kernel, patch_state, patch_version
		FROM machine_reports WHERE machine_id = $1 AND id < $2
		ORDER BY reported_at DESC, id DESC LIMIT $3`, id, before(f), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("cannot read the check-ins of machine %q: %w", id, err)
	}
	return scanEvents(rows, id, func(e *server.MachineEvent) []any {
		e.Cause = server.CauseCheckIn
		return []any{&e.ID, &e.Time, &e.Kernel, &e.PatchState, &e.PatchVersion}
	})
}

// scanEvents reads history rows into events; dest returns the fields a row fills.
func scanEvents(rows *sql.Rows, id string, dest func(*server.MachineEvent) []any) ([]server.MachineEvent, error) {
	defer rows.Close()
	var events []server.MachineEvent
	for rows.Next() {
		var e server.MachineEvent
		if err := rows.Scan(dest(&e)...); err != nil {
			return nil, fmt.Errorf("cannot read the history of machine %q: %w", id, err)
		}
		e.Time = utc(e.Time)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the history of machine %q: %w", id, err)
	}
	return events, nil
}

// MoveMachine moves one machine to a tier.
func (db *DB) MoveMachine(ctx context.Context, id, tier string, now time.Time) (_ server.Machine, err error) {
	defer classifyInto(&err)
	var m server.Machine
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := findTier(ctx, tx, tier, "FOR SHARE")
		if err != nil {
			return err
		}
		if m, err = findMachine(ctx, tx, id, "FOR UPDATE OF m"); err != nil {
			return err
		}
		if m.Tier == tier {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE machines SET tier_id = $2 WHERE id = $1`, id, t.id); err != nil {
			return fmt.Errorf("cannot move machine %q to tier %q: %w", id, tier, err)
		}
		m.Tier = tier
		return recordChange(ctx, tx, m, server.CauseMove, now)
	})
	return m, err
}

// moveBatchSQL moves the next batch of machines after the id $1 that the filter selects
// (its condition, with parameters from $4, and the parameter number of the time fill the
// verbs) to the tier id $2, at most $3 of them, recording each move, and returns how many
// moved and the greatest id among them.
const moveBatchSQL = `
	WITH b AS (
		SELECT m.id FROM machines m
		WHERE m.id > $1 AND m.tier_id <> $2 AND %s
		ORDER BY m.id LIMIT $3
		FOR UPDATE
	), u AS (
		UPDATE machines m SET tier_id = $2 FROM b WHERE m.id = b.id
		RETURNING m.id, m.kernel, m.patch_state, m.patch_version
	), ch AS (
		INSERT INTO machine_changes (machine_id, changed_at, cause, tier, kernel, patch_state, patch_version)
		SELECT u.id, $%d, 'move', t.name, u.kernel, u.patch_state, u.patch_version
		FROM u CROSS JOIN tiers t WHERE t.id = $2
	)
	SELECT count(*), coalesce(max(id), '') FROM u`

// MoveMachines moves the machines a filter selects, a batch per transaction, in id order.
func (db *DB) MoveMachines(ctx context.Context, mv server.MachineMove, now time.Time) (_ int, err error) {
	defer classifyInto(&err)
	if mv.Batch < 1 {
		return 0, server.Errorf(server.CodeInvalid, "invalid move batch %d: want 1 or more", mv.Batch)
	}
	total, after := 0, ""
	for {
		var n int
		err := db.inTx(ctx, func(tx *sql.Tx) error {
			t, err := findTier(ctx, tx, mv.Tier, "FOR SHARE")
			if err != nil {
				return err
			}
			where, args, err := machineWhere(ctx, tx, mv.Filter, []any{after, t.id, mv.Batch})
			if err != nil {
				return err
			}
			args = append(args, now)
			query := fmt.Sprintf(moveBatchSQL, where, len(args))
			var last string
			if err := tx.QueryRowContext(ctx, query, args...).Scan(&n, &last); err != nil {
				return fmt.Errorf("cannot move machines to tier %q: %w", mv.Tier, err)
			}
			if last != "" {
				after = last
			}
			return nil
		})
		total += n
		if err != nil {
			return total, err
		}
		if n < mv.Batch {
			return total, nil
		}
	}
}

// TagMachine sets and removes tags of a machine.
func (db *DB) TagMachine(ctx context.Context, id string, set map[string]string, remove []string) (_ server.Machine, err error) {
	defer classifyInto(&err)
	var m server.Machine
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if m, err = findMachine(ctx, tx, id, "FOR UPDATE OF m"); err != nil {
			return err
		}
		tags := maps.Clone(m.Tags)
		if tags == nil {
			tags = map[string]string{}
		}
		maps.Copy(tags, set)
		for _, k := range remove {
			delete(tags, k)
		}
		if len(tags) > server.MaxTags {
			return server.Errorf(server.CodeInvalid, "machine %q would have %d tags: at most %d", id, len(tags), server.MaxTags)
		}
		data, err := json.Marshal(tags)
		if err != nil {
			return fmt.Errorf("cannot encode tags: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE machines SET tags = $2 WHERE id = $1`, id, string(data)); err != nil {
			return fmt.Errorf("cannot tag machine %q: %w", id, err)
		}
		m.Tags = tags
		if len(m.Tags) == 0 {
			m.Tags = nil
		}
		return nil
	})
	return m, err
}

// staleWindow is how many heap blocks of machines one batch of RemoveStaleMachines reads
// (16 MB: 30,000 to 60,000 machines): the work of a batch stays bounded however few of the
// machines are stale. Tests set it smaller.
var staleWindow atomic.Int64

func init() { staleWindow.Store(2048) }

// RemoveStaleMachines removes a batch of machines not seen since before: at most limit of
// those in the window of blocks at cursor, which it reads in heap order (a TID range
// scan: last_seen has no index, so that a check-in stays a HOT update). It returns the
// cursor of the next batch: the same window while the batch found limit stale machines
// in it, the next window otherwise, and "" once it read the last one. So a pass over the
// fleet reads each block about once, where a scan from the start at every batch would
// read the machines kept again and again. Rows another transaction holds (a check-in)
// are skipped, so the job never waits on the fleet; a stale machine whose row an update
// moved behind the cursor waits for the next pass. Rows are deleted by the row address the
// lock returned (a TID scan, no index probe per machine): a row updated meanwhile fails
// the recheck and stays.
func (db *DB) RemoveStaleMachines(ctx context.Context, before time.Time, cursor string, limit int) (_ int, _ string, err error) {
	defer classifyInto(&err)
	if limit <= 0 {
		return 0, "", server.Errorf(server.CodeInvalid, "invalid stale machine limit %d: want 1 or more", limit)
	}
	var from int64
	if cursor != "" {
		if from, err = strconv.ParseInt(cursor, 10, 64); err != nil || from < 0 {
			return 0, "", server.Errorf(server.CodeInvalid, "invalid stale machine cursor %q", cursor)
		}
	}
	var n int
	var blocks int64
	window := staleWindow.Load()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `
			WITH s AS MATERIALIZED (
				SELECT ctid AS addr FROM machines
				WHERE ctid >= format('(%s,0)', $3::bigint)::tid AND ctid < format('(%s,0)', $4::bigint)::tid
					AND coalesce(last_seen, enabled_at) < $1
				LIMIT $2 FOR UPDATE SKIP LOCKED
			), d AS (
				DELETE FROM machines WHERE ctid = ANY(ARRAY(SELECT addr FROM s)) RETURNING id
			), c AS (
				DELETE FROM machine_changes WHERE machine_id = ANY(ARRAY(SELECT id FROM d))
			)
			SELECT count(*), pg_relation_size('machines') / current_setting('block_size')::bigint FROM d`,
			before, limit, from, from+window).Scan(&n, &blocks)
		if err != nil {
			return fmt.Errorf("cannot remove stale machines: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	switch {
	case n >= limit:
		return n, strconv.FormatInt(from, 10), nil
	case from+window < blocks:
		return n, strconv.FormatInt(from+window, 10), nil
	}
	return n, "", nil
}

// FleetCounts counts the machines by tier, patch state and kernel with one scan of
// machines (GROUPING SETS): at 1,000,000 machines a few hundred milliseconds, which is why
// the API caches the answer rather than asking per scrape.
func (db *DB) FleetCounts(ctx context.Context, topKernels int) (_ server.FleetCounts, err error) {
	defer classifyInto(&err)
	c := server.FleetCounts{ByTier: map[string]int{}, ByState: map[string]int{}, ByKernel: map[string]int{}}
	type kernelCount struct {
		name string
		n    int
	}
	var kernels []kernelCount
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT t.name, m.patch_state, m.kernel, grouping(t.name, m.patch_state, m.kernel), count(*)
			FROM machines m JOIN tiers t ON t.id = m.tier_id
			GROUP BY GROUPING SETS ((t.name), (m.patch_state), (m.kernel))`)
		if err != nil {
			return fmt.Errorf("cannot count machines: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var tier, state, kernel sql.NullString
			var set, n int
			if err := rows.Scan(&tier, &state, &kernel, &set, &n); err != nil {
				return fmt.Errorf("cannot count machines: %w", err)
			}
			// grouping() has a bit set for each column not grouped: 0b011 is the tier
			// set, 0b101 the state set, 0b110 the kernel set.
			switch set {
			case 0b011:
				c.ByTier[tier.String] = n
			case 0b101:
				c.ByState[cmp.Or(state.String, server.NotReported)] = n
			case 0b110:
				kernels = append(kernels, kernelCount{cmp.Or(kernel.String, server.NotReported), n})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return server.FleetCounts{}, err
	}
	slices.SortFunc(kernels, func(a, b kernelCount) int {
		return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.name, b.name))
	})
	for i, k := range kernels {
		if i < topKernels {
			c.ByKernel[k.name] = k.n
		} else {
			c.ByKernel[server.OtherKernels] += k.n
		}
	}
	return c, nil
}
