package livepatch_test

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

const goodHash = "$2y$10$WfSWqEsSvlqFyUcOa6aL9.MsBzkQoh0CC8EL9w0nvIamJESwDHmhe"

func without(rels []hookstest.Relation, endpoint string) []hookstest.Relation {
	return slices.DeleteFunc(slices.Clone(rels), func(r hookstest.Relation) bool { return r.Endpoint == endpoint })
}

func TestGuardChain(t *testing.T) {
	tests := []struct {
		name   string
		leader bool
		modify func(*hookstest.State)
		server func(*lpt.Server)
		want   hooks.Status
	}{{
		name:   "url_template not set",
		leader: true,
		modify: func(s *hookstest.State) { delete(s.Config, "url_template") },
		want:   hooks.Blocked(livepatch.MessageURLTemplateNotSet),
	}, {
		name:   "url_template without {filename}",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["url_template"] = "http://lb.example/v1/patches/" },
		want:   hooks.Blocked("url_template must contain {filename}, as in http://<haproxy>/v1/patches/{filename}"),
	}, {
		name:   "auth_basic_users entry not a bcrypt hash",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["auth_basic_users"] = "admin:" + goodHash + ",bob:plaintext-pw" },
		want:   hooks.Blocked(`auth_basic_users entry 2: user "bob": password is not a bcrypt hash (use the output of htpasswd -bnBC 10 bob PASSWORD)`),
	}, {
		name:   "auth_basic_users entry without user",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["auth_basic_users"] = goodHash },
		want:   hooks.Blocked("auth_basic_users entry 1: entry is not of the form user:bcrypt-hash (use the output of htpasswd -bnBC 10 USER PASSWORD)"),
	}, {
		name:   "sync_trusted_key not a public key",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["sync_trusted_key"] = "/etc/livepatch/signing.pub" },
		want:   hooks.Blocked("sync_trusted_key is not the base64 of an ed25519 public key: give the content of the upstream's signing.pub (two, comma-separated, while it rotates keys)"),
	}, {
		name:   "URLs with credentials are redacted",
		leader: true,
		modify: func(s *hookstest.State) {
			s.Config["url_template"] = "ftp://lb:plaintext-pw@lb.example/{filename}"
			s.Config["patch_sync_enabled"] = true
			s.Config["sync_upstream"] = "gopher://sync:plaintext-pw@up.example"
			s.Config["contract_server_url"] = "http://c:plaintext-pw@:bad"
		},
		want: hooks.Blocked(`url_template "ftp://lb:xxxxx@lb.example/{filename}" is not an http(s) URL; ` +
			`sync_upstream "gopher://sync:xxxxx@up.example" is not an http(s) URL; ` +
			`contract_server_url "http://c:xxxxx@:bad" is not a URL`),
	}, {
		name:   "sync_tiers with sync_tier",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["sync_tiers"] = true; s.Config["sync_tier"] = "beta" },
		want:   hooks.Blocked(`sync_tier "beta" is meaningless with sync_tiers: synced patches go to the tier they are in on the upstream; unset sync_tier`),
	}, {
		name:   "several invalid options",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["log_level"] = "loud"; s.Config["sync_interval"] = "often" },
		want:   hooks.Blocked(`log_level "loud" is not one of debug, info, warn, error; sync_interval "often" is not a duration such as 30m or 6h`),
	}, {
		name:   "no database relation",
		leader: true,
		modify: func(s *hookstest.State) { s.Relations = without(s.Relations, "db") },
		want:   hooks.Blocked(livepatch.MessageNoDatabase),
	}, {
		name:   "both db and database",
		leader: true,
		modify: func(s *hookstest.State) { s.Relations = append(s.Relations, lpt.DatabaseRelation()) },
		want:   hooks.Blocked(livepatch.MessageBothDatabases),
	}, {
		name:   "db related, no postgresql unit yet",
		leader: true,
		modify: func(s *hookstest.State) { s.Relation("db").RemoteUnits = nil },
		want:   hooks.Waiting("Waiting for postgres units to join the db relation"),
	}, {
		name:   "db related, database not echoed yet",
		leader: true,
		modify: func(s *hookstest.State) { delete(s.Relation("db").RemoteUnits["postgresql/0"], "database") },
		want:   hooks.Waiting("Waiting for postgres to create database livepatch and grant access to livepatch/0"),
	}, {
		name:   "db related, unit not in allowed-units",
		leader: false,
		modify: func(s *hookstest.State) {
			s.Relations = append(without(s.Relations, "db"), lpt.DBRelation("livepatch/1"))
		},
		want: hooks.Waiting("Waiting for postgres to create database livepatch and grant access to livepatch/0"),
	}, {
		name:   "database related, no credentials yet",
		leader: true,
		modify: func(s *hookstest.State) {
			r := lpt.DatabaseRelation()
			r.RemoteAppData = nil
			s.Relations = append(without(s.Relations, "db"), r)
		},
		want: hooks.Waiting("Waiting for postgres to share the database credentials"),
	}, {
		name:   "database cannot be reached",
		leader: true,
		server: func(s *lpt.Server) { s.Unreachable = true },
		want:   hooks.Waiting(livepatch.MessageDatabaseUnreached),
	}, {
		name:   "empty database, non-leader waits",
		leader: false,
		server: func(s *lpt.Server) { s.SetSchema(0, 3) },
		want:   hooks.Waiting(livepatch.MessageSchemaLeaderInit),
	}, {
		name:   "empty database, leader initialises it",
		leader: true,
		server: func(s *lpt.Server) { s.SetSchema(0, 3) },
		want:   hooks.Active(lpt.MessageActive),
	}, {
		name:   "schema behind, leader blocked",
		leader: true,
		server: func(s *lpt.Server) { s.SetSchema(2, 3) },
		want:   hooks.Blocked(livepatch.MessageSchemaUpgrade),
	}, {
		name:   "schema behind, non-leader waits for the leader",
		leader: false,
		server: func(s *lpt.Server) { s.SetSchema(2, 3) },
		want:   hooks.Waiting(livepatch.MessageSchemaLeaderWait),
	}, {
		// Migrations are expand-first: a server keeps serving on its successor's schema.
		name:   "schema newer than the server",
		leader: true,
		server: func(s *lpt.Server) { s.SetSchema(4, 3) },
		want:   hooks.Active(lpt.MessageActive),
	}, {
		name:   "sync enabled without token",
		leader: true,
		modify: func(s *hookstest.State) { s.Relations[0] = lpt.PeerRelation(nil) },
		want:   hooks.Blocked(livepatch.MessageSyncTokenNotSet),
	}, {
		name:   "sync disabled without token",
		leader: true,
		modify: func(s *hookstest.State) {
			s.Relations[0] = lpt.PeerRelation(nil)
			s.Config["patch_sync_enabled"] = false
		},
		want: hooks.Active(livepatch.MessageActive + "; " + livepatch.MessageFromBundles),
	}, {
		name:   "sync enabled without an upstream",
		leader: true,
		modify: func(s *hookstest.State) { delete(s.Config, "sync_upstream") },
		want:   hooks.Blocked(livepatch.MessageSyncUpstreamNotSet),
	}, {
		// The status names the upstream's host, never credentials in its URL.
		name:   "sync from an upstream URL with credentials",
		leader: true,
		modify: func(s *hookstest.State) { s.Config["sync_upstream"] = "https://user:pw@central.example:8443/lp" },
		want:   hooks.Active(livepatch.MessageActive + "; syncing from central.example:8443"),
	}, {
		name:   "sync_token option instead of resource token",
		leader: false,
		modify: func(s *hookstest.State) {
			s.Relations[0] = lpt.PeerRelation(nil)
			s.Config["sync_token"] = "chained-sync-token"
		},
		want: hooks.Active(lpt.MessageActive),
	}, {
		name:   "postgresql_client relation",
		leader: true,
		modify: func(s *hookstest.State) { s.Relations = append(without(s.Relations, "db"), lpt.DatabaseRelation()) },
		want:   hooks.Active(lpt.MessageActive),
	}, {
		name:   "ready, non-leader",
		leader: false,
		want:   hooks.Active(lpt.MessageActive),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(tt.leader)
			if tt.modify != nil {
				tt.modify(&st)
			}
			if tt.server != nil {
				tt.server(e.Server)
			}
			e.Install(t, st)
			res := e.H.Run(t, "config-changed", st)
			if res.Err != nil {
				t.Fatalf("config-changed failed: %v", res.Err)
			}
			if diff := cmp.Diff(tt.want, res.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			lpt.CheckNoLeaks(t, res, goodHash, "plaintext-pw", "chained-sync-token")
		})
	}
}

