package server_test

import (
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestRolloutPolicyInWindow(t *testing.T) {
	p := server.RolloutPolicy{Tier: "stable", TimeZone: "America/New_York", Windows: []server.Window{
		{Days: []string{"fri"}, Start: "22:00", End: "02:00"}, // runs into Saturday
		{Start: "12:00", End: "13:00"},                        // every day
	}}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	loc, _ := p.Location()
	for _, tc := range []struct {
		at   string // in New York
		want bool
	}{
		{"2026-03-06 21:59", false}, // Friday
		{"2026-03-06 22:00", true},
		{"2026-03-07 01:59", true}, // Saturday, the Friday window
		{"2026-03-07 02:00", false},
		{"2026-03-07 22:30", false}, // Saturday night: not a Friday
		{"2026-03-04 12:30", true},  // Wednesday noon
		{"2026-03-04 13:00", false},
	} {
		at, err := time.ParseInLocation("2006-01-02 15:04", tc.at, loc)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.InWindow(at.UTC(), loc); got != tc.want {
			t.Errorf("%s: in window %v, want %v", tc.at, got, tc.want)
		}
	}
	if !(server.RolloutPolicy{}).InWindow(time.Now(), time.UTC) {
		t.Errorf("a policy without windows must allow any time")
	}
}

func TestRolloutPolicyGrant(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	p := server.RolloutPolicy{Tier: "edge", CanaryPercent: 10, Soak: server.Duration(time.Hour),
		RateLimit: 5, RatePeriod: server.Duration(time.Hour), MaxInFlight: 7}
	r := server.Rollout{State: server.RolloutActive, RolloutCounts: server.RolloutCounts{Machines: 25}}
	// 10% of 25 machines: 3 canaries.
	n, r := p.Grant(r, 8, now)
	if n != 3 {
		t.Fatalf("canary grant %d, want 3", n)
	}
	if n, _ = p.Grant(r, 8, now); n != 0 {
		t.Errorf("canaries not applied yet: granted %d", n)
	}
	r.Canaries, r.CanariesApplied, r.Offered, r.Applied = 3, 3, 3, 3
	if n, r = p.Grant(r, 8, now.Add(time.Minute)); n != 0 || r.CanariesDone.IsZero() {
		t.Errorf("soak starts: granted %d, canaries done %v", n, r.CanariesDone)
	}
	// Soak over, in the next rate period: the rate limit.
	if n, r = p.Grant(r, 8, now.Add(61*time.Minute)); n != 5 {
		t.Errorf("after the soak, in a new period, granted %d, want the rate limit 5", n)
	}
	// Next period: the in-flight bound (7, 5 not applied) leaves 2.
	if n, _ = p.Grant(r, 8, now.Add(2*time.Hour)); n != 2 {
		t.Errorf("in flight bound: granted %d, want 2", n)
	}
	r.State = server.RolloutPaused
	if n, _ = p.Grant(r, 8, now.Add(3*time.Hour)); n != 0 {
		t.Errorf("paused: granted %d", n)
	}
}

// TestRolloutPolicyGrantCanariesRate checks that the canary phase keeps to the rate limit.
func TestRolloutPolicyGrantCanariesRate(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	p := server.RolloutPolicy{Tier: "edge", Canaries: 5, RateLimit: 2, RatePeriod: server.Duration(time.Hour)}
	r := server.Rollout{State: server.RolloutActive, RolloutCounts: server.RolloutCounts{Machines: 25}}
	n, r := p.Grant(r, 8, now)
	if n != 2 {
		t.Fatalf("canaries in the first period: %d, want the rate limit 2", n)
	}
	if n, _ = p.Grant(r, 8, now.Add(time.Hour)); n != 2 {
		t.Errorf("canaries in the next period: %d, want 2", n)
	}
}

// TestRolloutPolicyGrantClockSkew checks that a unit whose clock is behind, claiming
// after another unit started the next rate period, counts in that period and does not
// start its own again: units never together exceed the rate limit of a period.
func TestRolloutPolicyGrantClockSkew(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 59, 58, 0, time.UTC)
	p := server.RolloutPolicy{Tier: "edge", RateLimit: 4, RatePeriod: server.Duration(time.Hour)}
	r := server.Rollout{State: server.RolloutActive, RolloutCounts: server.RolloutCounts{Machines: 25}}
	n, r := p.Grant(r, 4, now)
	if n != 4 {
		t.Fatalf("first period: granted %d, want 4", n)
	}
	ahead, behind := now.Add(3*time.Second), now.Add(time.Second)
	if n, r = p.Grant(r, 3, ahead); n != 3 {
		t.Fatalf("a unit in the next period: granted %d, want 3", n)
	}
	if n, r = p.Grant(r, 4, behind); n != 1 {
		t.Errorf("a unit whose clock is behind: granted %d, want the 1 left in the period the row is in", n)
	}
	if want := ahead.Truncate(time.Hour); !r.PeriodStart.Equal(want) || r.PeriodClaimed != 4 {
		t.Errorf("period %v with %d claimed, want %v with 4", r.PeriodStart, r.PeriodClaimed, want)
	}
}
