package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// exposure collects what the scenarios show: every workload and agent status the model
// went through, the debug log, the services' logs, action results, CLI output and the
// argument lists of every process seen on the machine; and the secrets none of them may
// hold.
type exposure struct {
	mu      sync.Mutex
	secrets map[string]string // value -> what it is
	texts   map[string]string // text -> where it was seen
	argv    map[string]bool   // process argument lists seen
	// argvAllowed are argument list prefixes that take a secret by design (see check).
	argvAllowed []string
	samples     int

	stop func()
}

func newExposure() *exposure {
	return &exposure{secrets: map[string]string{}, texts: map[string]string{}, argv: map[string]bool{}}
}

// secret registers a value that must not show; values shorter than 8 bytes are too likely
// to match by chance and are ignored (none of ours is that short).
func (e *exposure) secret(what, value string) {
	if len(value) < 8 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets[value] = what
	// The same value percent-encoded, as in a connection string, and hex-encoded, as
	// PostgreSQL shows bytea.
	if q := url.QueryEscape(value); q != value {
		e.secrets[q] = what + " (escaped)"
	}
	e.secrets[hex.EncodeToString([]byte(value))] = what + " (hex)"
}

// database records the rows of every table of the deployment's database (but the patch
// files' bytes): a token the product does not need back must be stored hashed.
func (e *exposure) database(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		if name != "patch_file_data" {
			tables = append(tables, name)
		}
	}
	rows.Close()
	if len(tables) < 5 {
		t.Fatalf("only tables %v in the database", tables)
	}
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT t::text FROM `+pq.QuoteIdentifier(table)+` t`)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for rows.Next() {
			var row string
			if err := rows.Scan(&row); err != nil {
				t.Fatal(err)
			}
			b.WriteString(row + "\n")
		}
		rows.Close()
		e.seen("the database table "+table, b.String())
	}
}

// seen records a text shown at where.
func (e *exposure) seen(where, text string) {
	if text == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.texts[text]; !ok {
		e.texts[text] = where
	}
}

// action records an action's result.
func (e *exposure) action(res jujusim.ActionResult) {
	where := "action " + res.Name + " on " + res.Unit
	data, _ := json.Marshal(res.Results)
	e.seen(where+" results", string(data))
	e.seen(where+" message", res.Message)
	e.seen(where+" stdout", res.Stdout)
	e.seen(where+" stderr", res.Stderr)
	e.seen(where+" log", strings.Join(res.Log, "\n"))
}

// watch starts recording every status the model goes through and, every 20ms, the
// argument lists of every process of the machine, until the returned stop.
func (e *exposure) watch(m *jujusim.Model) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		m.Wait(ctx, func(st *jujusim.Status) bool {
			e.statuses(st)
			return false
		})
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			e.sampleProcesses()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	e.stop = func() { cancel(); wg.Wait() }
}

func (e *exposure) statuses(st *jujusim.Status) {
	for _, app := range slices.Sorted(maps.Keys(st.Applications)) {
		a := st.Applications[app]
		e.seen("status of "+app, a.Status.Message)
		for name, u := range a.Units {
			e.seen("status of "+name, u.Workload.Message)
			e.seen("agent status of "+name, u.Agent.Message)
			for sub, s := range u.Subordinates {
				e.seen("status of "+sub, s.Workload.Message)
			}
		}
	}
}

// sampleProcesses records the argument list of every process.
func (e *exposure) sampleProcesses() {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var lists []string
	for _, p := range dirs {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		lists = append(lists, string(bytes.ReplaceAll(bytes.TrimRight(data, "\x00"), []byte{0}, []byte{' '})))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.samples++
	for _, l := range lists {
		if len(e.argv) < 200000 {
			e.argv[l] = true
		}
	}
}

// command records a command run by the scenario and its output.
func (e *exposure) command(argv []string, stdout, stderr string) {
	line := strings.Join(argv, " ")
	e.mu.Lock()
	e.argv[line] = true
	e.mu.Unlock()
	e.seen("stdout of "+line, stdout)
	e.seen("stderr of "+line, stderr)
}

// logs records the debug log and every service log of the model's machines.
func (e *exposure) logs(m *jujusim.Model) {
	var b strings.Builder
	for _, l := range m.Logs() {
		b.WriteString(l.String() + "\n")
	}
	e.seen("debug-log", b.String())
	for id, mach := range m.Status().Machines {
		e.serviceLogs("machine "+id, mach.Root)
	}
}

// serviceLogs records the service logs under a machine root.
func (e *exposure) serviceLogs(where, root string) {
	files, _ := filepath.Glob(filepath.Join(root, "var/log/jujusim/*.log"))
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil {
			e.seen(where+" "+filepath.Base(f), string(data))
		}
	}
}

// check fails the test for every secret shown, and reports how much it looked at.
func (e *exposure) check(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	leaks := 0
	for value, what := range e.secrets {
		for text, where := range e.texts {
			if strings.Contains(text, value) {
				leaks++
				t.Errorf("%s shows in %s: ...%s...", what, where, around(text, value))
			}
		}
		for line := range e.argv {
			if strings.Contains(line, value) && !e.allowedLocked(line) {
				leaks++
				t.Errorf("%s shows in the argument list %q", what, redact(line, value))
			}
		}
	}
	size := 0
	for text := range e.texts {
		size += len(text)
	}
	t.Logf("secrets: %d values (%d leaks) checked against %d texts (%d bytes) and %d argument lists (%d /proc samples)",
		len(e.secrets), leaks, len(e.texts), size, len(e.argv), e.samples)
}

func (e *exposure) allowedLocked(line string) bool {
	for _, prefix := range e.argvAllowed {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// around returns the text around value, with value redacted.
func around(text, value string) string {
	i := strings.Index(text, value)
	start, end := max(0, i-60), min(len(text), i+len(value)+60)
	return redact(text[start:end], value)
}

func redact(s, value string) string { return strings.ReplaceAll(s, value, "<SECRET>") }

// collectSecrets registers the deployment's secrets: the database password, the resource
// token, the Ubuntu Pro tokens, the admin passwords, the auth tokens issued.
func collectSecrets(t *testing.T, d *deploy.Deployment, e *exposure) {
	t.Helper()
	m := d.Model
	e.secret("the admin password", d.AdminPassword)
	e.secret("the Ubuntu Pro contract token", deploy.ContractToken)
	if d.Upstream != nil {
		e.secret("the upstream's admin password", d.Upstream.AdminPassword)
	}
	e.secret("the stable auth token", d.AuthToken(t, deploy.UpstreamTier))
	for _, r := range m.Status().Relations {
		for _, side := range []string{"postgresql/0", "livepatch"} {
			data, err := m.RelationData(r.ID, side)
			if err != nil {
				continue
			}
			for _, k := range []string{"password", "schema_password"} {
				e.secret("the database password ("+k+" on relation "+strconv.Itoa(r.ID)+")", data[k])
			}
			e.secret("the resource token", data[livepatch.PeerResourceToken])
		}
	}
	for _, u := range d.Units("livepatch") {
		root, err := m.UnitRoot(u)
		if err != nil {
			continue
		}
		var tok struct {
			MachineToken string `json:"machineToken"`
		}
		if data, err := os.ReadFile(filepath.Join(root, "var/lib/ubuntu-advantage/private/machine-token.json")); err == nil {
			json.Unmarshal(data, &tok)
			e.secret("the Ubuntu Pro machine token of "+u, tok.MachineToken)
		}
	}
}

// cliTour runs every command of the admin CLI and the client that the scenarios use, as
// the deployment guide and the admin tour run them, recording their argument lists and
// output, and registers the tokens they make as secrets.
func cliTour(t *testing.T, d *deploy.Deployment, e *exposure) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	admin := func(printsSecret bool, args ...string) string {
		t.Helper()
		// The password comes from the environment (LIVEPATCH_ADMIN_PASSWORD), never -a
		// user:password, which would put it in the argument list.
		stdout, stderr, err := d.RunAdmin(ctx, args...)
		out := stdout
		if printsSecret {
			out = "" // printed once, on purpose, for the operator to copy
		}
		e.command(append([]string{"livepatch-admin"}, args...), out, stderr)
		if err != nil {
			t.Fatalf("livepatch-admin %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		return stdout
	}
	t.Setenv("LIVEPATCH_ADMIN_PASSWORD", d.AdminPassword)
	admin(false, "login", "-a", d.AdminUser)
	var sessions map[string]struct {
		Token string `json:"token"`
	}
	data, err := os.ReadFile(filepath.Join(d.Dir, "admin", "sessions.json"))
	if err != nil || json.Unmarshal(data, &sessions) != nil || len(sessions) == 0 {
		t.Fatalf("no session cached by livepatch-admin login: %v", err)
	}
	for _, s := range sessions {
		e.secret("the admin session token of livepatch-admin login", s.Token)
	}
	admin(false, "tier", "list")
	admin(false, "tier", "add", "secrets-qa", "--after", "beta")
	admin(false, "tier", "patches", "stable")
	admin(false, "patch", "list")
	admin(false, "patch", "show", deploy.DemoPatch)
	admin(false, "patch", "promote", deploy.DemoPatch, "secrets-qa")
	admin(false, "storage", "patches")
	token := strings.TrimSpace(admin(true, "auth-token", "secrets-tok", "secrets-qa", "--format", "json"))
	var issued struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(token), &issued); err != nil || issued.Token == "" {
		t.Fatalf("auth-token printed %q: %v", token, err)
	}
	e.secret("the auth token issued by livepatch-admin auth-token", issued.Token)
	admin(false, "auth-tokens", "list")
	syncOut := strings.TrimSpace(admin(true, "sync-tokens", "add", "stable", "secrets-region", "--format", "json"))
	var syncTok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(syncOut), &syncTok); err != nil || syncTok.Token == "" {
		t.Fatalf("sync-tokens add printed %q: %v", syncOut, err)
	}
	e.secret("the sync token issued by livepatch-admin sync-tokens add", syncTok.Token)
	admin(false, "sync-tokens", "list")
	admin(false, "sync", "status")
	admin(false, "sync", "reports")

	// A machine enrols with the token, as the guide says: livepatch-client enable <token>.
	// The token is an argument there, as with canonical-livepatch: see check.
	m := d.Enrol(t, deploy.MachineConfig{Tier: "secrets-qa", Token: issued.Token})
	e.argvAllowed = append(e.argvAllowed, d.Bin.Client+" --state-dir "+m.StateDir+" enable ")
	client := func(args ...string) {
		t.Helper()
		stdout, stderr, err := m.RunClient(ctx, args...)
		e.command(append([]string{"livepatch-client"}, args...), stdout, stderr)
		if err != nil {
			t.Fatalf("livepatch-client %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
	}
	client("status")
	client("status", "--verbose")
	client("status", "--format", "json")
	client("refresh")
	client("config")
	if data, err := os.ReadFile(filepath.Join(m.StateDir, "machine-token")); err == nil {
		e.secret("the machine token of an enrolled machine", strings.TrimSpace(string(data)))
	} else {
		t.Errorf("cannot read the machine token: %v", err)
	}

	admin(false, "report", "machines", "secrets-qa")
	admin(false, "report", "machines", "stable", "--format", "json")
	admin(false, "report", "patch-health", "secrets-qa", deploy.DemoPatch)
	admin(false, "report", "kernels")
	admin(false, "sync", "trigger", "--wait")
	client("disable")
	admin(false, "auth-tokens", "revoke", "secrets-tok")
	admin(false, "sync-tokens", "revoke", "secrets-region")
	admin(false, "logout")
	// Wrong credentials are refused without echoing them.
	bad := "wrong-" + randomHex(t, 8)
	e.secret("a wrong admin password", bad)
	t.Setenv("LIVEPATCH_ADMIN_PASSWORD", bad)
	stdout, stderr, err := d.RunAdmin(ctx, "login", "-a", d.AdminUser)
	e.command([]string{"livepatch-admin", "login", "-a", d.AdminUser}, stdout, stderr)
	if err == nil {
		t.Error("login with a wrong password succeeded")
	}
}

// actionTour runs every action of the livepatch charm, recording the results.
func actionTour(t *testing.T, d *deploy.Deployment, e *exposure) {
	t.Helper()
	password := "Secrets-" + randomHex(t, 8)
	e.secret("a password given to set-basic-users", password)
	for _, a := range []struct {
		unit, name string
		params     map[string]any
	}{
		{"livepatch/leader", "schema-version", nil},
		{"livepatch/leader", "get-resource-token", nil},
		{"livepatch/leader", "get-resource-token", map[string]any{"contract-token": deploy.ContractToken}},
		{"livepatch/leader", "set-basic-users", map[string]any{"users": "tour:" + password}},
		{"livepatch/leader", "set-basic-users", map[string]any{"users": "tour2:" + password, "append": true}},
	} {
		e.action(d.RunAction(t, a.unit, a.name, a.params))
	}
	// Refused ones too: their messages are shown.
	nonLeader := ""
	for _, u := range d.Units("livepatch") {
		if u != d.Model.Leader("livepatch") {
			nonLeader = u
		}
	}
	a, err := d.Model.RunAction(nonLeader, "set-basic-users", map[string]any{"users": "x:" + password})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	res, err := a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.action(res)
	d.WaitActive(t)
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
