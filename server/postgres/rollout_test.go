package postgres_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// TestClaimSlotsConcurrent checks that units claiming offer slots at once never together
// get more than the rate limit of a period, and that the next period starts afresh.
func TestClaimSlotsConcurrent(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	p := server.RolloutPolicy{Tier: "edge", RateLimit: 10, RatePeriod: server.Duration(time.Hour)}
	if err := db.SetRolloutPolicy(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	claim := func(now time.Time) int {
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				n, err := db.ClaimSlots(t.Context(), server.SlotClaim{Tier: "edge", Version: "107.1", Want: 4}, p, now)
				if err != nil {
					t.Error(err)
				}
				total.Add(int64(n))
			})
		}
		wg.Wait()
		return int(total.Load())
	}
	if n := claim(now); n != 10 {
		t.Errorf("8 units asking 4 slots each got %d in one period, want the rate limit 10", n)
	}
	if n := claim(now.Add(30 * time.Minute)); n != 0 {
		t.Errorf("later in the same period, got %d slots, want 0", n)
	}
	if n := claim(now.Add(time.Hour)); n != 10 {
		t.Errorf("in the next period, got %d slots, want 10", n)
	}
}

// TestRolloutCounts checks the update states of offered machines: applied, failed after
// the offer, downloaded (unapplied after the offer) until the apply timeout, timed out
// past it, and that removed machines drop out.
func TestRolloutCounts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "e", "edge", nil, 0)
	for i := range 5 {
		enable(t, db, tok, fmt.Sprint("m", i))
	}
	p := server.RolloutPolicy{Tier: "edge", Canaries: 2, ApplyTimeout: server.Duration(time.Hour), FailureThreshold: 25}
	if err := db.SetRolloutPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	offeredAt := time.Now().UTC().Truncate(time.Microsecond)
	if n, err := db.ClaimSlots(ctx, server.SlotClaim{Tier: "edge", Version: "107.1", Want: 4}, p, offeredAt); err != nil || n != 2 {
		t.Fatalf("canary claim: %d, %v; want the 2 canaries", n, err)
	}
	var offers []server.RolloutOffer
	for i := range 5 {
		offers = append(offers, server.RolloutOffer{MachineID: fmt.Sprint("m", i), OfferedAt: offeredAt})
	}
	if err := db.RecordOffers(ctx, "edge", "107.1", offers); err != nil {
		t.Fatal(err)
	}
	reported := offeredAt.Add(time.Minute)
	for _, c := range []server.CheckIn{
		checkIn("m0", "107.1", server.StateApplied), checkIn("m1", "", server.StateApplyFailed), checkIn("m4", "", server.StateUnapplied),
	} {
		if _, err := db.CheckIn(ctx, c, reported); err != nil {
			t.Fatal(err)
		}
	}
	rollouts, err := db.Rollouts(ctx, "edge", offeredAt.Add(30*time.Minute))
	if err != nil || len(rollouts) != 1 {
		t.Fatalf("rollouts: %v, %v", rollouts, err)
	}
	want := server.RolloutCounts{Canaries: 2, CanariesApplied: 1, Offered: 5, Downloaded: 1, Applied: 1, Failed: 1, Machines: 5}
	if got := rollouts[0].RolloutCounts; got != want {
		t.Errorf("within the apply timeout: counts %+v, want %+v", got, want)
	}
	// RolloutsOf: those named that have started, counted alike.
	refs := []server.RolloutRef{{Tier: "edge", Version: "107.1"}, {Tier: "edge", Version: "107.2"}, {Tier: "nosuch", Version: "107.1"}}
	if of, err := db.RolloutsOf(ctx, refs, offeredAt.Add(30*time.Minute)); err != nil || len(of) != 1 || of[0].RolloutCounts != want {
		t.Errorf("RolloutsOf: %+v, %v; want the rollout of 107.1 with %+v", of, err, want)
	}
	if rollouts, err = db.Rollouts(ctx, "edge", offeredAt.Add(2*time.Hour)); err != nil || len(rollouts) != 1 {
		t.Fatalf("rollouts: %v, %v", rollouts, err)
	}
	want = server.RolloutCounts{Canaries: 2, CanariesApplied: 1, Offered: 5, Applied: 1, Failed: 1, TimedOut: 3, Machines: 5}
	if got := rollouts[0].RolloutCounts; got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	if reason := p.HaltReason(rollouts[0]); reason == "" {
		t.Errorf("4 of 5 failed or timed out with a 25%% threshold: no halt")
	}
	machines, err := db.RolloutMachines(ctx, "edge", "107.1", offeredAt.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, m := range machines {
		states = append(states, fmt.Sprint(m.MachineID, " ", m.State, " ", m.Canary))
	}
	if fmt.Sprint(states) != "[m0 applied true m1 failed true m2 timed-out false m3 timed-out false m4 timed-out false]" {
		t.Errorf("machines: %v", states)
	}
	if err := db.RemoveMachine(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	if rollouts, err = db.Rollouts(ctx, "edge", offeredAt.Add(2*time.Hour)); err != nil || rollouts[0].Offered != 4 {
		t.Errorf("after removing a machine: %+v, %v", rollouts, err)
	}
	// The operator resumes after a halt: the failures so far are the new baseline.
	later := offeredAt.Add(2 * time.Hour)
	if reason, err := db.HaltRollout(ctx, p, "107.1", later); reason == "" || err != nil {
		t.Fatalf("halt: %q, %v", reason, err)
	}
	if ok, err := db.SetRolloutState(ctx, "edge", "107.1", server.RolloutActive, "", later); !ok || err != nil {
		t.Fatalf("resume: %v, %v", ok, err)
	}
	rollouts, _ = db.Rollouts(ctx, "edge", later)
	if r := rollouts[0]; r.State != server.RolloutActive || r.HaltBaseline != 3 || p.HaltReason(r) != "" {
		t.Errorf("after resume: %+v", r)
	}
	// A unit that read the counts before the resume asks to halt it: the counts under the
	// lock say no.
	if reason, err := db.HaltRollout(ctx, p, "107.1", later); reason != "" || err != nil {
		t.Errorf("halt after resume, from a stale read: %q, %v; want no halt", reason, err)
	}
	if rollouts, _ = db.Rollouts(ctx, "edge", later); rollouts[0].State != server.RolloutActive {
		t.Errorf("after a stale halt: %+v", rollouts[0])
	}
}