// TestInvalidConfigStopsFirst: until url_template is set, which is every hook of a fresh
// deployment up to the operator's first `juju config`, a hook reads the configuration and
// sets the status, nothing else (every hook tool call is a process).
func TestInvalidConfigStopsFirst(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	delete(st.Config, "url_template")
	e.Install(t, st)
	for _, hook := range []string{"config-changed", "db-relation-changed", "livepatch-relation-changed", "start"} {
		res := e.H.Run(t, hook, st)
		if res.Err != nil {
			t.Fatalf("%s failed: %v", hook, res.Err)
		}
		if diff := cmp.Diff(hooks.Blocked(livepatch.MessageURLTemplateNotSet), res.Status); diff != "" {
			t.Errorf("%s status (-want +got):\n%s", hook, diff)
		}
		var tools []string
		for _, call := range res.ToolCalls {
			tools = append(tools, call.Name)
		}
		if diff := cmp.Diff([]string{"config-get", "status-set"}, tools); diff != "" {
			t.Errorf("%s hook tools (-want +got):\n%s", hook, diff)
		}
		if len(res.Commands) != 0 {
			t.Errorf("%s ran %q, want no command", hook, hookstest.CommandLines(res.Commands))
		}
	}
}

func TestLeaderInitialisesEmptyDatabase(t *testing.T) {
	e := lpt.New(t)
	e.Server.SetSchema(0, 3)
	st := lpt.Ready(true)
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	cfgPath := filepath.Join(e.H.Root, livepatch.SchemaConfigPath)
	want := []string{
		"livepatch-server schema check --config " + cfgPath,
		"livepatch-server schema version --config " + cfgPath + " --format json",
		"livepatch-server schema upgrade --config " + cfgPath + " --format json",
		"id -u",
		"getent passwd livepatch",
		"systemctl daemon-reload",
		"systemctl enable livepatch-server.service",
		"systemctl restart livepatch-server.service",
	}
	if diff := cmp.Diff(want, hookstest.CommandLines(res.Commands)); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if cur, _ := e.Server.Schema(); cur != 3 {
		t.Errorf("schema version %d after initialisation, want 3", cur)
	}
}

