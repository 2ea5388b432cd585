package jujusim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/juju/clock/testclock"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// failTwice makes install fail on its first two runs.
const failTwice = `
n=$(cat "$SIMTEST_SCRIPTS/count" 2>/dev/null || echo 0)
n=$((n+1)); echo $n > "$SIMTEST_SCRIPTS/count"
[ $n -gt 2 ]
`

func installs(h []jujusim.HookRecord) int {
	n := 0
	for _, r := range h {
		if r.Hook == "install" {
			n++
		}
	}
	return n
}

func waitInstalls(t *testing.T, m *jujusim.Model, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := m.WaitHistory(ctx, func(h []jujusim.HookRecord) bool { return installs(h) >= n }); err != nil {
		t.Fatal(err)
	}
}

// TestHookRetryBackoff: with automatically-retry-hooks (the default) a failed hook runs again
// after 5s, then after twice that ±3%, and the unit goes on once it succeeds; no real time
// passes, the clock is the test's.
func TestHookRetryBackoff(t *testing.T) {
	clk := testclock.NewClock(time.Now())
	m, sc := newModel(t, func(o *jujusim.Options) { o.Clock = clk })
	sc.set(t, "install", failTwice)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitInstalls(t, m, 1)
	waitIdle(t, m)
	if u, _ := m.Status().Unit("cli/0"); u.Agent.Current != "error" || u.Agent.Message != `hook failed: "install"` {
		t.Fatalf("agent status after the failure = %+v", u.Agent)
	}
	// First retry: exactly 5s later.
	if err := clk.WaitAdvance(5*time.Second-time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := clk.WaitAdvance(time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatalf("retry timer gone before 5s: %v", err)
	}
	waitInstalls(t, m, 2)
	// Second retry: 10s ±3% later, so not within 9.6s, surely by 10.4s.
	if err := clk.WaitAdvance(9600*time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if err := clk.WaitAdvance(800*time.Millisecond, 10*time.Second, 1); err != nil {
		t.Fatalf("second retry came before 9.6s: %v", err)
	}
	waitInstalls(t, m, 3)
	waitIdle(t, m)
	want := []string{"install (exit 1)", "install (exit 1)", "install", "leader-elected", "config-changed", "start"}
	if diff := cmp.Diff(want, m.HookNames("cli/0")); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
	if u, _ := m.Status().Unit("cli/0"); u.Agent.Current != "idle" {
		t.Errorf("agent status = %+v, want idle", u.Agent)
	}
	var retries []string
	for _, e := range m.Logs() {
		if strings.HasPrefix(e.Message, "retrying hook") {
			retries = append(retries, e.Message)
		}
	}
	if len(retries) != 2 || retries[0] != `retrying hook "install" in 5s` {
		t.Errorf("retry log = %q", retries)
	}
}

// TestNoHookRetries: with automatically-retry-hooks=false a failed hook waits for juju
// resolved, however long.
func TestNoHookRetries(t *testing.T) {
	clk := testclock.NewClock(time.Now())
	m, sc := newModel(t, func(o *jujusim.Options) { o.Clock = clk; o.NoHookRetries = true })
	sc.set(t, "install", failTwice)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitInstalls(t, m, 1)
	waitIdle(t, m)
	clk.Advance(time.Hour)
	waitIdle(t, m)
	if err := m.Resolved("cli/0", true); err != nil {
		t.Fatalf("unit not in error an hour later: %v", err)
	}
	waitInstalls(t, m, 2)
	waitIdle(t, m)
	if err := m.SetModelConfig(map[string]string{"automatically-retry-hooks": "true"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Resolved("cli/0", true); err != nil {
		t.Fatal(err)
	}
	waitInstalls(t, m, 3)
	waitIdle(t, m)
	want := []string{"install (exit 1)", "install (exit 1)", "install", "leader-elected", "config-changed", "start"}
	if diff := cmp.Diff(want, m.HookNames("cli/0")); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
}
