package livepatch_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

// Secrets of the leak test beyond the fixtures' (database password, resource token).
const (
	syncTokenSecret = "sync-t0ken-s3cret"
	userPassword    = "us3r-passw0rd-s3cret"
)

// TestNoSecretInAnyHookOrAction runs every hook and every action of the charm, in every
// state the guard chain knows (and failures: a database that cannot be reached, a restart
// that fails, a server that does not come back, a schema that waits for schema-upgrade),
// with secrets in the configuration, the relations and the action parameters, and checks
// that none shows in a status, a log line, an action result or message, or the arguments of
// a command or hook tool.
func TestNoSecretInAnyHookOrAction(t *testing.T) {
	hooksToRun := []string{
		"install", "leader-elected", "leader-settings-changed", "config-changed", "start", "upgrade-charm", "update-status",
		"db-relation-created", "db-relation-joined", "db-relation-changed", "db-relation-departed", "db-relation-broken",
		"database-relation-created", "database-relation-changed", "database-relation-broken",
		"website-relation-joined", "website-relation-changed", "website-relation-departed",
		"livepatch-relation-created", "livepatch-relation-joined", "livepatch-relation-changed", "livepatch-relation-departed",
		"secret-changed", "stop", "remove",
	}
	actionsToRun := []struct {
		name   string
		params map[string]any
	}{
		{"schema-version", nil},
		{"schema-upgrade", nil},
		{"restart", nil},
		{"set-basic-users", map[string]any{"users": "admin:" + userPassword}},
		{"set-basic-users", map[string]any{"users": "admin:" + userPassword + "x", "append": true}},
		{"get-resource-token", nil},
		{"get-resource-token", map[string]any{"contract-token": "c0ntract-t0ken-s3cret"}},
	}
	states := []struct {
		name  string
		setup func(*lpt.Env, *hookstest.State)
	}{
		{"ready", nil},
		{"sync token in config", func(_ *lpt.Env, s *hookstest.State) { s.Config["sync_token"] = syncTokenSecret }},
		{"postgresql_client", func(_ *lpt.Env, s *hookstest.State) {
			s.Relations = append(without(s.Relations, "db"), lpt.DatabaseRelation())
		}},
		{"postgresql_client with secrets", func(_ *lpt.Env, s *hookstest.State) {
			r, secrets := lpt.DatabaseSecretRelation()
			s.Relations = append(without(s.Relations, "db"), r)
			s.Secrets = secrets
		}},
		{"both database relations", func(_ *lpt.Env, s *hookstest.State) { s.Relations = append(s.Relations, lpt.DatabaseRelation()) }},
		{"database unreachable", func(e *lpt.Env, _ *hookstest.State) { e.Server.Unreachable = true }},
		{"empty database", func(e *lpt.Env, _ *hookstest.State) { e.Server.SetSchema(0, 3) }},
		{"schema behind", func(e *lpt.Env, _ *hookstest.State) { e.Server.SetSchema(2, 3) }},
		{"migration fails", func(e *lpt.Env, _ *hookstest.State) { e.Server.SetSchema(2, 3); e.Server.UpgradeFails = true }},
		{"restart fails", func(e *lpt.Env, _ *hookstest.State) { e.SystemctlFail["restart"] = true }},
		{"server unhealthy", func(e *lpt.Env, _ *hookstest.State) {
			e.Health = func(string) int { return http.StatusServiceUnavailable }
		}},
		{"invalid options", func(_ *lpt.Env, s *hookstest.State) {
			s.Config["auth_basic_users"] = "admin:" + userPassword
			s.Config["sync_trusted_key"] = syncTokenSecret
		}},
		{"s3 store", func(_ *lpt.Env, s *hookstest.State) {
			s3 := s3State()
			for _, k := range []string{"patchstore", "s3_endpoint", "s3_bucket", "s3_credentials_secret"} {
				s.Config[k] = s3.Config[k]
			}
			s.Secrets = s3.Secrets
		}},
		{"s3 store unusable", func(e *lpt.Env, s *hookstest.State) {
			s3 := s3State()
			for _, k := range []string{"patchstore", "s3_endpoint", "s3_bucket"} {
				s.Config[k] = s3.Config[k]
			}
			s.Relations = append(s.Relations, s3Relation())
			e.Server.StorageProblem = "s3 at rgw.example:7480 refused the credentials"
		}},
		{"postgresql offers a bad host", func(_ *lpt.Env, s *hookstest.State) {
			s.Relation("db").RemoteUnits["postgresql/0"]["host"] = "10.0.0.9/other?sslmode=disable"
		}},
	}
	secrets := []string{syncTokenSecret, userPassword, "c0ntract-t0ken-s3cret", s3SecretKey}
	for _, leader := range []bool{true, false} {
		for _, s := range states {
			t.Run(s.name, func(t *testing.T) {
				e := lpt.New(t)
				st := lpt.Ready(leader)
				// get-resource-token reaches nothing but a closed loopback port.
				st.Config["contract_server_url"] = "http://127.0.0.1:1"
				if s.setup != nil {
					s.setup(e, &st)
				}
				e.Install(t, st)
				if s.name == "sync token in config" {
					// The secrets do reach the charm: the rendered configuration holds them.
					lpt.CheckNoLeaks(t, e.H.Run(t, "config-changed", st), secrets...)
					rendered := e.H.ReadFile(t, livepatch.ConfigPath)
					if !strings.Contains(rendered, "pg-s3cret") || !strings.Contains(rendered, syncTokenSecret) {
						t.Fatalf("the secrets are not in the rendered configuration:\n%s", rendered)
					}
				}
				for _, hook := range hooksToRun {
					res := e.H.Run(t, hook, st, "postgresql/0")
					lpt.CheckNoLeaks(t, res, secrets...)
					if res.Err == nil && !slices.Contains([]string{"stop", "remove"}, hook) {
						st = res.State
					}
				}
				// A staged upgrade that waits for schema-upgrade.
				e.Server.Binaries = map[string]lpt.Binary{"fake livepatch-server v2": {Version: "v2.0.0", Latest: 4}}
				e.SetBundledBinary(t, "fake livepatch-server v2")
				lpt.CheckNoLeaks(t, e.H.Run(t, "upgrade-charm", st), secrets...)
				for _, a := range actionsToRun {
					res := e.H.RunAction(t, a.name, a.params, st)
					if res.Err != nil {
						t.Fatalf("%s: %v", a.name, res.Err)
					}
					lpt.CheckNoLeaks(t, res, secrets...)
				}
			})
		}
	}
}