// TestSchemaConfig: the server CLI gets the database from a file that holds only the keys
// every server version requires, so that an old server binary reads what a new charm writes.
func TestSchemaConfig(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	if res := e.H.Run(t, "config-changed", st); res.Err != nil {
		t.Fatal(res.Err)
	}
	got := e.H.ReadFile(t, livepatch.SchemaConfigPath)
	want := `
server:
    address: 10.0.0.5:8080
    url-template: http://lb.example/v1/patches/{filename}
database:
    connection-string: dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='prefer' user='juju_livepatch'
`[1:]
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema configuration (-want +got):\n%s", diff)
	}
	c, err := config.Load(filepath.Join(e.H.Root, livepatch.SchemaConfigPath))
	if err != nil {
		t.Fatalf("the server rejects the schema configuration: %v", err)
	}
	if c.Database.ConnectionString != loadRendered(t, e).Database.ConnectionString {
		t.Errorf("schema configuration has another database than the server's")
	}
	info, err := os.Stat(filepath.Join(e.H.Root, livepatch.SchemaConfigPath))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("schema configuration mode %v (%v), want 600", info.Mode().Perm(), err)
	}
}

func TestNoRestartWhenSchemaBehind(t *testing.T) {
	e := lpt.New(t)
	e.Server.SetSchema(2, 3)
	st := lpt.Ready(true)
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if n := lpt.Restarts(res); n != 0 {
		t.Errorf("%d restarts while the schema is behind, want 0", n)
	}
}

