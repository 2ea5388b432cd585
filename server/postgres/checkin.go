package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/server"
)

// Check-ins are recorded in batches: while checkInBatches statements are running, the
// check-ins that arrive wait, and the next free statement records up to checkInBatchMax of
// them at once. A lone check-in runs at once with a statement of its own, so batching adds
// no wait; under load, one statement, one round trip and one commit serve many check-ins,
// which costs PostgreSQL and the server a fraction of the CPU per check-in.
const (
	// checkInBatches bounds the check-in statements running at once, per unit.
	checkInBatches = 2
	// checkInBatchMax bounds the check-ins one statement records.
	checkInBatchMax = 64
)

// checkInSQL records a check-in in one statement: update the machine whose id and token
// hash match, append the history row, and return the machine's tier. It also sets the
// statement's commit durability (Options.SynchronousCheckIns).
const checkInSQL = `
	WITH m AS (
		UPDATE machines SET last_seen = $3, kernel = $4, architecture = $5, cpu_model = $6,
			boot_time = $7, uptime = $8, client_version = $9, patch_state = $10, patch_version = $11,
			hostname = $13, cloud = $14, region = $15, zone = $16,
			-- The right-hand sides read the row before the update.
			state_since = CASE WHEN machines.state_since IS NULL
				OR (machines.kernel, machines.patch_state, machines.patch_version) IS DISTINCT FROM ($4, $10, $11)
				THEN $3 ELSE machines.state_since END
		WHERE id = $1 AND machine_token_hash = $2
		RETURNING id, tier_id, last_seen, kernel, architecture, cpu_model, boot_time, uptime,
			client_version, patch_state, patch_version, state_since
	)` + checkInReportsSQL + `
	SELECT mt.tier FROM mt CROSS JOIN durability`

// checkInReportsSQL follows the updated machines m of both check-in statements: it looks up
// their tiers' names once (mt: for the answer and the compact history), appends their
// history rows and sets the commit durability of the statement from $12.
const checkInReportsSQL = `, mt AS (
		SELECT m.id, m.last_seen, m.state_since, m.kernel, m.patch_state, m.patch_version,
			t.name AS tier
		FROM m JOIN tiers t ON t.id = m.tier_id
	), r AS (
		INSERT INTO machine_reports (machine_id, reported_at, kernel, architecture, cpu_model,
			boot_time, uptime, client_version, patch_state, patch_version)
		SELECT id, last_seen, kernel, architecture, cpu_model, boot_time, uptime,
			client_version, patch_state, patch_version
		FROM m
	), ch AS (
		-- The compact history: a row when the check-in changed the state (migration 0010).
		INSERT INTO machine_changes (machine_id, changed_at, cause, tier, kernel, patch_state, patch_version)
		SELECT id, last_seen, 'check-in', tier, kernel, patch_state, patch_version
		FROM mt WHERE state_since = last_seen
	), durability AS (
		-- Local to this statement's transaction: when $12 is 'off' the check-ins are
		-- acknowledged before their WAL reaches disk (group commit without the wait).
		SELECT set_config('synchronous_commit', $12, true)
	)`

// checkInBatchSQL is checkInSQL for many machines: parameters 1-11 are arrays of the same
// length, one element per check-in, whose machine ids are distinct. It returns the id and
// tier of every machine whose id and token hash matched.
const checkInBatchSQL = `
	WITH c AS (
		SELECT * FROM unnest($1::text[], $2::bytea[], $3::timestamptz[], $4::text[], $5::text[],
			$6::text[], $7::timestamptz[], $8::bigint[], $9::text[], $10::text[], $11::text[],
			$13::text[], $14::text[], $15::text[], $16::text[])
			AS c (id, token_hash, reported_at, kernel, architecture, cpu_model, boot_time, uptime,
				client_version, patch_state, patch_version, hostname, cloud, region, zone)
	), m AS (
		UPDATE machines SET last_seen = c.reported_at, kernel = c.kernel,
			architecture = c.architecture, cpu_model = c.cpu_model, boot_time = c.boot_time,
			uptime = c.uptime, client_version = c.client_version, patch_state = c.patch_state,
			patch_version = c.patch_version, hostname = c.hostname, cloud = c.cloud,
			region = c.region, zone = c.zone,
			state_since = CASE WHEN machines.state_since IS NULL
				OR (machines.kernel, machines.patch_state, machines.patch_version)
					IS DISTINCT FROM (c.kernel, c.patch_state, c.patch_version)
				THEN c.reported_at ELSE machines.state_since END
		FROM c
		WHERE machines.id = c.id AND machines.machine_token_hash = c.token_hash
		RETURNING machines.id, machines.tier_id, machines.last_seen, machines.kernel,
			machines.architecture, machines.cpu_model, machines.boot_time, machines.uptime,
			machines.client_version, machines.patch_state, machines.patch_version,
			machines.state_since
	)` + checkInReportsSQL + `
	SELECT mt.id, mt.tier FROM mt CROSS JOIN durability`

