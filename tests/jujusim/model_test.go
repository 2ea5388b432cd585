package jujusim_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/juju/clock/testclock"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func deploy(t *testing.T, m *jujusim.Model, args jujusim.DeployArgs) {
	t.Helper()
	if _, err := m.Deploy(args); err != nil {
		t.Fatal(err)
	}
}

func relate(t *testing.T, m *jujusim.Model, a, b string) int {
	t.Helper()
	id, err := m.Relate(a, b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestDeployAndRelateOrder(t *testing.T) {
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), NumUnits: 2})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, cliActions)})
	waitIdle(t, m)

	leader, minion := leaderAndMinion(t, m, "srv")
	want := map[string][]string{
		leader: {"install", "cluster-relation-created", "leader-elected", "config-changed", "start",
			"cluster-relation-joined " + minion, "cluster-relation-changed " + minion},
		minion: {"install", "cluster-relation-created", "leader-settings-changed", "config-changed", "start",
			"cluster-relation-joined " + leader, "cluster-relation-changed " + leader},
		"cli/0": {"install", "leader-elected", "config-changed", "start"},
	}
	for unit, hooks := range want {
		if diff := cmp.Diff(hooks, m.HookNames(unit)); diff != "" {
			t.Errorf("%s hooks (-want +got):\n%s", unit, diff)
		}
	}

	relate(t, m, "cli", "srv")
	waitIdle(t, m)
	got := m.HookNames("cli/0")[4:]
	if got[0] != "db-relation-created" {
		t.Errorf("first relation hook = %q, want db-relation-created", got[0])
	}
	// Within the relation, joined(u) is directly followed by changed(u).
	var joined []string
	for i, h := range got {
		if r, ok := strings.CutPrefix(h, "db-relation-joined "); ok {
			joined = append(joined, r)
			if i+1 >= len(got) || got[i+1] != "db-relation-changed "+r {
				t.Errorf("joined %s not followed by its changed: %v", r, got)
			}
		}
	}
	slices.Sort(joined)
	if diff := cmp.Diff([]string{"srv/0", "srv/1"}, joined); diff != "" {
		t.Errorf("joined (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"db-relation-created", "db-relation-joined cli/0", "db-relation-changed cli/0"}, m.HookNames("srv/1")[7:]); diff != "" {
		t.Errorf("srv/1 relation hooks (-want +got):\n%s", diff)
	}
}

