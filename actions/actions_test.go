package actions_test

import (
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/actions"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// TestActionsYAMLMatchesHandlers keeps actions.yaml and the handler map in step.
func TestActionsYAMLMatchesHandlers(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(lpt.RepoRoot(), "charms", "livepatch", "actions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	yamlNames := slices.Sorted(maps.Keys(doc))
	handlerNames := slices.Sorted(maps.Keys(actions.Livepatch()))
	if diff := cmp.Diff(yamlNames, handlerNames); diff != "" {
		t.Errorf("actions.yaml (-) and handlers (+) differ:\n%s", diff)
	}
}

// run installs, reconciles once, then runs the action.
func run(t *testing.T, e *lpt.Env, st hookstest.State, action string, params map[string]any) hookstest.Result {
	t.Helper()
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	res = e.H.RunAction(t, action, params, res.State)
	lpt.CheckNoLeaks(t, res)
	return res
}

func checkFailed(t *testing.T, res hookstest.Result, wantMessage string) {
	t.Helper()
	if res.Err != nil {
		t.Fatalf("action process failed: %v", res.Err)
	}
	if !res.ActionFailed {
		t.Fatalf("action succeeded with results %v, want failure %q", res.ActionResults, wantMessage)
	}
	if !strings.Contains(res.ActionMessage, wantMessage) {
		t.Errorf("failure message %q does not contain %q", res.ActionMessage, wantMessage)
	}
}

func checkSucceeded(t *testing.T, res hookstest.Result) {
	t.Helper()
	if res.Err != nil || res.ActionFailed {
		t.Fatalf("action failed: %v %q", res.Err, res.ActionMessage)
	}
}

func TestLeaderOnlyActions(t *testing.T) {
	for _, tt := range []struct {
		action string
		params map[string]any
	}{
		{"get-resource-token", nil},
		{"schema-upgrade", nil},
		{"set-basic-users", map[string]any{"users": "admin:pw"}},
	} {
		t.Run(tt.action, func(t *testing.T) {
			e := lpt.New(t)
			res := run(t, e, lpt.Ready(false), tt.action, tt.params)
			checkFailed(t, res, tt.action+" must run on the leader: juju run livepatch/leader "+tt.action)
		})
	}
}

func TestInvalidParams(t *testing.T) {
	for _, tt := range []struct {
		name   string
		action string
		params map[string]any
	}{
		{"unknown parameter", "restart", map[string]any{"force": true}},
		{"empty contract token", "get-resource-token", map[string]any{"contract-token": ""}},
		{"users missing", "set-basic-users", map[string]any{}},
		{"append not a boolean", "set-basic-users", map[string]any{"users": "a:b", "append": "yes"}},
		{"unknown action", "enable", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			res := e.H.RunAction(t, tt.action, tt.params, lpt.Ready(true))
			if res.Err == nil {
				t.Errorf("action ran with invalid parameters: %v", res.ActionResults)
			}
			if len(res.ToolCalls) > 0 {
				t.Errorf("the charm ran: %v", res.ToolCalls)
			}
		})
	}
}

func TestSchemaUpgrade(t *testing.T) {
	e := lpt.New(t)
	e.Server.SetSchema(2, 3)
	st := lpt.Ready(true)
	e.Install(t, st)
	before := e.H.Run(t, "config-changed", st)
	if before.Status.Message != livepatch.MessageSchemaUpgrade {
		t.Fatalf("status before upgrade %v", before.Status)
	}
	res := e.H.RunAction(t, "schema-upgrade", nil, before.State)
	checkSucceeded(t, res)
	want := map[string]string{
		"from-version":       "2",
		"to-version":         "3",
		"restart-generation": "1",
		"result":             "schema upgraded from version 2 to 3; the units restart one at a time in unit order (rolling restart 1)",
	}
	if diff := cmp.Diff(want, res.ActionResults); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if got := res.Relation("livepatch").LocalAppData[livepatch.PeerRestartGeneration]; got != "1" {
		t.Errorf("restart generation %q, want 1", got)
	}
	if res.Status.Name != "active" {
		t.Errorf("status after upgrade %v, want active", res.Status)
	}
	// livepatch/0 is first in unit order: it restarts in the reconcile after the action.
	if lpt.Restarts(res) != 1 {
		t.Errorf("%d restarts on the leader, want 1", lpt.Restarts(res))
	}
	if got := res.Relation("livepatch").LocalUnitData[livepatch.PeerRestartedGeneration]; got != "1" {
		t.Errorf("leader published restarted-generation %q, want 1", got)
	}
}

func TestSchemaUpgradeFailures(t *testing.T) {
	t.Run("database not related", func(t *testing.T) {
		e := lpt.New(t)
		st := lpt.Ready(true)
		st.Relations = st.Relations[:1]
		res := run(t, e, st, "schema-upgrade", nil)
		checkFailed(t, res, "cannot upgrade the database schema yet: "+livepatch.MessageNoDatabase)
	})
	t.Run("migration fails", func(t *testing.T) {
		e := lpt.New(t)
		e.Server.SetSchema(2, 3)
		e.Server.UpgradeFails = true
		res := run(t, e, lpt.Ready(true), "schema-upgrade", nil)
		checkFailed(t, res, "cannot upgrade the database schema: ")
		checkFailed(t, res, "migration 0003 failed")
	})
}

func TestSchemaVersion(t *testing.T) {
	for _, tt := range []struct {
		name            string
		current, latest int
		want            map[string]string
	}{
		{"current", 3, 3, map[string]string{"current": "3", "latest": "3", "upgrade-required": "false"}},
		{"behind", 2, 3, map[string]string{"current": "2", "latest": "3", "upgrade-required": "true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			e.Server.SetSchema(tt.current, tt.latest)
			res := run(t, e, lpt.Ready(false), "schema-version", nil)
			checkSucceeded(t, res)
			if diff := cmp.Diff(tt.want, res.ActionResults); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("not configured", func(t *testing.T) {
		e := lpt.New(t)
		st := lpt.Ready(false)
		delete(st.Config, "url_template")
		res := run(t, e, st, "schema-version", nil)
		checkFailed(t, res, "cannot read the database schema version yet: "+livepatch.MessageURLTemplateNotSet)
	})
}

func TestRestart(t *testing.T) {
	e := lpt.New(t)
	res := run(t, e, lpt.Ready(false), "restart", nil)
	checkSucceeded(t, res)
	if diff := cmp.Diff(map[string]string{"restarted": "true"}, res.ActionResults); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if lpt.Restarts(res) != 1 {
		t.Errorf("%d restarts, want 1", lpt.Restarts(res))
	}

	e = lpt.New(t)
	e.SystemctlFail["restart"] = true
	res = run(t, e, lpt.Ready(false), "restart", nil)
	checkFailed(t, res, "livepatch-server failed to restart (see journalctl -u livepatch-server)")
}

func TestSetBasicUsers(t *testing.T) {
	e := lpt.New(t)
	res := run(t, e, lpt.Ready(true), "set-basic-users", map[string]any{"users": "admin:s3cret-one,ops:s3cret:two"})
	lpt.CheckNoLeaks(t, res, "s3cret-one", "s3cret:two")
	checkSucceeded(t, res)
	if got := res.ActionResults["users-set"]; got != "admin,ops" {
		t.Errorf("users-set %q, want admin,ops", got)
	}
	stored := res.Relation("livepatch").LocalAppData[livepatch.PeerBasicUsers]
	passwords := map[string]string{"admin": "s3cret-one", "ops": "s3cret:two"}
	entries := strings.Split(stored, ",")
	if len(entries) != 2 {
		t.Fatalf("stored %d entries, want 2", len(entries))
	}
	for _, entry := range entries {
		user, hash, err := config.ParseBasicUser(entry)
		if err != nil {
			t.Fatal(err)
		}
		if cost, _ := bcrypt.Cost([]byte(hash)); cost != 10 {
			t.Errorf("bcrypt cost %d, want 10", cost)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(passwords[user])); err != nil {
			t.Errorf("hash of %s does not match its password: %v", user, err)
		}
	}
	rendered, err := config.Load(filepath.Join(e.H.Root, livepatch.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(entries, rendered.Auth.BasicUsers); diff != "" {
		t.Errorf("rendered users (-want +got):\n%s", diff)
	}

	// append adds, refusing an existing user.
	res2 := e.H.RunAction(t, "set-basic-users", map[string]any{"users": "new:pw", "append": true}, res.State)
	checkSucceeded(t, res2)
	if n := len(strings.Split(res2.Relation("livepatch").LocalAppData[livepatch.PeerBasicUsers], ",")); n != 3 {
		t.Errorf("%d users after append, want 3", n)
	}
	res3 := e.H.RunAction(t, "set-basic-users", map[string]any{"users": "admin:other", "append": true}, res2.State)
	checkFailed(t, res3, `user "admin" already exists`)
	// without append, the list is replaced.
	res4 := e.H.RunAction(t, "set-basic-users", map[string]any{"users": "only:pw"}, res2.State)
	checkSucceeded(t, res4)
	if got := res4.Relation("livepatch").LocalAppData[livepatch.PeerBasicUsers]; !strings.HasPrefix(got, "only:$2a$10$") || strings.Contains(got, ",") {
		t.Errorf("users after replace %q", got)
	}
}

func TestSetBasicUsersRefuses(t *testing.T) {
	long := strings.Repeat("x", 73)
	for _, tt := range []struct {
		name, users, want string
	}{
		{"password over 72 bytes", "admin:" + long, `the password of user "admin" is longer than 72 bytes`},
		{"no password", "admin", "users entry 1 is not of the form user:password"},
		{"empty password", "admin:", `user "admin" has an empty password`},
		{"bad user name", "ad min:pw", `user "ad min" has characters other than`},
		{"duplicate", "a:pw,a:pw2", `user "a" is given more than once`},
		{"empty entry", "a:pw,,b:pw", "users entry 2 is not of the form user:password"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			res := run(t, e, lpt.Ready(true), "set-basic-users", map[string]any{"users": tt.users})
			checkFailed(t, res, tt.want)
			lpt.CheckNoLeaks(t, res, long, "pw2")
			if _, ok := res.Relation("livepatch").LocalAppData[livepatch.PeerBasicUsers]; ok {
				t.Error("users stored despite the failure")
			}
		})
	}
}

// contracts is a fake contracts server.
type contracts struct {
	mu       sync.Mutex
	requests []string
	bodies   []map[string]any
	status   int // answer every request with this status when non-zero
}

const (
	contractToken = "C0ntract-s3cret"
	machineToken  = "m4chine-s3cret"
)

func (c *contracts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	if c.status != 0 {
		w.WriteHeader(c.status)
		w.Write([]byte(`{"message":"bad token ` + r.Header.Get("Authorization") + `"}`))
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/context/machines/token" && r.Header.Get("Authorization") == "Bearer "+contractToken:
		var body map[string]any
		data, _ := io.ReadAll(r.Body)
		json.Unmarshal(data, &body)
		c.bodies = append(c.bodies, body)
		w.Write([]byte(`{"machineToken":"` + machineToken + `","resourceTokens":[]}`))
	case r.Method == http.MethodGet && r.URL.Path == "/v1/resources/livepatch-onprem/context/machines/livepatch-onprem" &&
		r.Header.Get("Authorization") == "Bearer "+machineToken:
		w.Write([]byte(`{"resourceToken":"` + lpt.ResourceToken + `"}`))
	default:
		w.WriteHeader(http.StatusUnauthorized)
	}
}

func resourceTokenState(url string) hookstest.State {
	st := lpt.Ready(true)
	st.Relations[0] = lpt.PeerRelation(nil)
	st.Config["contract_server_url"] = url
	return st
}

func attach(t *testing.T, e *lpt.Env) {
	e.H.WriteFile(t, actions.MachineTokenPath, `{"machineToken":"`+machineToken+`","machineTokenInfo":{}}`, 0o600)
}

func TestGetResourceTokenFromAttachment(t *testing.T) {
	fake := &contracts{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	e := lpt.New(t)
	attach(t, e)
	st := resourceTokenState(srv.URL)
	res := run(t, e, st, "get-resource-token", nil)
	lpt.CheckNoLeaks(t, res, machineToken)
	checkSucceeded(t, res)
	wantResult := "resource token obtained from " + srv.URL + " with this unit's Ubuntu Pro attachment and shared with every unit; the servers start syncing patches"
	if diff := cmp.Diff(map[string]string{"result": wantResult}, res.ActionResults); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if got := res.Relation("livepatch").LocalAppData[livepatch.PeerResourceToken]; got != lpt.ResourceToken {
		t.Errorf("shared token %q", got)
	}
	wantRequests := []string{"GET /v1/resources/livepatch-onprem/context/machines/livepatch-onprem Bearer " + machineToken}
	if diff := cmp.Diff(wantRequests, fake.requests); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	// The leader reconciles after the action and starts syncing.
	if res.Status.Name != "active" {
		t.Errorf("status %v, want active", res.Status)
	}
	rendered, err := config.Load(filepath.Join(e.H.Root, livepatch.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if !rendered.PatchSync.Enabled || rendered.PatchSync.Token != lpt.ResourceToken {
		t.Errorf("patch-sync not enabled with the token: %+v", rendered.PatchSync)
	}
	// The token goes to the shared application bag, through stdin of relation-set only.
	for _, call := range res.ToolCalls {
		if call.Name == "relation-set" && !slices.Contains(call.Args, "--app") && strings.Contains(string(call.Stdin), lpt.ResourceToken) {
			t.Errorf("token set in a unit bag: %v", call)
		}
	}
}

func TestGetResourceTokenWithContractToken(t *testing.T) {
	fake := &contracts{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	e := lpt.New(t)
	e.H.WriteFile(t, "/etc/os-release", "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n", 0o644)
	e.H.WriteFile(t, "/proc/sys/kernel/osrelease", "5.15.0-107-generic\n", 0o644)
	res := run(t, e, resourceTokenState(srv.URL), "get-resource-token", map[string]any{"contract-token": contractToken})
	lpt.CheckNoLeaks(t, res, contractToken, machineToken)
	checkSucceeded(t, res)
	if got := res.Relation("livepatch").LocalAppData[livepatch.PeerResourceToken]; got != lpt.ResourceToken {
		t.Errorf("shared token %q", got)
	}
	wantRequests := []string{
		"POST /v1/context/machines/token Bearer " + contractToken,
		"GET /v1/resources/livepatch-onprem/context/machines/livepatch-onprem Bearer " + machineToken,
	}
	if diff := cmp.Diff(wantRequests, fake.requests); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	wantBody := map[string]any{
		"architecture": runtime.GOARCH,
		"hostType":     "container",
		"machineId":    "livepatch-onprem",
		"os": map[string]any{
			"distribution": "Ubuntu", "kernel": "5.15.0-107-generic", "release": "22.04", "series": "jammy", "type": "Linux",
		},
	}
	if diff := cmp.Diff([]map[string]any{wantBody}, fake.bodies); diff != "" {
		t.Errorf("machine token request (-want +got):\n%s", diff)
	}
}

func TestGetResourceTokenFailures(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	for _, tt := range []struct {
		name     string
		attached bool
		status   int
		params   map[string]any
		url      string
		want     string
	}{
		{name: "not attached", want: "this unit is not attached to Ubuntu Pro: set the token of the ubuntu-advantage subordinate"},
		{name: "contracts server unreachable", attached: true, url: closedURL, want: "cannot reach the contracts server at " + closedURL},
		{name: "machine token refused", attached: true, status: http.StatusUnauthorized, want: "refused the token (HTTP 401)"},
		{name: "contract token refused", status: http.StatusForbidden, params: map[string]any{"contract-token": "wrong-s3cret"},
			want: "refused the token (HTTP 403)"},
		{name: "server error", attached: true, status: http.StatusBadGateway, want: "answered HTTP 502"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := &contracts{status: tt.status}
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			url := srv.URL
			if tt.url != "" {
				url = tt.url
			}
			e := lpt.New(t)
			if tt.attached {
				attach(t, e)
			}
			res := run(t, e, resourceTokenState(url), "get-resource-token", tt.params)
			lpt.CheckNoLeaks(t, res, machineToken, "wrong-s3cret")
			checkFailed(t, res, tt.want)
			if _, ok := res.Relation("livepatch").LocalAppData[livepatch.PeerResourceToken]; ok {
				t.Error("token stored despite the failure")
			}
		})
	}
}
