package livepatch_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

const (
	binaryV1 = "fake livepatch-server v1"
	binaryV2 = "fake livepatch-server v2"
)

// deployed returns n units serving binary v1 on schema 3, livepatch/leader the leader.
func deployed(t *testing.T, n, leader int) *lpt.Cluster {
	t.Helper()
	cl := lpt.NewCluster(t, n)
	cl.SetLeader(leader)
	cl.Deploy(t)
	for i := range n {
		if diff := cmp.Diff(hooks.Active(lpt.MessageActive), cl.Status(i)); diff != "" {
			t.Fatalf("livepatch/%d after deploy (-want +got):\n%s", i, diff)
		}
	}
	cl.Restarts = nil
	return cl
}

// refresh puts a new bundled server in every unit's charm and runs upgrade-charm on the
// units in the given order, as Juju does one unit after the other.
func refresh(t *testing.T, cl *lpt.Cluster, content string, b lpt.Binary, order ...int) {
	t.Helper()
	cl.Server.Binaries = map[string]lpt.Binary{binaryV1: {Version: "v1.0.0", Latest: 3}, content: b}
	for _, e := range cl.Units {
		e.SetBundledBinary(t, content)
	}
	for _, i := range order {
		if res := cl.Run(t, i, "upgrade-charm"); res.Err != nil {
			t.Fatalf("livepatch/%d: upgrade-charm: %v", i, res.Err)
		}
	}
}

func installed(t *testing.T, cl *lpt.Cluster, i int) string {
	t.Helper()
	return cl.Units[i].H.ReadFile(t, livepatch.ServerBinary)
}

func staged(cl *lpt.Cluster, i int) bool {
	_, err := os.Stat(filepath.Join(cl.Units[i].H.Root, livepatch.StagedBinary))
	return err == nil
}

func checkStatus(t *testing.T, cl *lpt.Cluster, i int, want hooks.Status) {
	t.Helper()
	if diff := cmp.Diff(want, cl.Status(i)); diff != "" {
		t.Errorf("livepatch/%d status (-want +got):\n%s", i, diff)
	}
}

func checkRestarts(t *testing.T, cl *lpt.Cluster, want ...int) {
	t.Helper()
	if diff := cmp.Diff(want, cl.Restarts); diff != "" {
		t.Errorf("restart order (-want +got):\n%s", diff)
	}
}

// TestUpgradeWithMigration is the charm side of a zero-downtime upgrade to a server that
// needs a newer schema: the old servers keep serving until schema-upgrade, then the units
// switch one at a time in unit order, whoever the leader is.
func TestUpgradeWithMigration(t *testing.T) {
	cl := deployed(t, 3, 1)
	refresh(t, cl, binaryV2, lpt.Binary{Version: "v2.0.0", Latest: 4}, 2, 0, 1)
	cl.Settle(t)

	checkRestarts(t, cl)
	held := hooks.Active("Livepatch server v1.0.0 running; v2.0.0 is staged and waits for the schema-upgrade action on the leader")
	checkStatus(t, cl, 0, held)
	checkStatus(t, cl, 1, hooks.Blocked(livepatch.MessageSchemaUpgrade))
	checkStatus(t, cl, 2, held)
	for i := range 3 {
		if got := installed(t, cl, i); got != binaryV1 || !staged(cl, i) {
			t.Errorf("livepatch/%d runs %q (staged: %v), want v1 with v2 staged", i, got, staged(cl, i))
		}
	}
	// Other hooks change nothing while the upgrade waits.
	for i := range 3 {
		cl.Run(t, i, "update-status")
	}
	cl.Settle(t)
	checkRestarts(t, cl)

	res := cl.RunAction(t, 1, "schema-upgrade", nil)
	if res.Err != nil || res.ActionFailed {
		t.Fatalf("schema-upgrade: %v %s", res.Err, res.ActionMessage)
	}
	if diff := cmp.Diff([]string{binaryV2}, cl.Server.Upgrades); diff != "" {
		t.Errorf("binaries that migrated (-want +got):\n%s", diff)
	}
	if cur, _ := cl.Server.Schema(); cur != 4 {
		t.Errorf("schema %d after schema-upgrade, want 4", cur)
	}
	// The leader is livepatch/1: it waits for livepatch/0.
	checkRestarts(t, cl)
	checkStatus(t, cl, 1, hooks.Active(lpt.MessageActive+"; restart queued behind livepatch/0 (rolling restart 1)"))

	cl.Settle(t)
	checkRestarts(t, cl, 0, 1, 2)
	for i := range 3 {
		checkStatus(t, cl, i, hooks.Active(lpt.MessageActive))
		if got := installed(t, cl, i); got != binaryV2 || staged(cl, i) {
			t.Errorf("livepatch/%d runs %q (staged: %v), want v2", i, got, staged(cl, i))
		}
		if got := cl.Bags[i][livepatch.PeerRestartedGeneration]; got != "1" {
			t.Errorf("livepatch/%d published restarted-generation %q, want 1", i, got)
		}
	}
	if got := cl.States[2].AppVersion; got != "v2.0.0" {
		t.Errorf("application version %q, want v2.0.0", got)
	}

	// Nothing changed: no hook restarts anything.
	for i := range 3 {
		for _, hook := range []string{"config-changed", "update-status", "livepatch-relation-changed"} {
			cl.Run(t, i, hook)
		}
	}
	cl.Settle(t)
	checkRestarts(t, cl, 0, 1, 2)
}

