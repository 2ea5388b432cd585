package app

import (
	"context"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// TestPruneReports checks the retention job deletes every expired history row in bounded
// batches and keeps the rest, and the stale machine cleanup removes the machines not seen
// for long.
func TestPruneReports(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.DSN(t), postgres.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := db.CreateAuthToken(ctx, server.NewAuthToken{ID: "t", Tier: "edge", Hash: server.HashToken("tok")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("tok"), MachineID: "m1", MachineTokenHash: server.HashToken("mt")}, now); err != nil {
		t.Fatal(err)
	}
	st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateNothingToApply}
	for i := range 25 {
		at := now.AddDate(0, 0, -100).Add(time.Duration(i) * time.Minute) // expired
		if i >= 20 {
			at = now.Add(-time.Duration(i) * time.Minute) // recent
		}
		if _, err := db.CheckIn(ctx, server.CheckIn{MachineID: "m1", MachineTokenHash: server.HashToken("mt"), Status: st}, at); err != nil {
			t.Fatal(err)
		}
	}
	before := now.AddDate(0, 0, -90)
	// Two batches only: 6 of 20 check-ins, and the one change (the first check-in's).
	n, err := pruneReports(ctx, db, before, 3, 2)
	if err != nil || n != 7 {
		t.Fatalf("bounded run pruned %d, %v; want 7", n, err)
	}
	n, err = pruneReports(ctx, db, before, 3, maxCleanupBatches)
	if err != nil || n != 14 {
		t.Fatalf("full run pruned %d, %v; want the other 14", n, err)
	}
	var left int
	if err := db.SQL().QueryRowContext(ctx, "SELECT count(*) FROM machine_reports").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 5 {
		t.Errorf("%d history rows left, want the 5 recent ones", left)
	}

	// Stale machines: m1 was seen now; m2 was seen 100 days ago, m3 enabled 100 days ago
	// and never seen.
	old := now.AddDate(0, 0, -100)
	for _, id := range []string{"m2", "m3"} {
		if _, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("tok"), MachineID: id, MachineTokenHash: server.HashToken("mt")}, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.CheckIn(ctx, server.CheckIn{MachineID: "m2", MachineTokenHash: server.HashToken("mt"), Status: st}, old); err != nil {
		t.Fatal(err)
	}
	n, err = removeStaleMachines(ctx, db, now.AddDate(0, 0, -30), 1, maxCleanupBatches)
	if err != nil || n != 2 {
		t.Fatalf("removeStaleMachines() = %d, %v; want 2", n, err)
	}
	ms, err := db.Machines(ctx, server.MachineFilter{})
	if err != nil || len(ms) != 1 || ms[0].ID != "m1" {
		t.Errorf("machines after the stale cleanup: %+v, %v; want m1", ms, err)
	}
}
