package postgres_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// benchFleet seeds a fleet of n machines (LIVEPATCH_BENCH_MACHINES, default 100,000) in
// SQL: 20 kernels, 4 tiers, 1 in 10 tagged role=db, last seen spread over 30 days, five
// changes and ten check-ins each in the history.
func benchFleet(b *testing.B) (*postgres.DB, int, time.Time) {
	b.Helper()
	n := 100_000
	if v := os.Getenv("LIVEPATCH_BENCH_MACHINES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("invalid LIVEPATCH_BENCH_MACHINES %q: want a number of at least 1000", v)
		}
	}
	db := newDB(b)
	createToken(b, db, "fleet", "stable", nil, 0)
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	start := time.Now()
	for i, q := range []string{`
		INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, first_seen,
			last_seen, state_since, kernel, architecture, patch_state, patch_version, hostname, tags)
		SELECT format('machine-%s', lpad(i::text, 8, '0')), 1 + i % 4, (SELECT id FROM auth_tokens),
			sha256(i::text::bytea), $1::timestamptz - interval '60 days', $1::timestamptz - interval '60 days',
			$1::timestamptz - (i % 43200) * interval '1 minute', $1::timestamptz - interval '3 days',
			format('5.15.0-%s-generic', 100 + i % 20), 'amd64',
			(ARRAY['applied', 'applied', 'applied', 'nothing-to-apply', 'apply-failed'])[1 + i % 5],
			'107.' || (i % 3), format('host-%s', i),
			CASE WHEN i % 10 = 0 THEN '{"role": "db"}'::jsonb ELSE '{}'::jsonb END
		FROM generate_series(1, $2) i`, `
		INSERT INTO machine_changes (machine_id, changed_at, cause, tier, kernel, patch_state, patch_version)
		SELECT m.id, m.enabled_at + c * interval '1 day', 'check-in', 'stable', m.kernel, m.patch_state, m.patch_version
		FROM machines m, generate_series(1, 5) c`, `
		INSERT INTO machine_reports (machine_id, reported_at, kernel, architecture, patch_state, patch_version)
		SELECT m.id, m.last_seen - r * interval '1 hour', m.kernel, m.architecture, m.patch_state, m.patch_version
		FROM machines m, generate_series(1, 10) r`,
		`ANALYZE`,
	} {
		var args []any
		if i == 0 {
			args = []any{now, n}
		}
		if _, err := db.SQL().ExecContext(b.Context(), q, args...); err != nil {
			b.Fatalf("cannot seed the fleet: %v", err)
		}
	}
	b.Logf("seeded %d machines, %d changes and %d check-ins in %s", n, 5*n, 10*n, time.Since(start).Round(time.Millisecond))
	return db, n, now
}

// BenchmarkFleet measures what an operator asks of a large fleet. Run:
//
//	go test -run '^$' -bench Fleet -benchtime 50x ./server/postgres/
func BenchmarkFleet(b *testing.B) {
	db, n, now := benchFleet(b)
	ctx := b.Context()
	id := func(i int) string { return fmt.Sprintf("machine-%08d", 1+i%n) }
	b.Run("machine-show", func(b *testing.B) {
		for i := range b.N {
			if _, err := db.Machine(ctx, id(i*7919), 20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("history-all", func(b *testing.B) {
		for i := range b.N {
			if _, err := db.MachineHistory(ctx, id(i*7919), server.HistoryFilter{All: true, Limit: 100}); err != nil {
				b.Fatal(err)
			}
		}
	})
	filters := []struct {
		name string
		f    server.MachineFilter
	}{
		{"report-hostname", server.MachineFilter{Hostname: "host-4242"}},
		{"report-tag-page", server.MachineFilter{Tags: map[string]string{"role": "db"}, Limit: 1000}},
		{"report-tier-state-page", server.MachineFilter{Tier: "stable", PatchState: server.StateApplyFailed, Limit: 1000}},
		{"report-seen-before-7d-page", server.MachineFilter{SeenBefore: now.AddDate(0, 0, -7), Limit: 1000}},
		{"report-kernel-seen-after-1h-page", server.MachineFilter{Kernel: "5.15.0-107-generic", SeenAfter: now.Add(-time.Hour), Limit: 1000}},
	}
	for _, tc := range filters {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				if _, err := db.Machines(ctx, tc.f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("fleet-counts", func(b *testing.B) {
		for range b.N {
			if _, err := db.FleetCounts(ctx, 20); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kernels", func(b *testing.B) {
		for range b.N {
			if _, err := db.Kernels(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Once each: they change the fleet.
	b.Run("move-by-filter", func(b *testing.B) {
		var moved int
		for i := range b.N {
			tier := []string{"edge", "beta"}[i%2]
			m, err := db.MoveMachines(ctx, server.MachineMove{Filter: server.MachineFilter{Kernel: "5.15.0-101-generic"}, Tier: tier, Batch: 5000}, now)
			if err != nil {
				b.Fatal(err)
			}
			moved += m
		}
		b.ReportMetric(float64(moved)/b.Elapsed().Seconds(), "machines/s")
	})
	b.Run("stale-removal", func(b *testing.B) {
		var removed int
		for i := range b.N {
			// Each round removes the next day's worth of machines not seen for 25 days.
			before := now.AddDate(0, 0, -29+i)
			for cursor := ""; ; {
				r, next, err := db.RemoveStaleMachines(ctx, before, cursor, 5000)
				if err != nil {
					b.Fatal(err)
				}
				removed += r
				if next == "" {
					break
				}
				cursor = next
			}
		}
		b.ReportMetric(float64(removed)/b.Elapsed().Seconds(), "machines/s")
	})
}
