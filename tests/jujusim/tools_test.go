package jujusim_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestHookTools(t *testing.T) {
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, cliActions), NumUnits: 2})
	sc.set(t, "db-relation-joined", `[ "$JUJU_UNIT_NAME" != srv/0 ] || relation-set port=5432`)
	id := relate(t, m, "cli", "srv")
	waitIdle(t, m)
	rel := "db:" + itoa(id)
	// Written as if cli/0 led; execAs swaps cli/0 and cli/1 when cli/1 does.
	writtenWithLeaders(t, m, sc, "cli")
	srvAddr, _ := m.UnitAddress("srv/0")
	cliAddr, _ := m.UnitAddress(rename(m, "cli/0"))

	tests := []struct {
		unit   string
		cmd    string
		code   int
		stdout string
		stderr string
	}{
		{"cli/0", "is-leader", 0, "True\n", ""},
		{"cli/0", "is-leader --format=json", 0, "true\n", ""},
		{"cli/1", "is-leader", 0, "False\n", ""},
		{"cli/0", "config-get port", 0, "8080\n", ""},
		{"cli/0", "config-get debug", 0, "False\n", ""},
		{"cli/0", "config-get nope", 0, "", ""},
		{"cli/0", "config-get nope --format json", 0, "null\n", ""},
		{"cli/0", "config-get --format yaml", 0, "debug: false\nname: x\nport: 8080\n", ""},
		{"cli/0", "config-get port --all", 2, "", "ERROR cannot use argument --all together with key \"port\"\n"},
		{"cli/0", "config-get --format xml", 2, "", "ERROR invalid value \"xml\" for option --format: unknown format \"xml\"\n"},
		{"cli/0", "config-get --bogus", 2, "", "ERROR flag provided but not defined: --bogus\n"},
		{"cli/0", "relation-ids db", 0, rel + "\n", ""},
		{"cli/0", "relation-ids nope --format json", 0, "[]\n", ""},
		{"cli/0", "relation-ids", 2, "", "ERROR no endpoint name specified\n"},
		{"cli/0", "relation-list -r " + rel, 0, "srv/0\n", ""},
		{"cli/0", "relation-list -r " + itoa(id) + " --app", 0, "srv\n", ""},
		{"cli/0", "relation-list --format=json -r " + rel, 0, "[\"srv/0\"]\n", ""},
		{"cli/0", "relation-list", 2, "", "ERROR no relation id specified\n"},
		{"cli/0", "relation-list -r db:99", 2, "", "ERROR invalid value \"db:99\" for option -r: relation not found\n"},
		{"cli/0", "relation-list -r db:x", 2, "", "ERROR invalid value \"db:x\" for option -r: invalid relation id\n"},
		{"cli/0", "relation-get -r " + rel + " port srv/0", 0, "5432\n", ""},
		{"cli/0", "relation-get port srv/0 -r " + rel + " --format=json", 0, "\"5432\"\n", ""},
		{"cli/0", "relation-get -r " + rel + " missing srv/0 --format=json", 0, "null\n", ""},
		{"cli/0", "relation-get -r " + rel + " private-address srv/0", 0, srvAddr + "\n", ""},
		{"cli/0", "relation-get -r " + rel + " - cli/0 --format json", 0,
			`{"egress-subnets":"` + cliAddr + `/32","ingress-address":"` + cliAddr + `","private-address":"` + cliAddr + `"}` + "\n", ""},
		{"cli/0", "relation-get -r " + rel + " - srv", 2, "", "ERROR expected unit name, got application name \"srv\"\n"},
		{"cli/0", "relation-get -r " + rel, 2, "", "ERROR no unit or application specified\n"},
		{"cli/0", "relation-get -r " + rel + " - bad/0", 1, "", "ERROR unknown unit bad/0\n"},
		{"cli/0", "relation-get -r " + rel + " --app - cli", 0, "{}\n", ""},
		{"cli/1", "relation-get -r " + rel + " --app - cli", 1, "", "ERROR permission denied\n"},
		{"cli/0", "relation-set -r " + rel + " haha", 2, "", "ERROR expected \"key=value\", got \"haha\"\n"},
		{"cli/0", "relation-set -r " + rel + " a=1 a=2", 2, "", "ERROR key \"a\" specified more than once\n"},
		{"cli/0", "relation-set -r " + rel + " --format json", 0, "", "--format flag deprecated for command \"relation-set\""},
		{"cli/1", "relation-set -r " + rel + " --app a=b", 1, "", "ERROR cannot write relation settings\n"},
		{"cli/0", "status-set foo", 2, "", "ERROR invalid status \"foo\", expected one of [maintenance blocked waiting active]\n"},
		{"cli/0", "status-set active a b", 2, "", "ERROR unrecognized args: [\"b\"]\n"},
		{"cli/1", "status-set --application=True active", 1, "", "ERROR this unit is not the leader\n"},
		{"cli/0", "status-get", 0, "unknown\n", ""},
		{"cli/0", "status-get --format=json --include-data", 0, "{\"message\":\"\",\"status\":\"unknown\",\"status-data\":{}}\n", ""},
		{"cli/0", "action-get", 1, "", "ERROR not running an action\n"},
		{"cli/0", "action-set Bad=1", 2, "", "ERROR key \"Bad\" must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods\n"},
		{"cli/0", "action-set stdout=1", 2, "", "ERROR cannot set reserved action key \"stdout\"\n"},
		{"cli/0", "action-set a=1", 1, "", "ERROR not running an action\n"},
		{"cli/0", "action-log", 2, "", "ERROR no message specified\n"},
		{"cli/0", "leader-get a=b", 2, "", "ERROR invalid key \"a=b\"\n"},
		{"cli/1", "leader-set a=b", 1, "", "ERROR cannot write leadership settings: cannot write settings: not the leader\n"},
		{"cli/0", "juju-log", 2, "", "ERROR no message specified\n"},
		{"cli/0", "juju-log -l WARNING -- hello there", 0, "", ""},
		{"cli/0", "unit-get private-address", 0, cliAddr + "\n", ""},
		{"cli/0", "unit-get nope", 2, "", "ERROR unknown setting \"nope\"\n"},
		{"cli/0", "network-get db --ingress-address", 0, cliAddr + "\n", ""},
		{"cli/0", "network-get db --egress-subnets --format=json", 0, "[\"" + cliAddr + "/32\"]\n", ""},
		{"cli/0", "open-port 80x", 2, "", "ERROR expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp; got \"80x\"\n"},
		{"cli/0", "opened-ports --format=json", 0, "[]\n", ""},
		{"cli/0", "state-get --format=json", 0, "null\n", ""},
		{"cli/0", "state-get x --strict", 1, "", "ERROR \"x\" not found\n"},
		{"cli/0", "application-version-set", 2, "", "ERROR no version specified\n"},
	}
	for _, tt := range tests {
		t.Run(tt.unit+" "+tt.cmd, func(t *testing.T) {
			res := execAs(t, m, tt.unit, strings.Fields(tt.cmd)...)
			got := jujusim.ExecResult{Code: tt.code, Stdout: tt.stdout, Stderr: tt.stderr}
			if diff := cmp.Diff(got, res); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestToolChangesCommitOnlyOnSuccess(t *testing.T) {
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	id := relate(t, m, "cli", "srv")
	waitIdle(t, m)
	rel := "db:" + itoa(id)
	run := func(script string) jujusim.ExecResult {
		t.Helper()
		res, err := m.Exec(t.Context(), "cli/0", "sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run(`relation-set -r ` + rel + ` lost=1; state-set lost=1; open-port 81; status-set active kept; leader-set kept=1; exit 1`)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1: %s", res.Code, res.Stderr)
	}
	res = run(`printf '{"a": 1, "b": true, "c": null}' | relation-set -r ` + rel + ` --file - c=3 &&
		relation-set -r ` + rel + ` --app shared=yes && state-set k=v && open-port 8080 && open-port 1000-2000/udp &&
		relation-get -r ` + rel + ` a cli/0`)
	if res.Code != 0 || res.Stdout != "1\n" {
		t.Fatalf("exec = %+v; want own pending data readable", res)
	}
	data, _ := m.RelationData(id, "cli/0")
	if data["a"] != "1" || data["b"] != "true" || data["c"] != "3" || data["lost"] != "" {
		t.Errorf("cli/0 bag = %v", data)
	}
	app, _ := m.RelationData(id, "cli")
	if diff := cmp.Diff(map[string]string{"shared": "yes"}, app); diff != "" {
		t.Errorf("cli app bag (-want +got):\n%s", diff)
	}
	st, _ := m.UnitState("cli/0")
	if diff := cmp.Diff(map[string]string{"k": "v"}, st); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"kept": "1"}, m.LeaderSettings("cli")); diff != "" {
		t.Errorf("leader settings (-want +got):\n%s", diff)
	}
	u, _ := m.Status().Unit("cli/0")
	if diff := cmp.Diff([]string{"1000-2000/udp", "8080/tcp"}, u.OpenPorts); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if u.Workload.Message != "kept" {
		t.Errorf("status = %+v, want the one set by the failed exec", u.Workload)
	}
	// The committed unit data cascades to the remote unit, the app data too.
	waitIdle(t, m)
	hooks := m.HookNames("srv/0")
	if n := strings.Count(strings.Join(hooks, "\n"), "db-relation-changed"); n != 3 {
		t.Errorf("srv/0 db-relation-changed ran %d times, want 3 (after joined, unit data, app data): %v", n, hooks)
	}
	// Leaving it for the API: relation-set from Exec and from hooks share the same path.
}

// TestHookToolTextsAsJuju checks outputs, errors and exit codes against the texts of Juju's
// jujuc commands: state in (a lone unit of a peered application), tool run, log and output out.
func TestHookToolTextsAsJuju(t *testing.T) {
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	waitIdle(t, m)
	tests := []struct {
		cmd    string
		code   int
		stdout string
		stderr string
	}{
		{`relation-list -r "$(relation-ids cluster)" --format=json`, 0, "[]\n", ""},
		{`relation-list -r "$(relation-ids cluster)"`, 0, "", ""},
		{`status-set`, 2, "", "ERROR invalid args, require <status> [message]\n"},
		{`status-set error`, 2, "", "ERROR invalid status \"error\", expected one of [maintenance blocked waiting active]\n"},
		{`juju-log -l warn warned`, 0, "", ""},
		{`juju-log --log-level=bogus leveled`, 0, "", ""},
		{`juju-log --debug --format json formatted`, 0, "", "--format flag deprecated for command \"juju-log\""},
		{`open-port 80 --format json`, 0, "", "--format flag deprecated for command \"open-port\""},
		{`juju-log -l`, 2, "", "ERROR flag needs an argument: -l\n"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			res, err := m.Exec(t.Context(), "srv/0", "sh", "-c", tt.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(jujusim.ExecResult{Code: tt.code, Stdout: tt.stdout, Stderr: tt.stderr}, res); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	var got []string
	for _, e := range m.Logs() {
		switch {
		case e.Unit != "srv/0":
		case e.Message == "warned", e.Message == "leveled", e.Message == "formatted",
			strings.HasPrefix(e.Message, "Specified log level"):
			got = append(got, e.Level+" "+e.Message)
		}
	}
	want := []string{
		"WARNING warned",
		`WARNING Specified log level of "bogus" is not valid`,
		"INFO leveled",
		"DEBUG formatted",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("debug log (-want +got):\n%s", diff)
	}
}