func TestRelationDataCommitAndCascade(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	sc.set(t, "db-relation-joined", `
if [ "$JUJU_UNIT_NAME" = srv/0 ]; then
	relation-set host="$(unit-get private-address)" port=5432
	if is-leader >/dev/null && [ "$(is-leader)" = True ]; then relation-set --app database=main; fi
fi
`)
	sc.set(t, "db-relation-changed", `
if [ "$JUJU_UNIT_NAME" = cli/0 ]; then
	echo "remote=$JUJU_REMOTE_UNIT host=$(relation-get host srv/0) app=$(relation-get --app database srv)" >> "$SIMTEST_SCRIPTS/seen"
fi
`)
	id := relate(t, m, "cli:db", "srv:db")
	waitIdle(t, m)

	addr, _ := m.UnitAddress("srv/0")
	seen := strings.Split(strings.TrimSpace(sc.read(t, "seen")), "\n")
	if last := seen[len(seen)-1]; !strings.Contains(last, "host="+addr) || !strings.Contains(last, "app=main") {
		t.Errorf("cli/0 last saw %q, want host=%s app=main", last, addr)
	}
	data, err := m.RelationData(id, "srv/0")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"host": addr, "port": "5432", "private-address": addr, "ingress-address": addr, "egress-subnets": addr + "/32"}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("srv/0 bag (-want +got):\n%s", diff)
	}
	// The writer never gets relation-changed for its own data; cli wrote nothing.
	if n := strings.Count(strings.Join(m.HookNames("srv/0"), "\n"), "db-relation-changed"); n != 1 {
		t.Errorf("srv/0 ran db-relation-changed %d times, want 1 (the one after joined)", n)
	}

	// A failing hook discards its relation data and holds later hooks until resolved.
	sc.set(t, "config-changed", `
if [ "$JUJU_UNIT_NAME" = srv/0 ]; then
	relation-set -r db:`+itoa(id)+` port=1
	status-set blocked "kept even though the hook fails"
	exit 3
fi
`)
	// Force config-changed on srv by upgrading it, which also runs upgrade-charm first.
	if err := m.Upgrade("srv", testCharm(t, "srv", srvMeta, "", "")); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	st := m.Status()
	u, _ := st.Unit("srv/0")
	if u.Agent.Current != "error" || u.Agent.Message != `hook failed: "config-changed"` {
		t.Errorf("srv/0 agent = %+v, want error hook failed: \"config-changed\"", u.Agent)
	}
	if u.Workload.Current != "error" {
		t.Errorf("srv/0 workload shown as %q, want error", u.Workload.Current)
	}
	data, _ = m.RelationData(id, "srv/0")
	if data["port"] != "5432" {
		t.Errorf("port = %q after failed hook, want 5432 (change discarded)", data["port"])
	}
	// Held: update-status does not run while in error.
	m.TriggerUpdateStatus()
	waitIdle(t, m)
	if slices.Contains(m.HookNames("srv/0"), "update-status") {
		t.Errorf("update-status ran on a unit in error")
	}
	sc.set(t, "config-changed", "")
	if err := m.Resolved("srv/0", true); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	hooks := m.HookNames("srv/0")
	tail := hooks[len(hooks)-4:]
	if diff := cmp.Diff([]string{"upgrade-charm", "config-changed (exit 3)", "config-changed", "update-status"}, tail); diff != "" {
		t.Errorf("srv/0 hooks (-want +got):\n%s", diff)
	}
	u, _ = m.Status().Unit("srv/0")
	if u.Workload.Current != "blocked" || u.Workload.Message != "kept even though the hook fails" {
		t.Errorf("srv/0 workload = %+v, want the status set by the failed hook", u.Workload)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestActions(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, cliActions)})
	sc.set(t, "greet", `
action-log "greeting $(action-get who)"
action-set result.text="hello $(action-get who) x$(action-get times)" result.hook="$JUJU_HOOK_NAME"
if [ "$(action-get who)" = bad ]; then action-fail "bad name"; fi
`)
	waitIdle(t, m)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	a, err := m.RunAction("cli/leader", "greet", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"result": map[string]any{"text": "hello world x1", "hook": ""}}
	if res.Status != "completed" || !cmp.Equal(want, res.Results) || !slices.Equal(res.Log, []string{"greeting world"}) {
		t.Errorf("result = %+v, want completed with %v", res, want)
	}

	a, err = m.RunAction("cli/0", "greet", map[string]any{"who": "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ = a.Wait(ctx); res.Status != "failed" || res.Message != "bad name" {
		t.Errorf("result = %+v, want failed: bad name", res)
	}

	for _, params := range []map[string]any{{"who": 3}, {"unknown": "x"}} {
		if _, err := m.RunAction("cli/0", "greet", params); err == nil {
			t.Errorf("RunAction(%v) succeeded, want a validation error", params)
		}
	}
	if _, err := m.RunAction("cli/0", "nope", nil); err == nil {
		t.Error("RunAction(nope) succeeded")
	}

	// Actions still run while the unit is in a hook error.
	sc.set(t, "config-changed", "exit 1")
	if err := m.SetConfig("cli", map[string]string{"name": "y"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	a, _ = m.RunAction("cli/0", "greet", map[string]any{"who": "err"})
	if res, _ = a.Wait(ctx); res.Status != "completed" {
		t.Errorf("action in error state: %+v", res)
	}
}

func TestSubordinateLifecycle(t *testing.T) {
	clk := testclock.NewClock(time.Now())
	m, _ := newModel(t, func(o *jujusim.Options) { o.Clock = clk })
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, ""), NumUnits: 2})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "sub", subMeta, "", "")})
	relate(t, m, "cli", "sub")
	waitIdle(t, m)
	st := m.Status()
	if diff := cmp.Diff([]string{"sub/0", "sub/1"}, st.UnitNames("sub")); diff != "" {
		t.Fatalf("subordinates (-want +got):\n%s", diff)
	}
	// Remove the cli leader, with its subordinate.
	gone, stays := leaderAndMinion(t, m, "cli")
	principal, _ := st.Unit(gone)
	var sub string
	for name := range principal.Subordinates {
		sub = name
	}
	wantSub := []string{"install", "juju-info-relation-created", "leader-elected", "config-changed", "start",
		"juju-info-relation-joined " + gone, "juju-info-relation-changed " + gone}
	if m.Leader("sub") != sub {
		wantSub[2] = "leader-settings-changed"
	}
	if diff := cmp.Diff(wantSub, m.HookNames(sub)); diff != "" {
		t.Errorf("%s hooks (-want +got):\n%s", sub, diff)
	}
	subAddr, _ := m.UnitAddress(sub)
	if subAddr != principal.PublicAddress {
		t.Errorf("subordinate address %s, principal %s: not co-located", subAddr, principal.PublicAddress)
	}
	leases := 1
	if m.Leader("sub") == sub {
		leases = 2
	}

	if err := m.RemoveUnit(gone); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	wantTeardown := []string{"juju-info-relation-departed " + gone, "juju-info-relation-broken", "stop", "remove"}
	got := m.HookNames(sub)
	if diff := cmp.Diff(wantTeardown, got[len(got)-4:]); diff != "" {
		t.Errorf("%s teardown (-want +got):\n%s", sub, diff)
	}
	got = m.HookNames(gone)
	if diff := cmp.Diff([]string{"juju-info-relation-departed " + sub, "juju-info-relation-broken", "stop", "remove"}, got[len(got)-4:]); diff != "" {
		t.Errorf("%s teardown (-want +got):\n%s", gone, diff)
	}
	if names := m.Status().UnitNames("sub"); len(names) != 1 {
		t.Errorf("subordinates after removal: %v", names)
	}
	// The gone leader's lease lapses at most a lease duration later; only then is there a
	// leader again.
	if l := m.Leader("cli"); l != "" {
		t.Errorf("leader right after removal = %q, want none until the lease lapses", l)
	}
	if err := clk.WaitAdvance(time.Minute, 10*time.Second, leases); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, m, "cli")
	waitIdle(t, m)
	if m.Leader("cli") != stays {
		t.Errorf("leader = %q, want %s", m.Leader("cli"), stays)
	}
	if h := m.HookNames(stays); h[len(h)-1] != "leader-elected" {
		t.Errorf("%s did not run leader-elected last: %v", stays, h)
	}
}

