// Package livepatchtest sets up hookstest harnesses for the livepatch charm: a fake
// livepatch-server command line with an in-memory database schema, a fake systemctl, and
// builders for the model states of the guard chain.
package livepatchtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/livepatch-onprem/livepatch/actions"
	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/internal/testbin"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Secrets used by the states below; tests check they never leak.
const (
	DBPassword    = "pg-s3cret/pass"
	ResourceToken = "resource-token-s3cret"
	UnitName      = "livepatch/0"
	// ModelUUID is the model of Ready.
	ModelUUID = "6b5b8c3e-0d3c-4e39-8f4f-5d2a3a6d7e01"
)

// RepoRoot returns the root of the repository (testbin.RepoRoot); it panics outside it.
func RepoRoot() string {
	root, err := testbin.RepoRoot()
	if err != nil {
		panic(err)
	}
	return root
}

// Env is a harness with fakes for the machine's commands.
type Env struct {
	H      *hookstest.Harness
	Server *Server
	// SystemctlFail makes systemctl fail for the named verbs ("restart").
	SystemctlFail map[string]bool
	// Health answers GET /debug/status of the server at addr (host:port) with an HTTP
	// status, 0 meaning the connection is refused; nil answers 200. Addresses on 127.0.0.1
	// go to the network, so tests can run real HTTP servers.
	Health func(addr string) int
	// StatusPolls counts the /debug/status requests answered by Health.
	StatusPolls int
	// Users are the system users useradd created. getent gives them UserID (as group id
	// too); id -u says root, as hooks run under Juju.
	Users map[string]bool
}

// Server is the fake livepatch-server command line: a database schema at Current, and
// binaries that know schema versions up to Latest.
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
	// Binaries describes binaries by their content; a binary without an entry has Version
	// and Latest.
	Binaries map[string]Binary
	// Upgrades records the content of each binary that ran schema upgrade.
	Upgrades []string
	// StorageProblem makes storage check fail with exit 3 and this reason, as the real
	// one does for an S3 bucket that is missing, unreachable or refuses the credentials.
	StorageProblem string
	// StorageChecks records the patch-storage config each storage check read.
	StorageChecks []config.PatchStorage
}

// Binary is a fake server binary's version and the schema version it needs.
type Binary struct {
	Version string
	Latest  int
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

func (s *Server) run(binary string, args []string) ([]byte, error) {
	content, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("cannot run %s: %w", binary, exec.ErrNotFound)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.Binaries[string(content)]
	if !ok {
		b = Binary{Version: s.Version, Latest: s.Latest}
	}
	if len(args) == 1 && args[0] == "version" {
		return []byte("livepatch-server " + b.Version + "\n"), nil
	}
	if len(args) >= 2 && args[0] == "storage" && args[1] == "check" {
		return s.storageCheck(args)
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
		case s.Current < b.Latest:
			return nil, hookstest.Exit(2, fmt.Sprintf("schema upgrade required: current %d, latest %d", s.Current, b.Latest))
		}
		return []byte("schema is current\n"), nil
	case "version":
		return fmt.Appendf(nil, `{"current":%d,"latest":%d}`+"\n", s.Current, b.Latest), nil
	case "upgrade":
		if s.UpgradeFails {
			return nil, hookstest.Exit(1, "migration 0003 failed: relation already exists")
		}
		s.Upgrades = append(s.Upgrades, string(content))
		from := s.Current
		s.Current = max(s.Current, b.Latest)
		return fmt.Appendf(nil, `{"from":%d,"to":%d}`+"\n", from, s.Current), nil
	}
	return nil, hookstest.Exit(1, "unknown schema command")
}

// New returns a harness for the livepatch charm with the bundled server "v1" in the charm
// directory and a current database schema (version 3).
func New(t testing.TB) *Env {
	t.Helper()
	return NewWithServer(t, &Server{Current: 3, Latest: 3, Version: "v1.0.0"})
}

