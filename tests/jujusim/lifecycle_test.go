package jujusim_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// envOf parses an `env -0` dump.
func envOf(t *testing.T, sc scripts, name string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kv := range splitNUL([]byte(sc.read(t, name))) {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

func TestHookEnvironment(t *testing.T) {
	t.Setenv("SIMTEST_LEAK", "from the test process")
	m, sc := newModel(t)
	dump := `env -0 > "$SIMTEST_SCRIPTS/env-$(echo $JUJU_UNIT_NAME | tr / -)-$hook"`
	for _, h := range []string{"install", "juju-info-relation-created", "juju-info-relation-departed", "greet"} {
		sc.set(t, h, dump)
	}
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, cliActions)})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "sub", subMeta, "", "")})
	id := relate(t, m, "cli", "sub")
	waitIdle(t, m)
	a, err := m.RunAction("cli/0", "greet", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveRelation("cli", "sub"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)

	root, _ := m.UnitRoot("cli/0")
	install := envOf(t, sc, "env-cli-0-install")
	for k, want := range map[string]string{
		"JUJU_DISPATCH_PATH": "hooks/install", "JUJU_HOOK_NAME": "install", "JUJU_UNIT_NAME": "cli/0",
		"JUJU_MODEL_UUID": m.UUID(), "JUJU_MODEL_NAME": "sim", "JUJU_MACHINE_ID": "0", "JUJU_PRINCIPAL_UNIT": "",
		"JUJU_AGENT_SOCKET_NETWORK": "unix", "JUJU_SIM_ROOT": root, "JUJU_VERSION": "3.6.4",
		"LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
	} {
		if got, ok := install[k]; !ok || got != want {
			t.Errorf("install %s = %q (set %v), want %q", k, got, ok, want)
		}
	}
	if _, ok := install["SIMTEST_LEAK"]; ok {
		t.Error("the hook environment inherits the agent's environment; it must be built from scratch")
	}
	if !strings.HasPrefix(install["PATH"], install["JUJU_CHARM_DIR"][:strings.Index(install["JUJU_CHARM_DIR"], "/var/lib/juju")]+"/var/lib/juju/tools/unit-cli-0:") {
		t.Errorf("PATH %q does not start with the tools dir", install["PATH"])
	}
	if wd, _ := os.Getwd(); install["PWD"] == wd {
		t.Error("hook cwd is the test's cwd, want the charm dir")
	}

	created := envOf(t, sc, "env-sub-0-juju-info-relation-created")
	want := map[string]string{"JUJU_RELATION": "juju-info", "JUJU_RELATION_ID": "juju-info:" + itoa(id), "JUJU_REMOTE_APP": "cli", "JUJU_REMOTE_UNIT": "", "JUJU_PRINCIPAL_UNIT": "cli/0"}
	for k, v := range want {
		if got, ok := created[k]; !ok || got != v {
			t.Errorf("relation-created %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	departed := envOf(t, sc, "env-sub-0-juju-info-relation-departed")
	if departed["JUJU_REMOTE_UNIT"] != "cli/0" || departed["JUJU_DEPARTING_UNIT"] != "cli/0" {
		t.Errorf("departed: remote %q departing %q", departed["JUJU_REMOTE_UNIT"], departed["JUJU_DEPARTING_UNIT"])
	}
	action := envOf(t, sc, "env-cli-0-greet")
	if v, ok := action["JUJU_HOOK_NAME"]; !ok || v != "" || action["JUJU_ACTION_NAME"] != "greet" || action["JUJU_DISPATCH_PATH"] != "actions/greet" || action["JUJU_ACTION_UUID"] != a.ID {
		t.Errorf("action env: hook %q (%v) name %q path %q uuid %q", v, ok, action["JUJU_ACTION_NAME"], action["JUJU_DISPATCH_PATH"], action["JUJU_ACTION_UUID"])
	}
	// Removing the container relation tears the subordinate down.
	if diff := cmp.Diff([]string{"juju-info-relation-departed cli/0", "juju-info-relation-broken", "stop", "remove"}, m.HookNames("sub/0")[7:]); diff != "" {
		t.Errorf("sub/0 teardown (-want +got):\n%s", diff)
	}
	if got := m.HookNames("cli/0"); !slices.Equal(got[len(got)-2:], []string{"juju-info-relation-departed sub/0", "juju-info-relation-broken"}) {
		t.Errorf("cli/0 hooks: %v", got)
	}
	if _, ok := m.Status().Unit("sub/0"); ok {
		t.Error("sub/0 still in status")
	}
}

func TestRelationListDuringDeparture(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), NumUnits: 3})
	sc.set(t, "cluster-relation-departed", `
echo "$JUJU_UNIT_NAME departing=$JUJU_DEPARTING_UNIT list=$(relation-list | tr '\n' ,) data=$(relation-get private-address $JUJU_REMOTE_UNIT)" >> "$SIMTEST_SCRIPTS/departed"`)
	waitIdle(t, m)
	if err := m.RemoveUnit("srv/2"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	lines := strings.Split(strings.TrimSpace(sc.read(t, "departed")), "\n")
	want := []string{
		"srv/0 departing=srv/2 list=srv/1, data=",
		"srv/1 departing=srv/2 list=srv/0, data=",
		"srv/2 departing=srv/2 list= data=",
		"srv/2 departing=srv/2 list=srv/1, data=",
	}
	for i := range lines {
		lines[i] = lines[i][:strings.Index(lines[i], "data=")+5]
	}
	slices.Sort(lines)
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("departed hooks (-want +got):\n%s", diff)
	}
	// Departed units' data stays readable for the life of the relation.
	res, err := m.Exec(t.Context(), "srv/0", "relation-get", "-r", "cluster:0", "private-address", "srv/2")
	if err != nil || res.Code != 0 || res.Stdout == "" {
		t.Errorf("reading departed unit: %+v %v", res, err)
	}
}

