package hooks_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
)

func TestDispatch(t *testing.T) {
	tests := []struct {
		path, argv0        string
		wantKind, wantName string
		wantErr            bool
	}{
		{path: "hooks/install", argv0: "./dispatch", wantKind: "hooks", wantName: "install"},
		{path: "actions/schema-upgrade", argv0: "./dispatch", wantKind: "actions", wantName: "schema-upgrade"},
		{argv0: "/var/lib/juju/agents/unit-a-0/charm/hooks/db-relation-changed", wantKind: "hooks", wantName: "db-relation-changed"},
		{argv0: "actions/restart", wantKind: "actions", wantName: "restart"},
		{argv0: "./dispatch", wantErr: true},
		{path: "bogus/x", wantErr: true},
		{path: "hooks/", wantErr: true},
	}
	for _, tt := range tests {
		kind, name, err := hooks.Dispatch(tt.path, tt.argv0)
		if (err != nil) != tt.wantErr || kind != tt.wantKind || name != tt.wantName {
			t.Errorf("Dispatch(%q, %q) = %q, %q, %v; want %q, %q, error %v",
				tt.path, tt.argv0, kind, name, err, tt.wantKind, tt.wantName, tt.wantErr)
		}
	}
}

func TestExecRunner(t *testing.T) {
	ctx := t.Context()
	out, err := hooks.ExecRunner{}.Run(ctx, hooks.Command{Name: "sh", Args: []string{"-c", "cat; echo out"}, Stdin: []byte("in\n")})
	if err != nil || string(out) != "in\nout\n" {
		t.Errorf("Run = %q, %v", out, err)
	}
	_, err = hooks.ExecRunner{}.Run(ctx, hooks.Command{Name: "sh", Args: []string{"-c", "echo 'ERROR relation not found' >&2; exit 2"}})
	if hooks.ExitCode(err) != 2 {
		t.Errorf("exit code %d, want 2 (%v)", hooks.ExitCode(err), err)
	}
	if ee, ok := errors.AsType[*hooks.ExitError](err); !ok || ee.Reason() != "relation not found" {
		t.Errorf("error %v, want reason %q", err, "relation not found")
	}
	_, err = hooks.ExecRunner{}.Run(ctx, hooks.Command{Name: "no-such-command-here"})
	if !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("missing command: %v, want exec.ErrNotFound", err)
	}
}

