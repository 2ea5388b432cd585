// Package livepatchtest sets up hookstest harnesses for the livepatch charm: a fake
// livepatch-server command line with an in-memory database schema, a fake systemctl, and
// builders for the model states of the guard chain.
package livepatchtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/livepatch-onprem/livepatch/actions"
	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
)

// Secrets used by the states below; tests check they never leak.
const (
	DBPassword    = "pg-s3cret/pass"
	ResourceToken = "resource-token-s3cret"
	UnitName      = "livepatch/0"
)

// Charm returns the livepatch charm as cmd/livepatch-charm wires it.
func Charm() hooks.Charm {
	return hooks.Charm{
		Reconcile: livepatch.Reconcile,
		Hooks:     livepatch.Hooks(),
		Actions:   actions.Livepatch(),
	}
}

// RepoRoot returns the root of the repository.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Env is a harness with fakes for the machine's commands.
type Env struct {
	H      *hookstest.Harness
	Server *Server
	// SystemctlFail makes systemctl fail for the named verbs ("restart").
	SystemctlFail map[string]bool
}

// Server is the fake livepatch-server command line: a database schema at Current of Latest.
type Server struct {
	mu sync.Mutex
	// Current and Latest are the schema versions (Current 0: empty database).
	Current, Latest int
	// Unreachable makes schema commands fail as if the database could not be reached.
	Unreachable bool
	// UpgradeFails makes schema upgrade fail.
	UpgradeFails bool
	// Version is printed by livepatch-server version.
	Version string
}

// SetSchema sets the schema versions.
func (s *Server) SetSchema(current, latest int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Current, s.Latest = current, latest
}

// Schema returns the schema versions.
func (s *Server) Schema() (current, latest int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Current, s.Latest
}

func (s *Server) run(args []string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(args) == 1 && args[0] == "version" {
		return []byte("livepatch-server " + s.Version + "\n"), nil
	}
	if len(args) < 2 || args[0] != "schema" {
		return nil, hookstest.Exit(1, "unknown command")
	}
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		return nil, hookstest.Exit(1, "--config is required (the charm never passes --db)")
	}
	info, err := os.Stat(args[i+1])
	if err != nil {
		return nil, hookstest.Exit(1, "cannot read config: "+err.Error())
	}
	if info.Mode().Perm() != 0o600 {
		return nil, hookstest.Exit(1, fmt.Sprintf("config mode %o, want 600", info.Mode().Perm()))
	}
	if s.Unreachable {
		return nil, hookstest.Exit(1, "cannot connect to the database: connection refused")
	}
	switch args[1] {
	case "check":
		switch {
		case s.Current == 0:
			return nil, hookstest.Exit(2, "database not initialized")
		case s.Current != s.Latest:
			return nil, hookstest.Exit(2, fmt.Sprintf("schema upgrade required: current %d, latest %d", s.Current, s.Latest))
		}
		return []byte("schema is current\n"), nil
	case "version":
		return fmt.Appendf(nil, `{"current":%d,"latest":%d}`+"\n", s.Current, s.Latest), nil
	case "upgrade":
		if s.UpgradeFails {
			return nil, hookstest.Exit(1, "migration 0003 failed: relation already exists")
		}
		from := s.Current
		s.Current = s.Latest
		return fmt.Appendf(nil, `{"from":%d,"to":%d}`+"\n", from, s.Latest), nil
	}
	return nil, hookstest.Exit(1, "unknown schema command")
}

// New returns a harness for the livepatch charm with the bundled server "v1" in the charm
// directory and a current database schema (version 3).
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{
		H:             hookstest.New(t, Charm()),
		Server:        &Server{Current: 3, Latest: 3, Version: "v1.0.0"},
		SystemctlFail: map[string]bool{},
	}
	e.H.LoadCharm(t, filepath.Join(RepoRoot(), "charms", "livepatch"))
	e.SetBundledBinary(t, "fake livepatch-server v1")
	e.H.System = hookstest.Commands{
		"livepatch-server": func(args []string, _ []byte) ([]byte, error) { return e.Server.run(args) },
		"systemctl": func(args []string, _ []byte) ([]byte, error) {
			if len(args) > 0 && e.SystemctlFail[args[0]] {
				return nil, hookstest.Exit(1, "Job for livepatch-server.service failed.")
			}
			return nil, nil
		},
	}
	return e
}