// errUnknownMachine is the answer to a check-in whose machine id and token do not match.
var errUnknownMachine = server.Errorf(server.CodeUnauthorized, "unknown machine or invalid machine token")

// CheckIn records a status report with one statement, one round trip, shared with the
// check-ins that arrive while others are being recorded (see checkInBatches).
func (db *DB) CheckIn(ctx context.Context, c server.CheckIn, now time.Time) (_ string, err error) {
	defer classifyInto(&err)
	call := &checkInCall{ctx: ctx, in: c, now: now, wake: make(chan []*checkInCall, 1)}
	batch := db.queue.join(call)
	if batch == nil {
		select {
		case batch = <-call.wake:
		case <-ctx.Done():
			if db.queue.leave(call) {
				return "", classify(fmt.Errorf("cannot record check-in of machine %q: %w", c.MachineID, ctx.Err()))
			}
			// A batch holds it already; that takes a round trip.
			batch = <-call.wake
		}
	}
	if batch != nil {
		db.recordBatch(batch)
	}
	if call.alone {
		return db.checkInOne(ctx, c, now)
	}
	return call.tier, call.err
}

// checkInCall is one check-in waiting for a batch, or leading one.
type checkInCall struct {
	ctx context.Context
	in  server.CheckIn
	now time.Time

	// Set by the batch that holds the call, before it sends nil on wake.
	tier string
	err  error
	// alone says that the batch failed for a reason that may be another check-in's (a value
	// the database refused, a deadlock): the call records its check-in by itself.
	alone bool

	// wake receives once: the batch that this call is to record (it comes first in it), or
	// nil when a batch led by another call has set the outcome.
	wake chan []*checkInCall
}

// checkInQueue holds the check-ins waiting for a batch.
type checkInQueue struct {
	mu      sync.Mutex
	pending []*checkInCall // not empty only while checkInBatches batches are running
	running int
}

// join returns a batch of call alone when a batch may start now; otherwise it queues call
// and returns nil.
func (q *checkInQueue) join(call *checkInCall) []*checkInCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running < checkInBatches {
		q.running++
		return []*checkInCall{call}
	}
	q.pending = append(q.pending, call)
	return nil
}

// leave removes a waiting call from the queue, reporting whether it was still there.
func (q *checkInQueue) leave(call *checkInCall) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.pending, call)
	if i < 0 {
		return false
	}
	q.pending = slices.Delete(q.pending, i, i+1)
	return true
}

// done ends a batch: it hands the next batch to the first waiting call, or frees the slot.
func (q *checkInQueue) done() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		q.running--
		return
	}
	next := q.take()
	next[0].wake <- next
}

// take removes the next batch from the queue, in arrival order: up to checkInBatchMax
// calls, of distinct machines (a later report of a machine waits for the next batch).
func (q *checkInQueue) take() []*checkInCall {
	batch := make([]*checkInCall, 0, min(len(q.pending), checkInBatchMax))
	rest := q.pending[:0]
	for _, call := range q.pending {
		if len(batch) == checkInBatchMax || slices.ContainsFunc(batch, func(b *checkInCall) bool {
			return b.in.MachineID == call.in.MachineID
		}) {
			rest = append(rest, call)
			continue
		}
		batch = append(batch, call)
	}
	clear(q.pending[len(rest):])
	q.pending = rest
	return batch
}

// errBatchPanicked is the outcome of the check-ins of a batch whose recording panicked.
var errBatchPanicked = errors.New("recording a batch of check-ins panicked")

// recordBatch records the check-ins of batch, whose first call leads it, sets the outcome
// of each, wakes the others and ends the batch (even if it panics, so that the waiting
// check-ins and the next ones go on).
func (db *DB) recordBatch(batch []*checkInCall) {
	defer db.queue.done()
	leader := batch[0]
	if len(batch) == 1 {
		leader.tier, leader.err = db.checkInOne(leader.ctx, leader.in, leader.now)
		return
	}
	var tiers map[string]string
	err := errBatchPanicked
	defer func() { deliver(batch, leader, tiers, err) }()
	ctx, stop := batchContext(batch)
	defer stop()
	tiers, err = db.checkInMany(ctx, batch)
}

// deliver sets the outcome of each call of batch from the tiers the batch statement
// returned or its error, and wakes every call but the leader.
func deliver(batch []*checkInCall, leader *checkInCall, tiers map[string]string, err error) {
	unavailable := server.ErrorCode(err) == server.CodeUnavailable
	for _, call := range batch {
		switch tier, ok := tiers[call.in.MachineID]; {
		case err == nil && ok:
			call.tier = tier
		case err == nil:
			call.err = errUnknownMachine
		case unavailable:
			call.err = err
		default:
			call.alone = true
		}
		if call != leader {
			call.wake <- nil
		}
	}
}