func TestWriteFile(t *testing.T) {
	c := &hooks.Context{Root: t.TempDir()}
	for _, step := range []struct {
		data        string
		perm        os.FileMode
		wantChanged bool
	}{
		{"a", 0o600, true},
		{"a", 0o600, false},
		{"a", 0o644, true},
		{"b", 0o644, true},
	} {
		changed, err := c.WriteFile("/etc/x/y.conf", []byte(step.data), step.perm)
		if err != nil {
			t.Fatal(err)
		}
		if changed != step.wantChanged {
			t.Errorf("WriteFile(%q, %o) changed = %v, want %v", step.data, step.perm, changed, step.wantChanged)
		}
		info, err := os.Stat(filepath.Join(c.Root, "etc/x/y.conf"))
		if err != nil || info.Mode().Perm() != step.perm {
			t.Errorf("mode %v, %v; want %o", info.Mode(), err, step.perm)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(c.Root, "etc/x"))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestHTTPClientProxy(t *testing.T) {
	env := map[string]string{
		"JUJU_CHARM_HTTP_PROXY":  "http://squid:3128",
		"JUJU_CHARM_HTTPS_PROXY": "squid:3129",
		"JUJU_CHARM_NO_PROXY":    "127.0.0.1,.internal,localhost",
	}
	client := hooks.NewHTTPClient(func(k string) string { return env[k] })
	proxy := client.Transport.(*http.Transport).Proxy
	for _, tt := range []struct{ url, want string }{
		{"http://contracts.canonical.com/x", "http://squid:3128"},
		{"https://contracts.canonical.com/x", "http://squid:3129"},
		{"http://127.0.0.1:8080/debug/status", ""},
		{"https://db.internal/", ""},
		// A leading dot matches subdomains only, as in golang.org/x/net/http/httpproxy.
		{"https://internal/", "http://squid:3129"},
	} {
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		u, err := proxy(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != tt.want {
			t.Errorf("proxy for %s = %q, %v; want %q", tt.url, got, err, tt.want)
		}
	}
	if direct := hooks.DirectHTTPClient(client).Transport.(*http.Transport); direct.Proxy != nil {
		t.Error("DirectHTTPClient uses a proxy")
	}
}

func TestModelProxyEnv(t *testing.T) {
	env := map[string]string{
		"JUJU_CHARM_HTTP_PROXY":  "http://squid:3128",
		"JUJU_CHARM_HTTPS_PROXY": "",
		"JUJU_CHARM_NO_PROXY":    "10.0.0.0/8,.internal",
	}
	c := &hooks.Context{Getenv: func(k string) string { return env[k] }}
	want := []string{
		"http_proxy=http://squid:3128", "HTTP_PROXY=http://squid:3128",
		"no_proxy=10.0.0.0/8,.internal", "NO_PROXY=10.0.0.0/8,.internal",
	}
	if diff := cmp.Diff(want, c.ModelProxy().Env()); diff != "" {
		t.Errorf("ModelProxy().Env() (-want +got):\n%s", diff)
	}
	clear(env)
	if got := c.ModelProxy().Env(); got != nil {
		t.Errorf("Env without model proxies = %q", got)
	}
}

func TestExecRunnerEnv(t *testing.T) {
	t.Setenv("LIVEPATCH_TEST_KEPT", "kept")
	out, err := hooks.ExecRunner{}.Run(t.Context(), hooks.Command{
		Name: "sh", Args: []string{"-c", `echo "$LIVEPATCH_TEST_KEPT $https_proxy"`},
		Env: []string{"https_proxy=http://squid:3129"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "kept http://squid:3129" {
		t.Errorf("environment seen by the command: %q", got)
	}
}

// testCharm exercises Run: its reconcile writes relation data, then fails when told to.
func testCharm() hooks.Charm {
	return hooks.Charm{
		Reconcile: func(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
			var cfg struct {
				Fail bool `json:"fail"`
			}
			if err := c.ConfigGet(ctx, &cfg); err != nil {
				return hooks.Status{}, err
			}
			if err := c.RelationSet(ctx, "peer:0", map[string]string{"seen": c.HookName()}); err != nil {
				return hooks.Status{}, err
			}
			if err := c.OpenPort(ctx, 80, "tcp"); err != nil {
				return hooks.Status{}, err
			}
			if err := c.StatusSet(ctx, hooks.Maintenance("working")); err != nil {
				return hooks.Status{}, err
			}
			if cfg.Fail {
				return hooks.Status{}, errors.New("cannot do it")
			}
			return hooks.Active("done"), nil
		},
		Hooks: map[string]hooks.Handler{
			"stop": func(context.Context, *hooks.Context) (hooks.Status, error) { return hooks.Status{}, nil },
		},
		Actions: map[string]hooks.Action{
			"hello": func(ctx context.Context, c *hooks.Context, params map[string]any) (map[string]string, error) {
				if params["name"] == "" || params["name"] == nil {
					return map[string]string{"partial": "yes"}, errors.New("no name given")
				}
				return map[string]string{"greeting": "hello " + params["name"].(string)}, nil
			},
		},
	}
}

func peerState(fail bool) hookstest.State {
	return hookstest.State{
		Unit:      "app/0",
		Config:    map[string]any{"fail": fail},
		Relations: []hookstest.Relation{{ID: 0, Endpoint: "peer", RemoteApp: "app"}},
		Status:    hooks.Waiting("before"),
	}
}

func TestRunTransactions(t *testing.T) {
	h := hookstest.New(t, testCharm())

	ok := h.Run(t, "config-changed", peerState(false))
	if ok.Err != nil {
		t.Fatal(ok.Err)
	}
	if diff := cmp.Diff(hooks.Active("done"), ok.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"seen": "config-changed"}, ok.Relations[0].LocalUnitData); diff != "" {
		t.Errorf("relation data (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"80/tcp"}, ok.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}

	failed := h.Run(t, "config-changed", peerState(true))
	if failed.Err == nil {
		t.Fatal("hook succeeded, want error")
	}
	// Status applies at once; relation data and ports are discarded.
	if diff := cmp.Diff(hooks.Maintenance("working"), failed.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if failed.Relations[0].LocalUnitData != nil || failed.Ports != nil {
		t.Errorf("failed hook committed relation data %v, ports %v", failed.Relations[0].LocalUnitData, failed.Ports)
	}
	if len(failed.Logs) != 1 || failed.Logs[0] != "ERROR Hook config-changed failed: cannot do it" {
		t.Errorf("logs %q", failed.Logs)
	}

	stopped := h.Run(t, "stop", peerState(false))
	if diff := cmp.Diff(hooks.Waiting("before"), stopped.Status); diff != "" {
		t.Errorf("zero status changed the status (-want +got):\n%s", diff)
	}
}

func TestRunAction(t *testing.T) {
	h := hookstest.New(t, testCharm())
	res := h.RunAction(t, "hello", map[string]any{"name": "juju"}, peerState(false))
	if res.Err != nil || res.ActionFailed {
		t.Fatalf("action failed: %v %q", res.Err, res.ActionMessage)
	}
	if diff := cmp.Diff(map[string]string{"greeting": "hello juju"}, res.ActionResults); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	// Reconcile runs after a successful action.
	if diff := cmp.Diff(hooks.Active("done"), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	res = h.RunAction(t, "hello", nil, peerState(false))
	if !res.ActionFailed || res.ActionMessage != "no name given" || res.ActionResults["partial"] != "yes" {
		t.Errorf("failed action: failed %v, message %q, results %v", res.ActionFailed, res.ActionMessage, res.ActionResults)
	}
	if diff := cmp.Diff(hooks.Waiting("before"), res.Status); diff != "" {
		t.Errorf("failed action changed the status (-want +got):\n%s", diff)
	}

	res = h.RunAction(t, "missing", nil, peerState(false))
	if !res.ActionFailed || res.ActionMessage != `action "missing" is not implemented by this charm` {
		t.Errorf("missing action: failed %v, message %q", res.ActionFailed, res.ActionMessage)
	}
}

func TestToolErrors(t *testing.T) {
	c := &hooks.Context{Tools: toolsOf(t), Getenv: func(string) string { return "" }}
	ctx := t.Context()
	if _, err := c.RelationList(ctx, "db:99"); hooks.ExitCode(err) != 2 {
		t.Errorf("relation-list of an unknown relation: %v, want exit 2", err)
	}
	if err := c.ActionSet(ctx, map[string]string{"Bad_Key": "x"}); hooks.ExitCode(err) != 1 && hooks.ExitCode(err) != 2 {
		t.Errorf("action-set outside an action: %v", err)
	}
	if err := c.AppStatusSet(ctx, hooks.Active("")); hooks.ExitCode(err) != 1 {
		t.Errorf("status-set --application on a non-leader: %v, want exit 1", err)
	}
	if err := c.StatusSet(ctx, hooks.Status{Name: "error"}); hooks.ExitCode(err) != 2 {
		t.Errorf("status-set error: %v, want exit 2", err)
	}
}

// toolsOf returns the hook tools of a harness run, captured from inside a handler.
func toolsOf(t *testing.T) hooks.Runner {
	var tools hooks.Runner
	h := hookstest.New(t, hooks.Charm{Reconcile: func(_ context.Context, c *hooks.Context) (hooks.Status, error) {
		tools = c.Tools
		return hooks.Status{}, nil
	}})
	h.Run(t, "start", hookstest.State{Unit: "app/0"})
	return tools
}

func TestReadWriteJSON(t *testing.T) {
	c := &hooks.Context{Root: t.TempDir()}
	type rec struct{ N int }
	var r rec
	if found, err := c.ReadJSON("/var/lib/x/state.json", &r); found || err != nil {
		t.Fatalf("missing file: found %v, %v", found, err)
	}
	if err := c.WriteJSON("/var/lib/x/state.json", rec{N: 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if found, err := c.ReadJSON("/var/lib/x/state.json", &r); !found || err != nil || r.N != 3 {
		t.Fatalf("round trip: found %v, %v, %+v", found, err, r)
	}
	if _, err := c.WriteFile("/var/lib/x/state.json", []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadJSON("/var/lib/x/state.json", &r); err == nil || !strings.Contains(err.Error(), "cannot decode /var/lib/x/state.json") {
		t.Errorf("damaged file: %v", err)
	}
}

// TestHookErrorRedacted: a hook error that quotes a URL with credentials (a proxy, a
// contracts server) reaches the log with the password masked.
func TestHookErrorRedacted(t *testing.T) {
	h := hookstest.New(t, hooks.Charm{Reconcile: func(context.Context, *hooks.Context) (hooks.Status, error) {
		return hooks.Status{}, errors.New(`cannot reach "http://proxyuser:s3cret@squid.internal:3128"`)
	}})
	res := h.Run(t, "config-changed", hookstest.State{Unit: "app/0"})
	if res.Err == nil {
		t.Fatal("hook succeeded, want error")
	}
	want := []string{`ERROR Hook config-changed failed: cannot reach "http://proxyuser:xxxxx@squid.internal:3128"`}
	if diff := cmp.Diff(want, res.Logs); diff != "" {
		t.Errorf("logs (-want +got):\n%s", diff)
	}
}
