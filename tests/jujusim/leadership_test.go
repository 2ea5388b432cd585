package jujusim_test

import (
	"testing"
	"time"

	"github.com/juju/clock/testclock"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// TestLeaderIsAnyUnit: the first leader is whichever unit's claim wins, fixed by the seed.
func TestLeaderIsAnyUnit(t *testing.T) {
	leaders := map[string]bool{}
	for _, seed := range []int64{1, 2, 3, 4} {
		var first string
		for range 2 {
			m, _ := newModel(t, func(o *jujusim.Options) { o.Seed = seed })
			deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, ""), NumUnits: 3})
			waitLeader(t, m, "cli")
			l := m.Leader("cli")
			if first != "" && l != first {
				t.Errorf("seed %d: leader %s, then %s", seed, first, l)
			}
			first = l
			leaders[l] = true
		}
	}
	if len(leaders) < 2 {
		t.Errorf("leaders over four seeds: %v, want more than one unit", leaders)
	}
}

// TestLeaderLeaseLapses: once the leader is removed nobody leads until its lease lapses: 60s
// after its last renewal, which it made every 30s. Then a remaining unit is elected.
func TestLeaderLeaseLapses(t *testing.T) {
	clk := testclock.NewClock(time.Now())
	m, _ := newModel(t, func(o *jujusim.Options) { o.Clock = clk })
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, ""), NumUnits: 3})
	waitIdle(t, m)
	gone := m.Leader("cli")
	// Elected at T, renewed at T+30s; removed at T+40s: its lease lasts until T+90s.
	clk.Advance(40 * time.Second)
	if err := m.RemoveUnit(gone); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if l := m.Leader("cli"); l != "" {
		t.Fatalf("leader right after %s went = %q, want none", gone, l)
	}
	for _, u := range m.Status().UnitNames("cli") {
		if res, err := m.Exec(t.Context(), u, "is-leader"); err != nil || res.Stdout != "False\n" {
			t.Errorf("%s is-leader during the gap = %+v, %v", u, res, err)
		}
	}
	if err := clk.WaitAdvance(50*time.Second-time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := clk.WaitAdvance(time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatalf("lease lapsed before 50s: %v", err)
	}
	waitLeader(t, m, "cli")
	waitIdle(t, m)
	leader := m.Leader("cli")
	if leader == gone {
		t.Fatalf("leader %s is the removed unit", leader)
	}
	if h := m.HookNames(leader); h[len(h)-1] != "leader-elected" {
		t.Errorf("%s hooks: %v, want leader-elected last", leader, h)
	}
	if res, _ := m.Exec(t.Context(), leader, "is-leader"); res.Stdout != "True\n" {
		t.Errorf("%s is-leader = %q", leader, res.Stdout)
	}
}