// batchContext returns the context a batch runs with: the first call's values, canceled
// once every call's context is done (the machines' requests all ended), as a lone
// check-in's statement is.
func batchContext(batch []*checkInCall) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, call := range batch {
		stops[i] = context.AfterFunc(call.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// checkInOne records one check-in with checkInSQL.
func (db *DB) checkInOne(ctx context.Context, c server.CheckIn, now time.Time) (string, error) {
	stmt, err := db.prepared(ctx, &db.checkIn, checkInSQL)
	if err != nil {
		return "", err
	}
	s := c.Status
	var tier string
	err = stmt.QueryRowContext(ctx, c.MachineID, c.MachineTokenHash, now, s.Kernel, s.Architecture,
		s.CPUModel, nullTime(s.BootTime), s.Uptime, s.ClientVersion, s.PatchState, s.PatchVersion, db.checkInCommit,
		s.Hostname, s.Cloud.Name, s.Cloud.Region, s.Cloud.Zone).Scan(&tier)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errUnknownMachine
	}
	if err != nil {
		return "", classify(fmt.Errorf("cannot record check-in of machine %q: %w", c.MachineID, err))
	}
	return tier, nil
}

// checkInMany records the check-ins of batch, of distinct machines, with checkInBatchSQL
// and returns the tiers of the machines whose id and token matched, by machine id. It
// sorts batch by machine id, so that concurrent batches lock machines in the same order.
func (db *DB) checkInMany(ctx context.Context, batch []*checkInCall) (map[string]string, error) {
	stmt, err := db.prepared(ctx, &db.checkInBatch, checkInBatchSQL)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(batch, func(a, b *checkInCall) int { return strings.Compare(a.in.MachineID, b.in.MachineID) })
	n := len(batch)
	ids, kernels, archs, cpus := make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
	clients, states, versions := make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
	hosts, clouds, regions, zones := make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
	hashes, uptimes := make(pq.ByteaArray, n), make(pq.Int64Array, n)
	nows, boots := make([]time.Time, n), make([]time.Time, n)
	for i, call := range batch {
		s := call.in.Status
		ids[i], hashes[i], nows[i] = call.in.MachineID, call.in.MachineTokenHash, call.now
		kernels[i], archs[i], cpus[i], boots[i], uptimes[i] = s.Kernel, s.Architecture, s.CPUModel, s.BootTime, s.Uptime
		clients[i], states[i], versions[i] = s.ClientVersion, s.PatchState, s.PatchVersion
		hosts[i], clouds[i], regions[i], zones[i] = s.Hostname, s.Cloud.Name, s.Cloud.Region, s.Cloud.Zone
	}
	rows, err := stmt.QueryContext(ctx, ids, hashes, timestampArray(nows, false), kernels, archs, cpus,
		timestampArray(boots, true), uptimes, clients, states, versions, db.checkInCommit,
		hosts, clouds, regions, zones)
	if err != nil {
		return nil, classify(fmt.Errorf("cannot record check-ins of %d machines: %w", n, err))
	}
	defer rows.Close()
	tiers := make(map[string]string, n)
	for rows.Next() {
		var id, tier string
		if err := rows.Scan(&id, &tier); err != nil {
			return nil, classify(fmt.Errorf("cannot record check-ins of %d machines: %w", n, err))
		}
		tiers[id] = tier
	}
	if err := rows.Err(); err != nil {
		return nil, classify(fmt.Errorf("cannot record check-ins of %d machines: %w", n, err))
	}
	return tiers, nil
}

// timestampArray returns the PostgreSQL array literal of ts, as lib/pq formats a time
// parameter; with nullZero, the zero time is NULL.
func timestampArray(ts []time.Time, nullZero bool) string {
	b := make([]byte, 0, 2+len(ts)*40)
	b = append(b, '{')
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		if nullZero && t.IsZero() {
			b = append(b, "NULL"...)
			continue
		}
		b = append(b, '"')
		b = append(b, pq.FormatTimestamp(t)...)
		b = append(b, '"')
	}
	return string(append(b, '}'))
}

// prepared returns the statement *stmt, preparing query on first use.
func (db *DB) prepared(ctx context.Context, stmt **sql.Stmt, query string) (*sql.Stmt, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if *stmt == nil {
		s, err := db.db.PrepareContext(ctx, query)
		if err != nil {
			return nil, classify(fmt.Errorf("cannot prepare check-in statement: %w", err))
		}
		*stmt = s
	}
	return *stmt, nil
}