func TestUpdateStatusInterval(t *testing.T) {
	m, err := jujusim.New(jujusim.Options{Dir: t.TempDir(), UpdateStatusInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = m.WaitHistory(ctx, func(h []jujusim.HookRecord) bool {
		n := 0
		for _, r := range h {
			if r.Hook == "update-status" {
				n++
			}
		}
		return n >= 2
	})
	if err != nil {
		t.Fatal(err)
	}
	hooks := m.HookNames("srv/0")
	if i := slices.Index(hooks, "update-status"); i < slices.Index(hooks, "start") {
		t.Errorf("update-status before start: %v", hooks)
	}
}

// TestUpgradeBetweenHooks: an upgrade asked for while a hook runs waits for it: the running
// hook keeps the old charm to its end, then the new charm is put in place as a step of its
// own, then upgrade-charm and config-changed run on it. Files the charm wrote stay.
func TestUpgradeBetweenHooks(t *testing.T) {
	m, sc := newModel(t)
	v1 := testCharm(t, "cli", cliMeta, cliConfig, "")
	v2 := testCharm(t, "cli", cliMeta, cliConfig, "")
	for dir, v := range map[string]string{v1: "1", v2: "2"} {
		if err := os.WriteFile(filepath.Join(dir, "VERSION"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deploy(t, m, jujusim.DeployArgs{Charm: v1})
	waitIdle(t, m)
	record := `echo "$JUJU_HOOK_NAME $(cat VERSION) $(cat own 2>/dev/null)" >> "$SIMTEST_SCRIPTS/seen"`
	sc.set(t, "upgrade-charm", record)
	sc.set(t, "config-changed", `
echo kept > own
if [ -f "$SIMTEST_SCRIPTS/block" ]; then
	rm "$SIMTEST_SCRIPTS/block"
	i=0
	until [ -f "$SIMTEST_SCRIPTS/release" ]; do
		i=$((i+1)); [ $i -lt 1200 ] || exit 1
		sleep 0.05
	done
fi
`+record)
	if err := os.WriteFile(filepath.Join(string(sc), "block"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.SetConfig("cli", map[string]string{"name": "y"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err := m.Wait(ctx, func(st *jujusim.Status) bool {
		u, _ := st.Unit("cli/0")
		return u.Agent.Message == "running config-changed hook"
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Upgrade("cli", v2); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(string(sc), "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	want := "config-changed 1 kept\nupgrade-charm 2 kept\nconfig-changed 2 kept\n"
	if got := sc.read(t, "seen"); got != want {
		t.Errorf("hooks saw (hook, VERSION, own file):\n%s\nwant:\n%s", got, want)
	}
	h := m.HookNames("cli/0")
	if diff := cmp.Diff([]string{"config-changed", "upgrade-charm", "config-changed"}, h[len(h)-3:]); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
}
