package main

import (
	"context"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestSoakStride(t *testing.T) {
	for _, n := range []int{1, 2, 10, 7919, 1000, 1_000_000} {
		s := soakStride(n)
		if n > 100_000 {
			continue // the visit below is for small fleets; the stride is checked by gcd
		}
		seen := make(map[int]bool, n)
		for i := range n {
			seen[(i*s)%n] = true
		}
		if len(seen) != n {
			t.Errorf("stride %d over %d machines visits %d of them", s, n, len(seen))
		}
	}
}

// TestSoakSeed seeds a small soak into the real schema and checks that its machines are
// the ones the soak's check-ins name: their ids and tokens match, a check-in records no
// change of state, and the jobs find their share of history and stale machines.
func TestSoakSeed(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds a database")
	}
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.DSN(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	const machines, rate = 500, 20.0
	dur := 2 * time.Minute
	boot := time.Now().Add(-10 * 24 * time.Hour).Truncate(time.Second)
	for _, stmt := range soakSeedSQL(machines, rate, dur, boot) {
		if _, err := store.SQL().ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	for _, n := range []int{1, 7, machines} {
		k := soakKernel(n)
		st := server.Status{Kernel: k.Release, Architecture: k.Architecture, CPUModel: "AMD EPYC 7B13", BootTime: boot,
			Uptime: 864000, ClientVersion: "10.8.3", PatchState: server.StateApplied, PatchVersion: k.PatchVersion}
		c := server.CheckIn{MachineID: soakMachineID(n), MachineTokenHash: server.HashToken(soakToken(n)), Status: st}
		if _, err := store.CheckIn(ctx, c, time.Now()); err != nil {
			t.Fatalf("check-in of soak machine %d: %v", n, err)
		}
		d, err := store.Machine(ctx, soakMachineID(n), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.History) != 0 {
			t.Errorf("check-in of soak machine %d recorded changes %+v, want none", n, d.History)
		}
	}
	var stale, old, reports int
	err = store.SQL().QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM machines WHERE last_seen < now() - interval '1 day' + interval '1 minute'),
		(SELECT count(*) FROM machine_reports WHERE reported_at < now() - interval '1 day' + interval '1 minute'),
		(SELECT count(*) FROM machine_reports)`).Scan(&stale, &old, &reports)
	if err != nil {
		t.Fatal(err)
	}
	// One interval before the start and one minute in: two minutes' worth of each, of three.
	if wantStale, wantOld := soakStaleRate*120, int(rate*120); !near(stale, wantStale) || !near(old, wantOld) || reports != int(rate*180)+3 {
		t.Errorf("%d stale machines, %d history rows of %d past retention within a minute; want about %d, %d of %d",
			stale, old, reports, wantStale, wantOld, int(rate*180)+3)
	}
}

// near reports whether got is within 2% (or 2) of want.
func near(got, want int) bool {
	d := got - want
	return d*d <= max(4, want*want/2500)
}
