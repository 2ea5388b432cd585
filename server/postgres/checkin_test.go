package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

type checkInResult struct {
	tier string
	err  error
}

// queueCheckIns starts the check-ins cs while db's batches are held, in order, and
// returns their outcomes once released and recorded.
func queueCheckIns(t *testing.T, db *postgres.DB, cs []server.CheckIn, now time.Time) []checkInResult {
	t.Helper()
	wait, release := postgres.HoldCheckIns(t, db)
	results := make([]checkInResult, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			tier, err := db.CheckIn(t.Context(), c, now.Add(time.Duration(i)*time.Second))
			results[i] = checkInResult{tier, err}
		})
		wait(i + 1)
	}
	release()
	wg.Wait()
	return results
}

// TestCheckInBatch checks that check-ins recorded together get what each would get alone:
// its machine's tier, or unauthorized for a wrong token or an unknown machine, its own
// status and time, one history row each; a second report of a machine waits for a batch
// of its own.
func TestCheckInBatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tokens := map[string]string{"edge": createToken(t, db, "e", "edge", nil, 0), "stable": createToken(t, db, "s", "stable", nil, 0)}
	tiers := []string{"edge", "stable", "stable", "edge", "stable", "edge"}
	for i, tier := range tiers {
		enable(t, db, tokens[tier], fmt.Sprint("m", i))
	}
	now := time.Now().UTC().Truncate(time.Microsecond)

	var cs []server.CheckIn
	for i := range tiers {
		c := checkIn(fmt.Sprint("m", i), fmt.Sprint("107.", i), server.StateApplied)
		c.Status.Uptime = int64(i)
		cs = append(cs, c)
	}
	cs[2].Status.BootTime = time.Time{}
	wrongToken := checkIn("m5", "107.1", server.StateApplied)
	wrongToken.MachineTokenHash = server.HashToken("wrong")
	again := checkIn("m0", "107.9", server.StateNeedsCheck)
	cs = append(cs[:5], checkIn("nobody", "", server.StateUnknown), wrongToken, again)

	results := queueCheckIns(t, db, cs, now)
	for i, r := range results {
		switch cs[i].MachineID {
		case "nobody", "m5":
			if server.ErrorCode(r.err) != server.CodeUnauthorized {
				t.Errorf("check-in %d (%s) = %q, %v; want unauthorized", i, cs[i].MachineID, r.tier, r.err)
			}
		default:
			if want := tiers[cs[i].MachineID[1]-'0']; r.err != nil || r.tier != want {
				t.Errorf("check-in %d (%s) = %q, %v; want %s", i, cs[i].MachineID, r.tier, r.err, want)
			}
		}
	}
	if got := reportCount(t, db); got != 6 {
		t.Errorf("history has %d rows, want 6 (m0 twice, m1-m4)", got)
	}
	machines := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{}))
	for _, m := range machines[1:5] {
		i := int(m.ID[1] - '0')
		seen := now.Add(time.Duration(i) * time.Second)
		want := server.Machine{ID: m.ID, Tier: tiers[i], TokenID: m.TokenID, EnabledAt: m.EnabledAt,
			FirstSeen: m.EnabledAt, LastSeen: seen, StateSince: seen, Status: cs[i].Status}
		if diff := cmp.Diff(want, m); diff != "" {
			t.Errorf("machine %s (-want +got):\n%s", m.ID, diff)
		}
	}
	if m0 := machines[0]; m0.Status != cs[0].Status && m0.Status != again.Status {
		t.Errorf("machine m0 has status %+v, want one of its reports", m0.Status)
	}
	if m5 := machines[5]; !m5.LastSeen.IsZero() {
		t.Errorf("machine m5 was seen at %v with a wrong token", m5.LastSeen)
	}
}

// TestCheckInBatchRefusedValue checks that a value the database refuses fails only its own
// check-in, not the others recorded with it.
func TestCheckInBatchRefusedValue(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	tok := createToken(t, db, "web", "beta", nil, 0)
	var cs []server.CheckIn
	for i := range 4 {
		id := fmt.Sprint("m", i)
		enable(t, db, tok, id)
		cs = append(cs, checkIn(id, "107.1", server.StateApplied))
	}
	cs[1].Status.CPUModel = "nul\x00byte"

	results := queueCheckIns(t, db, cs, time.Now())
	for i, r := range results {
		if i == 1 {
			if r.err == nil || server.ErrorCode(r.err) != server.CodeInvalid {
				t.Errorf("check-in with a NUL byte = %q, %v; want an invalid error", r.tier, r.err)
			}
		} else if r.err != nil || r.tier != "beta" {
			t.Errorf("check-in %d = %q, %v; want beta", i, r.tier, r.err)
		}
	}
	if got := reportCount(t, db); got != 3 {
		t.Errorf("history has %d rows, want 3", got)
	}
}

// TestCheckInCanceledWhileQueued checks that a check-in whose request ends while it waits
// for a batch leaves the queue and records nothing.
func TestCheckInCanceledWhileQueued(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	enable(t, db, createToken(t, db, "web", "beta", nil, 0), "m1")
	wait, release := postgres.HoldCheckIns(t, db)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := db.CheckIn(ctx, checkIn("m1", "107.1", server.StateApplied), time.Now())
		errc <- err
	}()
	wait(1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled check-in = %v, want context.Canceled", err)
	}
	release()
	if tier, err := db.CheckIn(t.Context(), checkIn("m1", "107.1", server.StateApplied), time.Now()); err != nil || tier != "beta" {
		t.Fatalf("check-in after release = %q, %v; want beta", tier, err)
	}
	if got := reportCount(t, db); got != 1 {
		t.Errorf("history has %d rows, want 1", got)
	}
}

// TestCheckInConcurrent checks many machines checking in at once, some with a wrong token:
// every check-in gets its own outcome and the history has a row per accepted one.
func TestCheckInConcurrent(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	tok := createToken(t, db, "web", "candidate", nil, 0)
	const machines, workers, each = 20, 16, 25
	for i := range machines {
		enable(t, db, tok, fmt.Sprint("m", i))
	}
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range each {
				n := w*each + j
				c := checkIn(fmt.Sprint("m", n%machines), "107.1", server.StateApplied)
				bad := n%7 == 0
				if bad {
					c.MachineTokenHash = server.HashToken("wrong")
				}
				tier, err := db.CheckIn(t.Context(), c, time.Now())
				switch {
				case bad && server.ErrorCode(err) != server.CodeUnauthorized:
					t.Errorf("check-in %d with a wrong token = %q, %v; want unauthorized", n, tier, err)
				case !bad && (err != nil || tier != "candidate"):
					t.Errorf("check-in %d = %q, %v; want candidate", n, tier, err)
				case !bad:
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if got := reportCount(t, db); got != accepted {
		t.Errorf("history has %d rows, want %d", got, accepted)
	}
}