// TestHeldUnitRestartsNothing: while the new server waits for schema-upgrade, the old
// servers are not restarted, not even for a configuration change, and the configuration
// they run with stays on disk (the service manager restarts a crashed server with it): the
// new charm may render keys only the new server knows. The change applies at the switch.
func TestHeldUnitRestartsNothing(t *testing.T) {
	cl := deployed(t, 2, 0)
	before := cl.Units[1].H.ReadFile(t, livepatch.ConfigPath)
	refresh(t, cl, binaryV2, lpt.Binary{Version: "v2.0.0", Latest: 4}, 0, 1)
	cl.Settle(t)
	for i := range 2 {
		cl.States[i].Config["log_level"] = "debug"
		cl.Run(t, i, "config-changed")
	}
	cl.Settle(t)
	checkRestarts(t, cl)
	if got := cl.Units[1].H.ReadFile(t, livepatch.ConfigPath); got != before {
		t.Errorf("the held server's configuration was rewritten:\n%s", got)
	}
	checkStatus(t, cl, 1, hooks.Active("Livepatch server v1.0.0 running; v2.0.0 is staged and waits for the schema-upgrade action on the leader"))

	cl.RunAction(t, 0, "schema-upgrade", nil)
	cl.Settle(t)
	checkRestarts(t, cl, 0, 1)
	for i := range 2 {
		if got := cl.Units[i].H.ReadFile(t, livepatch.ConfigPath); !strings.Contains(got, "log-level: debug") {
			t.Errorf("livepatch/%d runs without the configuration change:\n%s", i, got)
		}
	}
}

// TestUpgradeWithoutMigration: a new server that suits the schema rolls out at once, still
// one unit at a time, whatever order the units run upgrade-charm in.
func TestUpgradeWithoutMigration(t *testing.T) {
	cl := deployed(t, 3, 0)
	refresh(t, cl, binaryV2, lpt.Binary{Version: "v1.1.0", Latest: 3}, 2, 1)
	// Units that are not the leader ask for a restart and keep serving.
	checkRestarts(t, cl)
	checkStatus(t, cl, 2, hooks.Active(lpt.MessageActive+"; restart pending (binary changed): waiting for the leader to start the next rolling restart"))
	if got := cl.Bags[2][livepatch.PeerRestartWanted]; got != "0" {
		t.Errorf("livepatch/2 restart-wanted %q, want 0", got)
	}
	refresh(t, cl, binaryV2, lpt.Binary{Version: "v1.1.0", Latest: 3}, 0)
	cl.Settle(t)
	checkRestarts(t, cl, 0, 1, 2)
	for i := range 3 {
		checkStatus(t, cl, i, hooks.Active(lpt.MessageActive))
		if got := installed(t, cl, i); got != binaryV2 {
			t.Errorf("livepatch/%d runs %q, want v2", i, got)
		}
		if _, ok := cl.Bags[i][livepatch.PeerRestartWanted]; ok {
			t.Errorf("livepatch/%d still wants a restart", i)
		}
	}
	if got := cl.App[livepatch.PeerRestartGeneration]; got != "1" {
		t.Errorf("restart generation %q, want 1 (one rollout for every unit)", got)
	}
}