// NewWithServer returns a harness like New whose database and binaries are srv (units of
// one application share it).
func NewWithServer(t testing.TB, srv *Server) *Env {
	t.Helper()
	e := &Env{
		H:             hookstest.New(t, actions.Charm()),
		Server:        srv,
		SystemctlFail: map[string]bool{},
		Users:         map[string]bool{},
	}
	e.H.LoadCharm(t, filepath.Join(RepoRoot(), "charms", "livepatch"))
	e.SetBundledBinary(t, "fake livepatch-server v1")
	e.H.System = runner{e}
	e.H.HTTP = &http.Client{Transport: fakeServers{e}}
	return e
}

// runner runs the fake machine commands: systemctl and the server binaries (installed or
// staged: any program whose name starts with livepatch-server).
type runner struct{ e *Env }

func (r runner) Run(_ context.Context, cmd hooks.Command) ([]byte, error) {
	switch name := filepath.Base(cmd.Name); {
	case strings.HasPrefix(name, "livepatch-server"):
		return r.e.Server.run(cmd.Name, cmd.Args)
	case name == "systemctl":
		if len(cmd.Args) > 0 && r.e.SystemctlFail[cmd.Args[0]] {
			return nil, hookstest.Exit(1, "Job for livepatch-server.service failed.")
		}
		return nil, nil
	case name == "id" && slices.Equal(cmd.Args, []string{"-u"}):
		return []byte("0\n"), nil
	case name == "getent" && len(cmd.Args) == 2 && cmd.Args[0] == "passwd":
		if !r.e.Users[cmd.Args[1]] {
			return nil, hookstest.Exit(2, "")
		}
		uid := UserID()
		return fmt.Appendf(nil, "%s:x:%d:%d:Livepatch on-prem server:/nonexistent:/usr/sbin/nologin\n", cmd.Args[1], uid, uid), nil
	case name == "useradd" && len(cmd.Args) > 0:
		user := cmd.Args[len(cmd.Args)-1]
		if r.e.Users[user] {
			return nil, hookstest.Exit(9, fmt.Sprintf("useradd: user '%s' already exists", user))
		}
		r.e.Users[user] = true
		return nil, nil
	}
	return nil, fmt.Errorf("cannot run %s: %w", cmd.Name, exec.ErrNotFound)
}

// UserID is the id of the system users the fake useradd creates: one no other user has when
// the test runs as root, so that the charm's chown is seen; the test's own id otherwise (an
// unprivileged chown can only keep it).
func UserID() int {
	if os.Geteuid() == 0 {
		return 64123
	}
	return os.Getuid()
}

// fakeServers answers /debug/status of the unit's server from Env.Health.
type fakeServers struct{ e *Env }

func (f fakeServers) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Host, "127.0.0.1:") {
		return http.DefaultTransport.RoundTrip(r)
	}
	f.e.StatusPolls++
	code := http.StatusOK
	if f.e.Health != nil {
		code = f.e.Health(r.URL.Host)
	}
	if code == 0 {
		return nil, fmt.Errorf("dial tcp %s: connect: connection refused", r.URL.Host)
	}
	body := `{"status":"OK","database":{"status":"OK"},"schema":{"current":3,"latest":3}}`
	if code != http.StatusOK {
		body = `{"status":"degraded","database":{"status":"dial tcp 10.0.0.9:5432: connection refused"},"schema":{"current":3,"latest":3}}`
	}
	return &http.Response{
		StatusCode: code,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    r,
	}, nil
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

// RequestedSecrets is the requested-secrets the leader sends on the database relation, as
// data_interfaces' DatabaseRequires sends it.
const RequestedSecrets = `["username", "password", "tls", "tls-ca", "uris", "read-only-uris", "entity-name", "entity-password"]`

// DatabaseSecretRelation returns the database relation as the postgresql charm answers a
// requirer that asked for secrets: username, password and uris in the secret secret-user
// names, tls and tls-ca in the one secret-tls names (TLS off), the rest plain. The secrets
// are in the returned map, by id, for State.Secrets.
func DatabaseSecretRelation() (hookstest.Relation, map[string]hookstest.Secret) {
	r := DatabaseRelation()
	delete(r.RemoteAppData, "username")
	delete(r.RemoteAppData, "password")
	r.RemoteAppData["secret-user"] = "secret://" + ModelUUID + "/" + UserSecretID
	r.RemoteAppData["secret-tls"] = "secret://" + ModelUUID + "/" + TLSSecretID
	r.RemoteAppData["read-only-endpoints"] = "10.0.0.9:5432"
	r.LocalAppData = map[string]string{"database": "livepatch", "requested-secrets": RequestedSecrets}
	return r, map[string]hookstest.Secret{
		UserSecretID: {Revisions: []map[string]string{{
			"username": "relation-4",
			"password": DBPassword,
			"uris":     "postgresql://relation-4:" + DBPassword + "@10.0.0.9:5432/livepatch",
		}}},
		TLSSecretID: {Revisions: []map[string]string{{"tls": "False", "tls-ca": ""}}},
	}
}