// SetBundledBinary sets the content of bin/livepatch-server in the charm directory.
func (e *Env) SetBundledBinary(t testing.TB, content string) {
	t.Helper()
	path := filepath.Join(e.H.CharmDir, livepatch.BundledBinary)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Install runs the install hook and fails the test if it fails.
func (e *Env) Install(t testing.TB, st hookstest.State) hookstest.Result {
	t.Helper()
	res := e.H.Run(t, "install", st)
	if res.Err != nil {
		t.Fatalf("install: %v", res.Err)
	}
	return res
}

// PeerRelation returns the peer relation with one other unit and the given app data.
func PeerRelation(appData map[string]string) hookstest.Relation {
	return hookstest.Relation{
		ID:            0,
		Endpoint:      livepatch.PeerEndpoint,
		RemoteApp:     "livepatch",
		RemoteUnits:   map[string]map[string]string{"livepatch/1": {}},
		LocalAppData:  appData,
		LocalUnitData: map[string]string{},
	}
}

// DBRelation returns a pgsql relation whose postgresql/0 has granted access to units.
func DBRelation(allowedUnits ...string) hookstest.Relation {
	return hookstest.Relation{
		ID:        3,
		Endpoint:  livepatch.DBEndpoint,
		RemoteApp: "postgresql",
		RemoteUnits: map[string]map[string]string{"postgresql/0": {
			"private-address": "10.0.0.9",
			"host":            "10.0.0.9",
			"port":            "5432",
			"database":        "livepatch",
			"user":            "juju_livepatch",
			"password":        DBPassword,
			"state":           "standalone",
			"allowed-units":   strings.Join(allowedUnits, " "),
		}},
	}
}

// DatabaseRelation returns a postgresql_client relation whose provider shared credentials.
func DatabaseRelation() hookstest.Relation {
	return hookstest.Relation{
		ID:          4,
		Endpoint:    livepatch.DatabaseEndpoint,
		RemoteApp:   "postgresql",
		RemoteUnits: map[string]map[string]string{"postgresql/0": {}},
		RemoteAppData: map[string]string{
			"database":  "livepatch",
			"endpoints": "10.0.0.9:5432,10.0.0.10:5432",
			"username":  "relation-4",
			"password":  DBPassword,
			"version":   "14.11",
		},
	}
}

// WebsiteRelation returns a website relation with haproxy.
func WebsiteRelation() hookstest.Relation {
	return hookstest.Relation{
		ID:          5,
		Endpoint:    livepatch.WebsiteEndpoint,
		RemoteApp:   "haproxy",
		RemoteUnits: map[string]map[string]string{"haproxy/0": {"private-address": "10.0.0.2"}},
	}
}

// Ready returns the state of a unit whose guard chain passes: url_template set, db related
// and granted, a resource token shared by the leader.
func Ready(leader bool) hookstest.State {
	return hookstest.State{
		Unit:      UnitName,
		Leader:    leader,
		ModelUUID: "6b5b8c3e-0d3c-4e39-8f4f-5d2a3a6d7e01",
		Address:   "10.0.0.5",
		Config:    map[string]any{"url_template": "http://lb.example/v1/patches/{filename}"},
		Relations: []hookstest.Relation{
			PeerRelation(map[string]string{livepatch.PeerResourceToken: ResourceToken}),
			DBRelation(UnitName, "livepatch/1"),
			WebsiteRelation(),
		},
	}
}

// Secrets returns the secret values of the fixtures (the database password in any
// encoding, the resource token), for leak checks.
func Secrets() []string {
	return []string{"pg-s3cret", ResourceToken}
}

// CheckNoLeaks fails the test if a secret appears in a status, a log line, a process
// argument or an action result.
func CheckNoLeaks(t testing.TB, res hookstest.Result, secrets ...string) {
	t.Helper()
	var public []string
	public = append(public, res.Status.Message, res.AppStatus.Message, res.ActionMessage)
	public = append(public, res.Logs...)
	public = append(public, res.ActionLogs...)
	for _, cmd := range append(slices.Clone(res.Commands), res.ToolCalls...) {
		public = append(public, cmd.String())
	}
	for k, v := range res.ActionResults {
		public = append(public, k+"="+v)
	}
	if res.Err != nil {
		public = append(public, res.Err.Error())
	}
	for _, s := range append(Secrets(), secrets...) {
		for _, p := range public {
			if strings.Contains(p, s) {
				t.Errorf("secret %q leaked in %q", s, p)
			}
		}
	}
}

// Restarts counts the systemctl restart commands of a run.
func Restarts(res hookstest.Result) int {
	n := 0
	for _, line := range hookstest.CommandLines(res.Commands) {
		if line == "systemctl restart "+livepatch.ServiceName {
			n++
		}
	}
	return n
}

// DecodeJSON decodes s into v or fails the test.
func DecodeJSON(t testing.TB, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("cannot decode %q: %v", s, err)
	}
}