func TestRestartOnlyWhenSomethingChanged(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	steps := []struct {
		name     string
		hook     string
		change   func()
		restarts int
	}{
		{name: "first configuration", hook: "config-changed", restarts: 1},
		{name: "nothing changed", hook: "config-changed", restarts: 0},
		{name: "unrelated relation event", hook: "website-relation-changed", restarts: 0},
		{name: "log level changed", hook: "config-changed", change: func() { st.Config["log_level"] = "debug" }, restarts: 1},
		{name: "same charm refreshed", hook: "upgrade-charm", restarts: 0},
		{name: "new server binary", hook: "upgrade-charm", change: func() { e.SetBundledBinary(t, "fake livepatch-server v2") }, restarts: 1},
		{name: "database password rotated", hook: "db-relation-changed", change: func() {
			st.Relation("db").RemoteUnits["postgresql/0"]["password"] = lpt.DBPassword + "-2"
		}, restarts: 1},
		{name: "a new rolling restart generation", hook: "livepatch-relation-changed", change: func() {
			app := st.Relation("livepatch").LocalAppData
			gen, _ := strconv.Atoi(app[livepatch.PeerRestartGeneration])
			app[livepatch.PeerRestartGeneration] = strconv.Itoa(gen + 1)
		}, restarts: 1},
		{name: "restart failed before", hook: "config-changed", change: func() {
			st.Config["log_level"] = "warn"
			e.SystemctlFail["restart"] = true
		}, restarts: 1},
		{name: "restart retried", hook: "update-status", change: func() { e.SystemctlFail["restart"] = false }, restarts: 1},
	}
	for _, step := range steps {
		if step.change != nil {
			step.change()
		}
		res := e.H.Run(t, step.hook, st)
		if res.Err != nil {
			t.Fatalf("%s: %s failed: %v", step.name, step.hook, res.Err)
		}
		if n := lpt.Restarts(res); n != step.restarts {
			t.Errorf("%s: %d restarts, want %d", step.name, n, step.restarts)
		}
		if e.SystemctlFail["restart"] {
			if diff := cmp.Diff(hooks.Blocked(livepatch.MessageRestartFailed), res.Status); diff != "" {
				t.Errorf("%s: status (-want +got):\n%s", step.name, diff)
			}
		}
		st = res.State
	}
}

func TestRenderedFilesGolden(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["auth_basic_users"] = "admin:" + goodHash
	st.Config["sync_architectures"] = "amd64, arm64"
	st.Config["sync_trusted_key"] = trustedKey
	st.Env = map[string]string{"JUJU_CHARM_HTTPS_PROXY": "http://squid.internal:3128"}
	e.Install(t, st)
	if res := e.H.Run(t, "config-changed", st); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, f := range []struct{ path, golden string }{
		{livepatch.ConfigPath, "livepatch-server.yaml"},
		{livepatch.UnitPath, "livepatch-server.service"},
	} {
		// Paths in the unit are under the harness root ("/" in production).
		got := strings.ReplaceAll(e.H.ReadFile(t, f.path), e.H.Root, "")
		golden := filepath.Join("testdata", f.golden+".golden")
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("cannot read golden file (run go test -update): %v", err)
		}
		if diff := cmp.Diff(string(want), got); diff != "" {
			t.Errorf("%s differs from %s (-want +got):\n%s", f.path, golden, diff)
		}
	}
	// The server must accept what the charm renders.
	if _, err := config.Load(filepath.Join(e.H.Root, livepatch.ConfigPath)); err != nil {
		t.Errorf("server rejects the rendered config: %v", err)
	}
	info, err := os.Stat(filepath.Join(e.H.Root, livepatch.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("config mode %o, want 600", perm)
	}
}