// Ids of the secrets of DatabaseSecretRelation.
const (
	UserSecretID = "d4ab1s3cr3tus3r00000"
	TLSSecretID  = "d4ab1s3cr3tt1s000000"
)

// WebsiteRelation returns a website relation with haproxy.
func WebsiteRelation() hookstest.Relation {
	return hookstest.Relation{
		ID:        5,
		Endpoint:  livepatch.WebsiteEndpoint,
		RemoteApp: "haproxy",
		RemoteUnits: map[string]map[string]string{"haproxy/0": {
			// What Juju puts in every unit's relation data.
			"private-address": "10.0.0.2", "ingress-address": "10.0.0.2", "egress-subnets": "10.0.0.2/32",
		}},
	}
}

// Upstream is the sync_upstream of Ready.
const Upstream = "https://central.example"

// MessageActive is the status of a Ready unit that serves: it syncs from Upstream.
const MessageActive = livepatch.MessageActive + "; syncing from central.example"

// Ready returns the state of a unit whose guard chain passes: url_template set, db related
// and granted, a resource token shared by the leader.
func Ready(leader bool) hookstest.State {
	return hookstest.State{
		Unit:      UnitName,
		Leader:    leader,
		ModelUUID: ModelUUID,
		Address:   "10.0.0.5",
		Config:    map[string]any{"url_template": "http://lb.example/v1/patches/{filename}", "sync_upstream": Upstream},
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

// Cluster runs the hooks of the units of one livepatch application that share a peer
// relation, a database and the server binaries, carrying the peer relation data between
// them as Juju does: what a successful hook wrote becomes visible to the other units, and
// each of them is queued a livepatch-relation-changed hook (never the writer itself).
type Cluster struct {
	Server *Server
	// Units[i] is the harness of livepatch/i; States[i] its last state.
	Units  []*Env
	States []hookstest.State
	// App is the peer application bag; Bags[i] is the peer bag of livepatch/i.
	App  map[string]string
	Bags []map[string]string
	// Restarts lists the units, by number, in the order they restarted their server.
	Restarts []int

	queue []int
}

// NewCluster returns n ready units, livepatch/0 the leader, each on its own address
// (10.0.0.10+i) and sharing a database at schema 3 and the bundled server "v1".
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cl := &Cluster{Server: &Server{Current: 3, Latest: 3, Version: "v1.0.0"}, App: map[string]string{}}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("livepatch/%d", i))
	}
	for i := range n {
		e := NewWithServer(t, cl.Server)
		st := Ready(i == 0)
		st.Unit = names[i]
		st.Address = fmt.Sprintf("10.0.0.%d", 10+i)
		st.Relations = []hookstest.Relation{PeerRelation(nil), DBRelation(names...), WebsiteRelation()}
		cl.Units = append(cl.Units, e)
		cl.States = append(cl.States, st)
		cl.Bags = append(cl.Bags, map[string]string{})
	}
	cl.App[livepatch.PeerResourceToken] = ResourceToken
	return cl
}

// Addr returns the server address of livepatch/i.
func (cl *Cluster) Addr(i int) string { return fmt.Sprintf("10.0.0.%d:8080", 10+i) }

// state returns the state of unit i with the current peer data.
func (cl *Cluster) state(i int) hookstest.State {
	st := cl.States[i].Clone()
	peer := st.Relation(livepatch.PeerEndpoint)
	peer.LocalAppData = maps.Clone(cl.App)
	peer.LocalUnitData = maps.Clone(cl.Bags[i])
	peer.RemoteUnits = map[string]map[string]string{}
	for j := range cl.Units {
		if j != i {
			peer.RemoteUnits[cl.States[j].Unit] = maps.Clone(cl.Bags[j])
		}
	}
	return st
}

