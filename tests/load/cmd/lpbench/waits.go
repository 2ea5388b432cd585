package main

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// waitSampler samples what the server's database connections are doing (pg_stat_activity)
// every 10 ms: the database side of a profile.
type waitSampler struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	counts  map[string]int
	samples int
}

type waitCount struct {
	what  string
	share float64 // of connection samples
}

// sampleWaits starts sampling the client backends of database name.
func (b *bench) sampleWaits(ctx context.Context, name string) *waitSampler {
	ctx, cancel := context.WithCancel(ctx)
	w := &waitSampler{cancel: cancel, done: make(chan struct{}), counts: map[string]int{}}
	go func() {
		defer close(w.done)
		db, err := sql.Open("postgres", b.pg.DSN("postgres"))
		if err != nil {
			return
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 0; i < 100_000; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := db.QueryContext(ctx, `
				SELECT CASE WHEN state = 'active' THEN 'active: ' || coalesce(wait_event_type || ' ' || wait_event, 'on CPU')
					ELSE state || ': ' || coalesce(wait_event, '') END
				FROM pg_stat_activity
				WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()`, name)
			if err != nil {
				continue
			}
			w.mu.Lock()
			for rows.Next() {
				var what string
				if rows.Scan(&what) == nil {
					w.counts[what]++
					w.samples++
				}
			}
			w.mu.Unlock()
			rows.Close()
		}
	}()
	return w
}

// stop ends sampling and returns the shares, largest first.
func (w *waitSampler) stop() []waitCount {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []waitCount
	for k, n := range w.counts {
		out = append(out, waitCount{k, float64(n) / float64(w.samples)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].share > out[j].share })
	return out
}

// walStats are cumulative counters of pg_stat_wal and of the machines table.
type walStats struct {
	records, bytes, writes, syncs int64
	updates, hotUpdates           int64
}

func readWAL(ctx context.Context, db *sql.DB) (walStats, error) {
	var s walStats
	err := db.QueryRowContext(ctx, `
		SELECT w.wal_records, w.wal_bytes::bigint, w.wal_write, w.wal_sync,
			coalesce(t.n_tup_upd, 0), coalesce(t.n_tup_hot_upd, 0)
		FROM pg_stat_wal w LEFT JOIN pg_stat_user_tables t ON t.relname = 'machines'`).
		Scan(&s.records, &s.bytes, &s.writes, &s.syncs, &s.updates, &s.hotUpdates)
	if err != nil {
		return s, fmt.Errorf("cannot read WAL statistics: %w", err)
	}
	return s, nil
}

// databaseEvidence describes what the database did for the check-ins: WAL per check-in,
// flushes per check-in (group commit), HOT updates, and where connections waited.
func databaseEvidence(before, after walStats, checkIns int, waits []waitCount, pool int) string {
	var b strings.Builder
	if checkIns > 0 {
		n := float64(checkIns)
		upd := after.updates - before.updates
		hot := after.hotUpdates - before.hotUpdates
		fmt.Fprintf(&b, "PostgreSQL during the check-ins (pg_stat_wal, pg_stat_user_tables): %.0f WAL bytes and %.1f WAL records per check-in; "+
			"%.2f WAL flushes (fsync) per check-in, i.e. %.1f commits share a flush; %.0f%% of the machines updates were HOT (%d of %d).",
			float64(after.bytes-before.bytes)/n, float64(after.records-before.records)/n,
			float64(after.syncs-before.syncs)/n, n/max(float64(after.syncs-before.syncs), 1),
			100*float64(hot)/max(float64(upd), 1), hot, upd)
	}
	if len(waits) > 0 {
		fmt.Fprintf(&b, "\n\nWhat the unit's database connections (pool of %d) were doing during the 1-unit max run, sampled every 10 ms from pg_stat_activity: ", pool)
		var parts []string
		for _, w := range waits {
			if w.share < 0.01 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %.0f%%", w.what, 100*w.share))
		}
		b.WriteString(strings.Join(parts, ", ") + ".")
	}
	return b.String()
}