func loadRendered(t *testing.T, e *lpt.Env) config.Config {
	t.Helper()
	c, err := config.Load(filepath.Join(e.H.Root, livepatch.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenderedDatabaseAndUsers(t *testing.T) {
	hash2 := "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
	tests := []struct {
		name      string
		modify    func(*hookstest.State)
		wantDSN   string
		wantUsers []string
	}{{
		name:    "pgsql",
		wantDSN: "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='prefer' user='juju_livepatch'",
	}, {
		name: "pgsql with sslmode",
		modify: func(s *hookstest.State) {
			s.Relation("db").RemoteUnits["postgresql/0"]["sslmode"] = "require"
		},
		wantDSN: "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='require' user='juju_livepatch'",
	}, {
		// Every postgresql unit writes its own bag, host naming the primary; the replica's
		// bag may carry the credentials first.
		name: "pgsql credentials from a replica's bag, with the standbys",
		modify: func(s *hookstest.State) {
			r := s.Relation("db")
			r.RemoteUnits["postgresql/0"] = map[string]string{"private-address": "10.0.0.9"}
			r.RemoteUnits["postgresql/1"] = map[string]string{
				"private-address": "10.0.0.11",
				"host":            "10.0.0.9",
				"port":            "5432",
				"database":        "livepatch",
				"user":            "relation-3",
				"password":        lpt.DBPassword,
				"state":           "hot standby",
				"allowed-units":   "livepatch/0 livepatch/1",
				"master":          "dbname=livepatch host=10.0.0.9 password=x port=5432 user=relation-3",
				"standbys":        "dbname=livepatch host=10.0.0.11 password=x port=5432 user=relation-3,dbname=livepatch host=10.0.0.12 password=x port=5432 user=relation-3",
			}
		},
		wantDSN: "connect_timeout='5' dbname='livepatch' host='10.0.0.11,10.0.0.12,10.0.0.9' password='pg-s3cret/pass' port='5432,5432,5432' sslmode='prefer' target_session_attrs='read-write' user='relation-3'",
	}, {
		name: "pgsql IPv6 primary",
		modify: func(s *hookstest.State) {
			s.Relation("db").RemoteUnits["postgresql/0"]["host"] = "fd00::9"
		},
		wantDSN: "dbname='livepatch' host='fd00::9' password='pg-s3cret/pass' port='5432' sslmode='prefer' user='juju_livepatch'",
	}, {
		name:    "postgresql_client with every endpoint",
		modify:  func(s *hookstest.State) { s.Relations = append(without(s.Relations, "db"), lpt.DatabaseRelation()) },
		wantDSN: "connect_timeout='5' dbname='livepatch' host='10.0.0.10,10.0.0.9' password='pg-s3cret/pass' port='5432,5432' sslmode='prefer' target_session_attrs='read-write' user='relation-4'",
	}, {
		name: "postgresql_client IPv6 without brackets, replicas read-only",
		modify: func(s *hookstest.State) {
			r := lpt.DatabaseRelation()
			r.RemoteAppData["endpoints"] = "fd00::9:5432"
			r.RemoteAppData["read-only-endpoints"] = "fd00::a:5432"
			s.Relations = append(without(s.Relations, "db"), r)
		},
		wantDSN: "connect_timeout='5' dbname='livepatch' host='fd00::9,fd00::a' password='pg-s3cret/pass' port='5432,5432' sslmode='prefer' target_session_attrs='read-write' user='relation-4'",
	}, {
		name: "postgresql_client TLS without a CA",
		modify: func(s *hookstest.State) {
			r := lpt.DatabaseRelation()
			r.RemoteAppData["endpoints"] = "10.0.0.9:5432"
			r.RemoteAppData["tls"] = "True"
			s.Relations = append(without(s.Relations, "db"), r)
		},
		wantDSN: "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='require' user='relation-4'",
	}, {
		name: "users from config and action merged, action wins",
		modify: func(s *hookstest.State) {
			s.Config["auth_basic_users"] = "admin:" + goodHash + ", ops:" + goodHash
			s.Relation("livepatch").LocalAppData[livepatch.PeerBasicUsers] = "ops:" + hash2 + ",new:" + hash2
		},
		wantDSN:   "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='prefer' user='juju_livepatch'",
		wantUsers: []string{"admin:" + goodHash, "ops:" + hash2, "new:" + hash2},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(true)
			if tt.modify != nil {
				tt.modify(&st)
			}
			e.Install(t, st)
			if res := e.H.Run(t, "config-changed", st); res.Err != nil || res.Status.Name != "active" {
				t.Fatalf("config-changed: %v, status %v", res.Err, res.Status)
			}
			c := loadRendered(t, e)
			if c.Database.ConnectionString != tt.wantDSN {
				t.Errorf("DSN %q, want %q", c.Database.ConnectionString, tt.wantDSN)
			}
			if diff := cmp.Diff(tt.wantUsers, c.Auth.BasicUsers, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("basic users (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderedSync(t *testing.T) {
	tests := []struct {
		name        string
		config      map[string]any
		peerToken   string
		wantEnabled bool
		wantToken   string
	}{
		{name: "resource token from the leader", peerToken: lpt.ResourceToken, wantEnabled: true, wantToken: lpt.ResourceToken},
		{name: "sync_token wins", config: map[string]any{"sync_token": "sync-tok"}, peerToken: lpt.ResourceToken, wantEnabled: true, wantToken: "sync-tok"},
		{name: "no token: the server serves without syncing", wantEnabled: false},
		{name: "sync disabled", config: map[string]any{"patch_sync_enabled": false}, peerToken: lpt.ResourceToken, wantEnabled: false, wantToken: lpt.ResourceToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(false)
			st.Relations[0] = lpt.PeerRelation(map[string]string{livepatch.PeerResourceToken: tt.peerToken})
			for k, v := range tt.config {
				st.Config[k] = v
			}
			e.Install(t, st)
			if res := e.H.Run(t, "config-changed", st); res.Err != nil {
				t.Fatal(res.Err)
			}
			c := loadRendered(t, e)
			if c.PatchSync.Enabled != tt.wantEnabled || c.PatchSync.Token != tt.wantToken {
				t.Errorf("patch-sync enabled %v token %q, want %v %q", c.PatchSync.Enabled, c.PatchSync.Token, tt.wantEnabled, tt.wantToken)
			}
			if c.PatchSync.ID != st.ModelUUID {
				t.Errorf("patch-sync id %q, want the model UUID", c.PatchSync.ID)
			}
		})
	}
}

// trustedKey is the base64 public key of a fixed ed25519 key, as in an upstream's signing.pub.
var trustedKey = server.MarshalPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey))

// rotatedKey is the upstream's next signing key, trusted beside trustedKey for a rotation.
var rotatedKey = server.MarshalPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey))

func TestRenderedTrustedKey(t *testing.T) {
	for _, tt := range []struct {
		name, value, want string
	}{
		{"unset: signatures not checked", "", ""},
		{"the upstream's signing.pub", trustedKey, trustedKey},
		{"with the newline of the file", trustedKey + "\n", trustedKey},
		{"two keys during a rotation", trustedKey + "," + rotatedKey, trustedKey + "," + rotatedKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(true)
			st.Config["sync_trusted_key"] = tt.value
			e.Install(t, st)
			res := e.H.Run(t, "config-changed", st)
			if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
				t.Fatalf("config-changed: %v %v", res.Err, res.Status)
			}
			if got := loadRendered(t, e).PatchSync.TrustedKey; got != tt.want {
				t.Errorf("patch-sync.trusted-key %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRelationRequests(t *testing.T) {
	tests := []struct {
		name        string
		leader      bool
		db          hookstest.Relation
		roles       string
		wantUnit    map[string]string
		wantApp     map[string]string
		wantWebsite map[string]string
	}{{
		name:        "pgsql leader",
		leader:      true,
		db:          lpt.DBRelation(lpt.UnitName),
		wantUnit:    map[string]string{"database": "livepatch"},
		wantApp:     map[string]string{"database": "livepatch"},
		wantWebsite: map[string]string{"port": "8080"},
	}, {
		name:        "pgsql non-leader",
		db:          lpt.DBRelation(lpt.UnitName),
		wantUnit:    map[string]string{"database": "livepatch"},
		wantWebsite: map[string]string{"port": "8080"},
	}, {
		name:        "postgresql_client leader",
		leader:      true,
		db:          lpt.DatabaseRelation(),
		roles:       "admin",
		wantApp:     map[string]string{"database": "livepatch", "extra-user-roles": "admin", "requested-secrets": lpt.RequestedSecrets},
		wantWebsite: map[string]string{"port": "8080"},
	}, {
		name:        "postgresql_client non-leader",
		db:          lpt.DatabaseRelation(),
		roles:       "admin",
		wantWebsite: map[string]string{"port": "8080"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(tt.leader)
			st.Config["psql_roles"] = tt.roles
			st.Relations = append(without(st.Relations, "db"), tt.db)
			e.Install(t, st)
			res := e.H.Run(t, tt.db.Endpoint+"-relation-changed", st, "postgresql/0")
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			r := res.Relation(tt.db.Endpoint)
			if diff := cmp.Diff(tt.wantUnit, r.LocalUnitData); diff != "" {
				t.Errorf("unit bag (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantApp, r.LocalAppData); diff != "" {
				t.Errorf("app bag (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWebsite, res.Relation("website").LocalUnitData); diff != "" {
				t.Errorf("website bag (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"8080/tcp"}, res.Ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			// A second run writes no relation data and opens the port again (open-port is
			// idempotent), closing nothing.
			again := e.H.Run(t, "config-changed", res.State)
			var ports []string
			for _, call := range again.ToolCalls {
				switch call.Name {
				case "relation-set", "close-port":
					t.Errorf("second run called %s", call)
				case "open-port":
					ports = append(ports, call.String())
				}
			}
			if diff := cmp.Diff([]string{"open-port 8080/tcp"}, ports); diff != "" {
				t.Errorf("second run's open-port calls (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRolesNeverSentOnDB: the postgresql charm goes Blocked when a requirer asks for roles
// on db, so psql_roles with db related is a Blocked status, nothing is asked for, and roles
// an earlier charm asked for are taken back.
func TestRolesNeverSentOnDB(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Relation("db").LocalUnitData = map[string]string{"database": "livepatch", "roles": "admin"}
	st.Relation("db").LocalAppData = map[string]string{"database": "livepatch", "roles": "admin"}
	e.Install(t, st)
	res := e.H.Run(t, "db-relation-changed", st, "postgresql/0")
	if diff := cmp.Diff(hooks.Active(lpt.MessageActive), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	want := map[string]string{"database": "livepatch"}
	if diff := cmp.Diff(want, res.Relation("db").LocalUnitData); diff != "" {
		t.Errorf("unit bag (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, res.Relation("db").LocalAppData); diff != "" {
		t.Errorf("app bag (-want +got):\n%s", diff)
	}

	st = res.State
	st.Config["psql_roles"] = "admin"
	res = e.H.Run(t, "config-changed", st)
	if diff := cmp.Diff(hooks.Blocked(livepatch.MessageRolesOnDB), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	for _, call := range res.ToolCalls {
		if call.Name == "relation-set" {
			t.Errorf("called %s", call)
		}
	}
}

// TestPortReopened: Juju discards the port changes of a failed hook, so a unit whose earlier
// hooks ran (its records and server in place) can have its port closed; the next hook opens it.
func TestPortReopened(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	st = res.State
	st.Ports = nil // the port change of a hook that failed after opening it
	for _, hook := range []string{"config-changed", "website-relation-changed"} {
		res = e.H.Run(t, hook, st, "haproxy/0")
		if res.Err != nil {
			t.Fatalf("%s: %v", hook, res.Err)
		}
		if diff := cmp.Diff([]string{"8080/tcp"}, res.Ports); diff != "" {
			t.Errorf("%s: ports (-want +got):\n%s", hook, diff)
		}
	}
}

func TestPortChange(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	st = res.State
	st.Config["port"] = 9090
	res = e.H.Run(t, "config-changed", st)
	if diff := cmp.Diff([]string{"9090/tcp"}, res.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if got := res.Relation("website").LocalUnitData["port"]; got != "9090" {
		t.Errorf("website port %q, want 9090", got)
	}
	if got := loadRendered(t, e).Server.Address; got != "10.0.0.5:9090" {
		t.Errorf("server address %q, want 10.0.0.5:9090", got)
	}
}

func TestDatabaseRelationBroken(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	// Juju 3 may still list the relation in its own -relation-broken hook.
	st.Relation("db").RemoteUnits = nil
	res := e.H.Run(t, "db-relation-broken", st)
	if diff := cmp.Diff(hooks.Blocked(livepatch.MessageNoDatabase), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

func TestInstall(t *testing.T) {
	e := lpt.New(t)
	res := e.Install(t, lpt.Ready(true))
	// The service is neither defined nor enabled before a valid configuration exists: a
	// reboot before the charm is configured starts nothing.
	want := []string{
		"id -u",
		"getent passwd livepatch",
		"useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin --comment Livepatch on-prem server livepatch",
		"getent passwd livepatch",
		"livepatch-server version",
	}
	if diff := cmp.Diff(want, hookstest.CommandLines(res.Commands)); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if res.AppVersion != "v1.0.0" {
		t.Errorf("application version %q, want v1.0.0", res.AppVersion)
	}
	if got := e.H.ReadFile(t, livepatch.ServerBinary); got != "fake livepatch-server v1" {
		t.Errorf("installed binary %q", got)
	}
	info, err := os.Stat(filepath.Join(e.H.Root, livepatch.ServerBinary))
	if err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("installed binary mode: %v %v", info.Mode(), err)
	}
	if res.Status.Name != "maintenance" {
		t.Errorf("status %v, want maintenance", res.Status)
	}
}

func TestInstallWithoutBundledBinary(t *testing.T) {
	e := lpt.New(t)
	if err := os.Remove(filepath.Join(e.H.CharmDir, livepatch.BundledBinary)); err != nil {
		t.Fatal(err)
	}
	st := lpt.Ready(true)
	for _, hook := range []string{"install", "config-changed"} {
		res := e.H.Run(t, hook, st)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if diff := cmp.Diff(hooks.Blocked(livepatch.MessageNoBinary), res.Status); diff != "" {
			t.Errorf("%s status (-want +got):\n%s", hook, diff)
		}
	}
}

func TestStopAndRemove(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	st = e.H.Run(t, "config-changed", st).State

	res := e.H.Run(t, "stop", st)
	want := []string{"systemctl stop livepatch-server.service", "systemctl disable livepatch-server.service"}
	if diff := cmp.Diff(want, hookstest.CommandLines(res.Commands)); diff != "" {
		t.Errorf("stop commands (-want +got):\n%s", diff)
	}
	res = e.H.Run(t, "remove", res.State)
	want = append(want, "systemctl daemon-reload")
	if diff := cmp.Diff(want, hookstest.CommandLines(res.Commands)); diff != "" {
		t.Errorf("remove commands (-want +got):\n%s", diff)
	}
	for _, p := range []string{livepatch.ServerBinary, livepatch.ConfigPath, livepatch.UnitPath, livepatch.StateDir} {
		if _, err := os.Stat(filepath.Join(e.H.Root, p)); !os.IsNotExist(err) {
			t.Errorf("%s still exists after remove (%v)", p, err)
		}
	}
}

func TestStopToleratesMissingService(t *testing.T) {
	e := lpt.New(t)
	e.SystemctlFail["stop"] = true
	res := e.H.Run(t, "stop", lpt.Ready(true))
	if res.Err != nil {
		t.Errorf("stop failed: %v", res.Err)
	}
}

// TestConfigYAMLMatchesStruct keeps config.yaml and the Config struct in step.
func TestConfigYAMLMatchesStruct(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(lpt.RepoRoot(), "charms", "livepatch", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Options map[string]struct {
			Type string `yaml:"type"`
		} `yaml:"options"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	yamlTypes := map[string]string{}
	for k, o := range doc.Options {
		yamlTypes[k] = o.Type
	}
	structTypes := map[string]string{}
	jujuTypes := map[reflect.Kind]string{reflect.String: "string", reflect.Int: "int", reflect.Bool: "boolean", reflect.Float64: "float"}
	for f := range reflect.TypeFor[livepatch.Config]().Fields() {
		structTypes[f.Tag.Get("json")] = jujuTypes[f.Type.Kind()]
	}
	if diff := cmp.Diff(yamlTypes, structTypes); diff != "" {
		t.Errorf("config.yaml options (-) and Config fields (+) differ:\n%s", diff)
	}
	for _, required := range strings.Fields(`url_template auth_basic_users port log_level psql_dbname dbconn_max
		dbconn_max_lifetime patchstore storage_path patch_cache_on patch_cache_size patch_cache_ttl patch_sync_enabled
		sync_token sync_upstream sync_upstream_tier sync_tier sync_tiers sync_interval sync_flavors sync_architectures
		sync_minimum_kernel_version sync_send_machine_reports sync_trusted_key http_proxy https_proxy no_proxy report_retention
		report_cleanup_interval report_cleanup_row_limit contract_server_url concurrency_limit burst_limit`) {
		if _, ok := yamlTypes[required]; !ok {
			t.Errorf("config.yaml lacks option %s", required)
		}
	}
}

func TestRenderedSyncTiers(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["sync_tiers"] = true
	e.Install(t, st)
	if res := e.H.Run(t, "config-changed", st); res.Err != nil {
		t.Fatal(res.Err)
	}
	cfg, err := config.Load(filepath.Join(e.H.Root, livepatch.ConfigPath))
	if err != nil {
		t.Fatalf("server rejects the rendered config: %v", err)
	}
	if !cfg.PatchSync.SyncTiers || cfg.PatchSync.Tier != "" {
		t.Errorf("rendered patch-sync: sync-tiers %v, tier %q; want true and empty", cfg.PatchSync.SyncTiers, cfg.PatchSync.Tier)
	}
}

func TestRenderedFilesystemStore(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["patchstore"] = "file" // the 2021 name
	e.Install(t, st)
	if res := e.H.Run(t, "config-changed", st); res.Err != nil {
		t.Fatal(res.Err)
	}
	got := loadRendered(t, e).PatchStorage
	want := config.PatchStorage{Type: config.StorageFilesystem, FilesystemPath: filepath.Join(e.H.Root, "/var/lib/livepatch/patches")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patch storage (-want +got):\n%s", diff)
	}
}