// SetLeader makes livepatch/i the leader.
func (cl *Cluster) SetLeader(i int) {
	for j := range cl.States {
		cl.States[j].Leader = j == i
	}
}

// Run runs hook on livepatch/i and carries what it wrote to the other units.
func (cl *Cluster) Run(t testing.TB, i int, hook string) hookstest.Result {
	t.Helper()
	return cl.commit(t, i, cl.Units[i].H.Run(t, hook, cl.state(i)))
}

// RunAction runs action on livepatch/i and carries what it wrote to the other units.
func (cl *Cluster) RunAction(t testing.TB, i int, action string, params map[string]any) hookstest.Result {
	t.Helper()
	return cl.commit(t, i, cl.Units[i].H.RunAction(t, action, params, cl.state(i)))
}

func (cl *Cluster) commit(t testing.TB, i int, res hookstest.Result) hookstest.Result {
	t.Helper()
	CheckNoLeaks(t, res)
	if Restarts(res) > 0 {
		cl.Restarts = append(cl.Restarts, i)
	}
	cl.States[i].Status = res.Status
	cl.States[i].AppVersion = res.AppVersion
	cl.States[i].Logs = res.Logs
	if res.Err != nil {
		return res
	}
	cl.States[i].Relations = res.Relations
	cl.States[i].Ports = res.Ports
	peer := res.Relation(livepatch.PeerEndpoint)
	appChanged := !maps.Equal(peer.LocalAppData, cl.App) && cl.States[i].Leader
	bagChanged := !maps.Equal(peer.LocalUnitData, cl.Bags[i])
	if appChanged {
		cl.App = maps.Clone(peer.LocalAppData)
	}
	if bagChanged {
		cl.Bags[i] = maps.Clone(peer.LocalUnitData)
	}
	if appChanged || bagChanged {
		for j := range cl.Units {
			if j != i && !slices.Contains(cl.queue, j) {
				cl.queue = append(cl.queue, j)
			}
		}
	}
	return res
}

// Settle runs the queued livepatch-relation-changed hooks until none is left, failing the
// test if a hook fails or the units never settle.
func (cl *Cluster) Settle(t testing.TB) {
	t.Helper()
	for range 20 * len(cl.Units) {
		if len(cl.queue) == 0 {
			return
		}
		i := cl.queue[0]
		cl.queue = cl.queue[1:]
		if res := cl.Run(t, i, "livepatch-relation-changed"); res.Err != nil {
			t.Fatalf("livepatch/%d: livepatch-relation-changed: %v", i, res.Err)
		}
	}
	t.Fatalf("the units did not settle: still queued %v", cl.queue)
}

// Deploy installs every unit and runs config-changed on each, then settles.
func (cl *Cluster) Deploy(t testing.TB) {
	t.Helper()
	for i, e := range cl.Units {
		e.Install(t, cl.state(i))
	}
	for i := range cl.Units {
		if res := cl.Run(t, i, "config-changed"); res.Err != nil {
			t.Fatalf("livepatch/%d: config-changed: %v", i, res.Err)
		}
	}
	cl.Settle(t)
}

// Status returns the status of livepatch/i.
func (cl *Cluster) Status(i int) hooks.Status { return cl.States[i].Status }

// storageCheck is storage check --config FILE: it reads the file as the server does.
func (s *Server) storageCheck(args []string) ([]byte, error) {
	if len(args) != 4 || args[2] != "--config" {
		return nil, hookstest.Exit(2, "usage: storage check --config FILE")
	}
	c, err := config.Load(args[3])
	if err != nil {
		return nil, hookstest.Exit(1, "error: "+err.Error())
	}
	s.StorageChecks = append(s.StorageChecks, c.PatchStorage)
	if s.StorageProblem != "" {
		return nil, hookstest.Exit(3, "error: "+s.StorageProblem)
	}
	return []byte("patch storage (" + c.PatchStorage.Type + ") is usable\n"), nil
}