// TestConfigChangeRolls: a configuration change restarts the units one at a time too.
func TestConfigChangeRolls(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			cl := deployed(t, 3, 0)
			for _, i := range order {
				cl.States[i].Config["log_level"] = "debug"
				cl.Run(t, i, "config-changed")
			}
			cl.Settle(t)
			checkRestarts(t, cl, 0, 1, 2)
			for i := range 3 {
				checkStatus(t, cl, i, hooks.Active(lpt.MessageActive))
			}
		})
	}
}

// TestRollingRestartWaitsForUnhealthyUnit: a unit that does not answer healthy after its
// restart says so and holds the units after it, which keep serving.
func TestRollingRestartWaitsForUnhealthyUnit(t *testing.T) {
	for _, tt := range []struct {
		name    string
		answer  int
		problem string
	}{
		{"degraded", http.StatusServiceUnavailable, "livepatch-server degraded: database: dial tcp 10.0.0.9:5432: connection refused"},
		{"not answering", 0, "livepatch-server is not answering on 10.0.0.11:8080: see journalctl -u livepatch-server"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := deployed(t, 3, 0)
			healthy := false
			cl.Units[1].Health = func(string) int {
				if healthy {
					return http.StatusOK
				}
				return tt.answer
			}
			start := cl.Units[1].H.Clock.Now()
			cl.Server.SetSchema(3, 3)
			res := cl.RunAction(t, 0, "schema-upgrade", nil)
			if res.Err != nil || res.ActionFailed {
				t.Fatalf("schema-upgrade: %v %s", res.Err, res.ActionMessage)
			}
			cl.Settle(t)
			checkRestarts(t, cl, 0, 1)
			checkStatus(t, cl, 1, hooks.Blocked(livepatch.MessageUnhealthyPrefix+tt.problem+
				" (waited 2m0s)"+livepatch.MessageUnhealthySuffix))
			checkStatus(t, cl, 2, hooks.Active(lpt.MessageActive+"; restart queued behind livepatch/1 (rolling restart 1)"))
			// The wait ran on the unit's clock, bounded by HealthTimeout.
			waited := cl.Units[1].H.Clock.Now().Sub(start)
			if waited < livepatch.HealthTimeout || waited > livepatch.HealthTimeout+2*time.Second {
				t.Errorf("waited %s, want about %s", waited, livepatch.HealthTimeout)
			}
			if polls := cl.Units[1].StatusPolls; polls < 10 || polls > 200 {
				t.Errorf("%d polls", polls)
			}

			// Later hooks look again without restarting; once healthy, the rest follows.
			cl.Run(t, 1, "update-status")
			checkRestarts(t, cl, 0, 1)
			healthy = true
			cl.Run(t, 1, "update-status")
			cl.Settle(t)
			checkRestarts(t, cl, 0, 1, 2)
			for i := range 3 {
				checkStatus(t, cl, i, hooks.Active(lpt.MessageActive))
			}
		})
	}
}

// TestRestartFailureHoldsTheRest: systemctl restart failing holds the rollout too, and the
// restart is retried by the next hook.
func TestRestartFailureHoldsTheRest(t *testing.T) {
	cl := deployed(t, 3, 0)
	cl.Units[1].SystemctlFail["restart"] = true
	cl.RunAction(t, 0, "schema-upgrade", nil)
	cl.Settle(t)
	checkStatus(t, cl, 1, hooks.Blocked(livepatch.MessageRestartFailed))
	checkStatus(t, cl, 2, hooks.Active(lpt.MessageActive+"; restart queued behind livepatch/1 (rolling restart 1)"))
	cl.Units[1].SystemctlFail["restart"] = false
	cl.Run(t, 1, "update-status")
	cl.Settle(t)
	// livepatch/1 tried once, then restarted.
	checkRestarts(t, cl, 0, 1, 1, 2)
}