// waitLeader waits until app has a leader.
func waitLeader(t *testing.T, m *jujusim.Model, app string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err := m.Wait(ctx, func(st *jujusim.Status) bool {
		for _, name := range st.UnitNames(app) {
			if u, _ := st.Unit(name); u.Leader {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfig(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, ""), Config: map[string]any{"port": 9000}})
	sc.set(t, "config-changed", `config-get --format=json > "$SIMTEST_SCRIPTS/config.json"`)
	waitIdle(t, m)
	if got := sc.read(t, "config.json"); got != `{"debug":false,"name":"x","port":9000}`+"\n" {
		t.Errorf("config-get = %s", got)
	}
	for _, bad := range []map[string]string{{"port": "many"}, {"nope": "1"}} {
		if err := m.SetConfig("cli", bad); err == nil {
			t.Errorf("SetConfig(%v) succeeded", bad)
		}
	}
	if err := m.SetConfig("cli", map[string]string{"port": "", "debug": "true", "ratio": "0.5"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if got := sc.read(t, "config.json"); got != `{"debug":true,"name":"x","port":8080,"ratio":0.5}`+"\n" {
		t.Errorf("config-get = %s", got)
	}
	// Setting the same values again changes nothing: no config-changed.
	n := len(m.HookNames("cli/0"))
	if err := m.SetConfig("cli", map[string]string{"debug": "true"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if got := len(m.HookNames("cli/0")); got != n {
		t.Errorf("hooks ran after a no-op config change: %v", m.HookNames("cli/0")[n:])
	}
}

// TestRelationLimit: a second relation on an endpoint with limit 1 is refused with Juju's
// quota error and runs no hook; once the first is gone, the endpoint takes a new one.
func TestRelationLimit(t *testing.T) {
	m, _ := newModel(t)
	const oneMeta = `
name: one
summary: one database only
description: one database only
requires:
  db: {interface: testdb, limit: 1}
`
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "one", oneMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), Application: "a"})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), Application: "b"})
	relate(t, m, "one", "a")
	waitIdle(t, m)
	before := len(m.History())
	_, err := m.Relate("one", "b:db")
	want := `cannot add relation "one:db b:db": establishing a new relation for one:db would exceed its maximum relation limit of 1 (quota limit exceeded)`
	if err == nil || err.Error() != want || !errors.Is(err, jujusim.ErrQuotaLimitExceeded) {
		t.Fatalf("second relation: err = %v, want %q", err, want)
	}
	waitIdle(t, m)
	if got := m.History()[before:]; len(got) != 0 {
		t.Errorf("hooks ran for a refused relation: %v", got)
	}
	if err := m.RemoveRelation("one", "a"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	relate(t, m, "one", "b")
}

// TestScopeBeforeRelationCreated: a unit enters the relation's scope before its
// relation-created hook runs, so the remote unit joins it (relation-list, relation-joined) and
// acts while cli/0 is still in relation-created, before cli/0's first relation-set.
func TestScopeBeforeRelationCreated(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitIdle(t, m)
	// cli/0's relation-created waits (bounded) for srv/0 to have joined it.
	sc.set(t, "db-relation-created", `
if [ "$JUJU_UNIT_NAME" = cli/0 ]; then
	i=0
	until [ -f "$SIMTEST_SCRIPTS/joined" ]; do
		i=$((i+1)); [ $i -lt 1200 ] || exit 1
		sleep 0.05
	done
	relation-set x=1
fi`)
	sc.set(t, "db-relation-joined", `
if [ "$JUJU_UNIT_NAME" = srv/0 ]; then
	{ relation-list; echo "x=$(relation-get x "$JUJU_REMOTE_UNIT")"; } > "$SIMTEST_SCRIPTS/joined.tmp"
	mv "$SIMTEST_SCRIPTS/joined.tmp" "$SIMTEST_SCRIPTS/joined"
fi`)
	id := relate(t, m, "cli", "srv")
	waitIdle(t, m)
	if got, want := sc.read(t, "joined"), "cli/0\nx=\n"; got != want {
		t.Errorf("srv/0 in relation-joined saw %q, want %q", got, want)
	}
	if got := m.HookNames("cli/0")[4]; got != "db-relation-created" {
		t.Errorf("cli/0 hook after start = %q, want db-relation-created (exit 0)", got)
	}
	if data, _ := m.RelationData(id, "cli/0"); data["x"] != "1" {
		t.Errorf("cli/0 bag = %v, want x=1 from relation-created", data)
	}
	want := []string{"db-relation-created", "db-relation-joined cli/0", "db-relation-changed cli/0", "db-relation-changed cli/0"}
	if diff := cmp.Diff(want, m.HookNames("srv/0")[5:]); diff != "" {
		t.Errorf("srv/0 relation hooks (-want +got):\n%s", diff)
	}
}

// TestPeerAppDataChangeReachesWriter: the leader's write to the peer application bag fires
// relation-changed (no remote unit, the application itself) on every unit, the leader
// included, as Juju 3.6 does.
func TestPeerAppDataChangeReachesWriter(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), NumUnits: 2})
	waitIdle(t, m)
	leader, minion := leaderAndMinion(t, m, "srv")
	n := map[string]int{leader: len(m.HookNames(leader)), minion: len(m.HookNames(minion))}
	sc.set(t, "cluster-relation-changed", `[ -n "$JUJU_REMOTE_UNIT" ] || echo "$JUJU_UNIT_NAME $JUJU_REMOTE_APP $(relation-get --app shared srv)" >> "$SIMTEST_SCRIPTS/app-changed"`)
	res, err := m.Exec(t.Context(), leader, "sh", "-c", `relation-set -r "$(relation-ids cluster)" --app shared=1`)
	if err != nil || res.Code != 0 {
		t.Fatalf("relation-set --app: %+v %v", res, err)
	}
	waitIdle(t, m)
	for _, u := range []string{leader, minion} {
		if diff := cmp.Diff([]string{"cluster-relation-changed srv"}, m.HookNames(u)[n[u]:]); diff != "" {
			t.Errorf("%s hooks after the leader's write (-want +got):\n%s", u, diff)
		}
	}
	got := strings.Split(strings.TrimSpace(sc.read(t, "app-changed")), "\n")
	slices.Sort(got)
	want := []string{leader + " srv 1", minion + " srv 1"}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relation-changed seen (-want +got):\n%s", diff)
	}
}