// TestUnitThatNeverStartedDoesNotHold: a unit that never ran its server (here, postgresql
// has not granted it access) does not hold the others.
func TestUnitThatNeverStartedDoesNotHold(t *testing.T) {
	cl := lpt.NewCluster(t, 3)
	cl.States[1].Relations[1] = lpt.DBRelation("livepatch/0", "livepatch/2")
	cl.Deploy(t)
	checkStatus(t, cl, 1, hooks.Waiting("Waiting for postgres to create database livepatch and grant access to livepatch/1"))
	cl.Restarts = nil
	cl.RunAction(t, 0, "schema-upgrade", nil)
	cl.Settle(t)
	checkRestarts(t, cl, 0, 2)
	// Granted later, it starts at the current generation and is not restarted again.
	cl.States[1].Relations[1] = lpt.DBRelation("livepatch/0", "livepatch/1", "livepatch/2")
	cl.Run(t, 1, "db-relation-changed")
	cl.Settle(t)
	checkRestarts(t, cl, 0, 2, 1)
	if got := cl.Bags[1][livepatch.PeerRestartedGeneration]; got != "1" {
		t.Errorf("livepatch/1 restarted-generation %q, want 1", got)
	}
}

// TestUpgradeCharmBeforeFirstStart installs the new server directly: nothing serves yet.
func TestUpgradeCharmBeforeFirstStart(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	delete(st.Config, "url_template")
	e.Install(t, st)
	e.SetBundledBinary(t, binaryV2)
	res := e.H.Run(t, "upgrade-charm", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := e.H.ReadFile(t, livepatch.ServerBinary); got != binaryV2 {
		t.Errorf("installed %q, want v2", got)
	}
	if _, err := os.Stat(filepath.Join(e.H.Root, livepatch.StagedBinary)); err == nil {
		t.Error("staged a binary although no server ran")
	}
}

// TestUpgradeHeldWhenInstalledServerNeedsUpgradeToo: when neither server suits the schema,
// nothing serves and the statuses say who must act.
func TestUpgradeHeldWhenInstalledServerNeedsUpgradeToo(t *testing.T) {
	cl := deployed(t, 2, 0)
	refresh(t, cl, binaryV2, lpt.Binary{Version: "v2.0.0", Latest: 5}, 0, 1)
	cl.Settle(t)
	checkStatus(t, cl, 0, hooks.Blocked(livepatch.MessageSchemaUpgrade))
	// A database the installed server cannot use either (restored from an older backup,
	// say): nothing can serve, the non-leader waits for the leader.
	cl.Server.SetSchema(2, 5)
	cl.Run(t, 1, "update-status")
	checkStatus(t, cl, 1, hooks.Waiting(livepatch.MessageSchemaLeaderWait))
	checkRestarts(t, cl)
}

func TestBlockerOrdersByUnitNumber(t *testing.T) {
	p := livepatch.Peer{Units: map[string]map[string]string{
		"livepatch/2":  {livepatch.PeerRestartedGeneration: "3"},
		"livepatch/10": {livepatch.PeerRestartedGeneration: "2"},
		"livepatch/9":  {livepatch.PeerRestartedGeneration: "2"},
		"livepatch/4":  {}, // never started
		"livepatch/5":  {livepatch.PeerRestartedGeneration: "garbage"},
	}}
	for _, tt := range []struct {
		unit string
		want string
	}{
		{"livepatch/0", ""},
		{"livepatch/3", ""},
		{"livepatch/9", ""},
		{"livepatch/10", "livepatch/9"},
		{"livepatch/11", "livepatch/9"},
	} {
		if got := p.Blocker(tt.unit, 3); got != tt.want {
			t.Errorf("Blocker(%s) = %q, want %q", tt.unit, got, tt.want)
		}
	}
	if diff := cmp.Diff([]string{"livepatch/9", "livepatch/10"}, p.Pending(3)); diff != "" {
		t.Errorf("Pending (-want +got):\n%s", diff)
	}
	if !slices.Equal(p.Pending(2), nil) {
		t.Errorf("Pending(2) = %v", p.Pending(2))
	}
}
