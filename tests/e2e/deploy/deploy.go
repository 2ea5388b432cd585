package deploy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
)

// Main runs the tests of a package that uses this one, then stops the PostgreSQL cluster
// of its upstreams and the SeaweedFS server of its s3 patch stores (s3test), and removes
// the builds. Call it from TestMain:
//
//	func TestMain(m *testing.M) { deploy.Main(m) }
func Main(m *testing.M) {
	code := pgtest.Run(m)
	s3test.Stop()
	removeBuilds()
	os.Exit(code)
}

// Status messages the deployment goes through, as the charms set them.
const (
	MessageURLTemplateNotSet = livepatch.MessageURLTemplateNotSet
	MessageSyncTokenNotSet   = livepatch.MessageSyncTokenNotSet
	MessageActive            = livepatch.MessageActive
	MessageSchemaUpgrade     = livepatch.MessageSchemaUpgrade
	MessageAttachedPrefix    = "Attached ("
)

// ContractToken is the Ubuntu Pro contract token the contracts stand-in accepts.
const ContractToken = "e2e-contract-token"

// Timeout bounds every wait of this package: a step of the deployment guide, a sync.
var Timeout = 2 * time.Minute

// Options configures a deployment.
type Options struct {
	// Units is the number of livepatch units; default 1 (the bundle's).
	Units int
	// LivepatchCharm deploys another livepatch charm than Build's (BuildLivepatchCharm).
	LivepatchCharm string
	// NoUpstream skips the upstream server: sync_upstream stays unset and nothing syncs.
	NoUpstream bool
	// Bundle deploys another bundle file than the repository's bundle/bundle.yaml (a
	// variant of it: the livepatch and ubuntu-advantage charms come from the overlay).
	Bundle string
}

// Deployment is bundle/bundle.yaml with bundle/local-overlay.yaml's charms deployed in a
// jujusim model, with the contracts stand-in and an upstream, and the handles a test needs.
// Everything is stopped when the test that made it ends.
type Deployment struct {
	// Model is the emulated Juju model.
	Model *jujusim.Model
	// Bin are the charms and programs deployed and run.
	Bin *Binaries
	// Contracts is the Ubuntu Pro contracts stand-in; it accepts ContractToken.
	Contracts *contracts.Server
	// Upstream is the server the deployment syncs from (nil with Options.NoUpstream).
	Upstream *Upstream
	// HAProxyAddress is the haproxy unit's address; URL is http://HAProxyAddress, the
	// LIVEPATCH_URL of the deployment guide (https:// once haproxy terminates TLS).
	HAProxyAddress string
	URL            string
	// CACert is the PEM certificate of the CA that signs haproxy's certificate, set with
	// URL when haproxy terminates TLS: the admin client, livepatch-admin
	// (LIVEPATCH_CA_CRT) and enrolled machines (ca-certs) trust it.
	CACert []byte
	// AdminUser and AdminPassword are the administrator set by SetAdminUsers.
	AdminUser, AdminPassword string
	// Dir holds the model state, the admin CLI's sessions and the machines' state.
	Dir string

	mu      sync.Mutex
	admin   *client.Client
	tokens  map[string]string // tier -> auth token
	nextMac int
}

// Deploy returns a deployment configured as the deployment guide leaves it, plus what the
// emulator needs (contract_server_url, sync settings pointing at the upstream): livepatch
// Active on every unit, ubuntu-advantage Attached, the resource token shared, the upstream's
// UpstreamTier patches synced. It is New followed by Configure.
func Deploy(t testing.TB, opts Options) *Deployment {
	t.Helper()
	d := New(t, opts)
	d.Configure(t)
	return d
}

// New deploys the bundle and waits until the model is idle, with livepatch Blocked on
// url_template as the guide's first step leaves it; nothing is configured.
func New(t testing.TB, opts Options) *Deployment {
	t.Helper()
	CheckRequirements(t)
	b := Build(t)
	d := &Deployment{Bin: b, Dir: t.TempDir(), tokens: map[string]string{}, AdminUser: "admin", AdminPassword: randomHex(8)}
	d.Contracts = contracts.New(ContractToken)
	if err := d.Contracts.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Contracts.Close() })
	if !opts.NoUpstream {
		d.Upstream = NewUpstream(t, b, d.Contracts.URL)
	}
	m, err := jujusim.New(jujusim.Options{Dir: filepath.Join(d.Dir, "model"), ToolBinary: b.Jujusim})
	if err != nil {
		t.Fatal(err)
	}
	d.Model = m
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("cannot close the model: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			d.dump(t)
			t.Logf("model seed: rerun with JUJUSIM_SEED=%d", m.Seed())
		}
	})
	charm := b.LivepatchCharm
	if opts.LivepatchCharm != "" {
		charm = opts.LivepatchCharm
	}
	units := max(opts.Units, 1)
	overlay := filepath.Join(d.Dir, "local-overlay.yaml")
	if err := os.WriteFile(overlay, fmt.Appendf(nil, `applications:
  livepatch:
    charm: %s
    num_units: %d
  ubuntu-advantage:
    charm: %s
`, charm, units, b.UbuntuAdvantageCharm), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := opts.Bundle
	if bundle == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bundle = filepath.Join(root, "bundle", "bundle.yaml")
	}
	if err := m.DeployBundle(bundle, overlay); err != nil {
		t.Fatal(err)
	}
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		return len(st.UnitNames("haproxy")) == 1 && len(st.UnitNames("livepatch")) == units
	})
	if d.HAProxyAddress, err = m.UnitAddress("haproxy/0"); err != nil {
		t.Fatal(err)
	}
	d.URL = "http://" + d.HAProxyAddress
	return d
}

// CheckRequirements skips the test under -short (a deployment takes tens of seconds to
// minutes), and when the machine cannot run a deployment (no root, no haproxy,
// PostgreSQL, htpasswd or make), saying what is missing; under CI (the CI environment
// variable set) a missing requirement fails the test instead.
func CheckRequirements(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("deploys a model: skipped with -short")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (haproxy binds port 80 on the emulated machines' addresses)")
	}
	for _, tool := range []string{"haproxy", "htpasswd", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				missing = append(missing, tool)
			}
		}
	}
	if _, err := pgtest.FindBinaries(); err != nil {
		missing = append(missing, "PostgreSQL server binaries")
	}
	if len(missing) == 0 {
		return
	}
	msg := "cannot deploy: missing " + strings.Join(missing, ", ") + " (make deps installs the packages)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Configure runs the deployment guide's steps on a new deployment: SetSyncSettings,
// SetURLTemplate, SetAdminUsers, Attach, GetResourceToken, then waits until every
// livepatch unit is Active and, with an upstream, the patches are synced.
func (d *Deployment) Configure(t testing.TB) {
	t.Helper()
	d.SetSyncSettings(t)
	d.SetURLTemplate(t)
	d.SetAdminUsers(t)
	d.Attach(t)
	d.GetResourceToken(t)
	d.WaitActive(t)
	if d.Upstream != nil {
		d.WaitSynced(t)
	}
}

// SetSyncSettings sets what the emulator needs beyond the guide: contract_server_url
// (the contracts stand-in) and, with an upstream, sync_upstream and sync_upstream_tier
// (and sync_trusted_key, when the charm has that option); with none, patch sync is
// turned off.
func (d *Deployment) SetSyncSettings(t testing.TB) {
	t.Helper()
	cfg := map[string]string{"contract_server_url": d.Contracts.URL}
	if d.Upstream == nil {
		cfg["patch_sync_enabled"] = "false"
	} else {
		cfg["sync_upstream"] = d.Upstream.URL
		cfg["sync_upstream_tier"] = UpstreamTier
		if d.HasOption(t, "livepatch", "sync_trusted_key") {
			cfg["sync_trusted_key"] = d.Upstream.PublicKey
		}
	}
	d.Config(t, "livepatch", cfg)
}

// HasOption reports whether an application's charm has a config option.
func (d *Deployment) HasOption(t testing.TB, app, option string) bool {
	t.Helper()
	cfg, err := d.Model.Config(app)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := cfg[option]
	return ok
}

// URLTemplate is the url_template the guide asks for: patches served through haproxy.
func (d *Deployment) URLTemplate() string { return d.URL + "/v1/patches/{filename}" }

// SetURLTemplate sets url_template to URLTemplate, as the guide's first configuration
// step, and waits for the hooks to settle.
func (d *Deployment) SetURLTemplate(t testing.TB) {
	t.Helper()
	d.Config(t, "livepatch", map[string]string{"url_template": d.URLTemplate()})
	d.WaitIdle(t, nil)
}

// Htpasswd runs `htpasswd -bnBC 10 user password` and returns its output line.
func Htpasswd(t testing.TB, user, password string) string {
	t.Helper()
	out, err := exec.Command("htpasswd", "-bnBC", "10", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd (apt-get install apache2-utils): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// SetAdminUsers sets auth_basic_users to the htpasswd output of AdminUser and
// AdminPassword, as the guide does.
func (d *Deployment) SetAdminUsers(t testing.TB) {
	t.Helper()
	d.Config(t, "livepatch", map[string]string{"auth_basic_users": Htpasswd(t, d.AdminUser, d.AdminPassword)})
	d.WaitIdle(t, nil)
}

// Attach configures ubuntu-advantage with ContractToken (and the stand-in's URL) and waits
// until every unit shows "Attached (...)".
func (d *Deployment) Attach(t testing.TB) {
	t.Helper()
	d.Config(t, "ubuntu-advantage", map[string]string{"contract_url": d.Contracts.URL, "token": ContractToken})
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		return AllUnits(st, "ubuntu-advantage", func(u jujusim.UnitStatus) bool {
			return u.Workload.Current == "active" && strings.HasPrefix(u.Workload.Message, MessageAttachedPrefix)
		})
	})
}

// GetResourceToken runs `run-action livepatch/leader get-resource-token --wait` and
// fails the test unless it completes.
func (d *Deployment) GetResourceToken(t testing.TB) jujusim.ActionResult {
	t.Helper()
	return d.RunAction(t, "livepatch/leader", "get-resource-token", nil)
}

// RunAction runs an action, waits for it and fails the test unless it completes.
func (d *Deployment) RunAction(t testing.TB, unit, action string, params map[string]any) jujusim.ActionResult {
	t.Helper()
	a, err := d.Model.RunAction(unit, action, params)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	res, err := a.Wait(ctx)
	if err != nil {
		t.Fatalf("action %s on %s: %v", action, unit, err)
	}
	if res.Status != "completed" {
		t.Fatalf("action %s on %s: %s: %s\n%s", action, unit, res.Status, res.Message, res.Stderr)
	}
	return res
}

// WaitActive waits until the model is idle with every livepatch unit Active
// ("Livepatch server running").
func (d *Deployment) WaitActive(t testing.TB) {
	t.Helper()
	want := d.ActiveMessage(t)
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		return AllUnits(st, "livepatch", func(u jujusim.UnitStatus) bool {
			return u.Workload.Current == "active" && u.Workload.Message == want
		})
	})
	d.WaitServing(t)
}

// WaitServing waits, for at most Timeout, until haproxy serves the livepatch API (GET
// /debug/info answers through it). haproxy takes a server that failed a health check
// back only after two good ones a second apart (the bundle's rise 2, inter 1s), so a
// deployment whose only unit just restarted is idle and Active a moment before haproxy
// sends it requests again.
func (d *Deployment) WaitServing(t testing.TB) {
	t.Helper()
	c := d.Client(t)
	var last error
	err := poll(t.Context(), Timeout, func() (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, last = c.Info(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("haproxy at %s does not serve the livepatch API: %v (last: %v)", d.URL, err, last)
	}
}

// ActiveMessage is the status of a serving livepatch unit: it says where the patches
// come from, the upstream (SetSyncSettings) or uploads and offline bundles.
func (d *Deployment) ActiveMessage(t testing.TB) string {
	t.Helper()
	cfg, err := d.Model.Config("livepatch")
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := cfg["sync_upstream"].(string)
	enabled, _ := cfg["patch_sync_enabled"].(bool)
	return MessageActive + "; " + livepatch.PatchSource(livepatch.Config{PatchSyncEnabled: enabled, SyncUpstream: upstream})
}

// WaitIdle waits until the model is idle and cond (when not nil) holds, for at most
// Timeout; on failure it shows the status.
func (d *Deployment) WaitIdle(t testing.TB, cond func(*jujusim.Status) bool) {
	t.Helper()
	if cond == nil {
		cond = func(*jujusim.Status) bool { return true }
	}
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	if err := d.Model.WaitIdleStatus(ctx, cond); err != nil {
		t.Fatalf("%v\n%s", err, d.Model.Status().Tabular())
	}
}

// WaitLeader waits until app has a leader and the model is idle, and returns the leader.
// Leadership is a lease: when the leader unit goes, nobody leads until its lease lapses (up
// to a minute), then another unit is elected and runs leader-elected.
func (d *Deployment) WaitLeader(t testing.TB, app string) string {
	t.Helper()
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		for _, name := range st.UnitNames(app) {
			if u, _ := st.Unit(name); u.Leader {
				return true
			}
		}
		return false
	})
	return d.Model.Leader(app)
}

// WaitUnit waits until the model is idle and a unit's workload status is want with a
// message containing msg.
func (d *Deployment) WaitUnit(t testing.TB, unit, want, msg string) {
	t.Helper()
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		u, ok := st.Unit(unit)
		return ok && u.Workload.Current == want && strings.Contains(u.Workload.Message, msg)
	})
}

// AllUnits reports whether an application has units and every one satisfies ok.
func AllUnits(st *jujusim.Status, app string, ok func(jujusim.UnitStatus) bool) bool {
	names := st.UnitNames(app)
	for _, n := range names {
		u, found := st.Unit(n)
		if !found || !ok(u) {
			return false
		}
	}
	return len(names) > 0
}

// Config sets options of an application (`juju config app k=v ...`; "" resets a key).
func (d *Deployment) Config(t testing.TB, app string, values map[string]string) {
	t.Helper()
	if err := d.Model.SetConfig(app, values); err != nil {
		t.Fatalf("config %s %v: %v", app, slices.Sorted(maps.Keys(values)), err)
	}
}

// Units returns the names of an application's units, sorted.
func (d *Deployment) Units(app string) []string {
	return d.Model.Status().UnitNames(app)
}

// UnitURL returns the base URL of a livepatch unit's own server, bypassing haproxy.
func (d *Deployment) UnitURL(t testing.TB, unit string) string {
	t.Helper()
	addr, err := d.Model.UnitAddress(unit)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.Model.Config("livepatch")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://%s:%v", addr, cfg["port"])
}

// dump logs what helps understand a failure: the status, the end of the debug log and of
// every service's log.
func (d *Deployment) dump(t testing.TB) {
	t.Logf("model status:\n%s", d.Model.Status().Tabular())
	logs := d.Model.Logs()
	if len(logs) > 60 {
		logs = logs[len(logs)-60:]
	}
	var b strings.Builder
	for _, e := range logs {
		b.WriteString(e.String() + "\n")
	}
	t.Logf("debug-log (last %d lines):\n%s", len(logs), b.String())
	st := d.Model.Status()
	for _, m := range slices.Sorted(maps.Keys(st.Machines)) {
		files, _ := filepath.Glob(filepath.Join(st.Machines[m].Root, "var/log/jujusim/*.log"))
		for _, f := range files {
			t.Logf("machine %s %s:\n%s", m, filepath.Base(f), tail(f, 25))
		}
	}
}

// UnitMetric returns the sum of every series of a Prometheus counter or gauge on a
// livepatch unit's own /metrics (for example livepatch_server_checkins_total): what that
// unit, and only it, served.
func (d *Deployment) UnitMetric(t testing.TB, unit, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.UnitURL(t, unit)+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("cannot read %s's metrics: %v", unit, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		sum += v
	}
	return sum
}

// Get fetches a URL and returns its status code and body, failing the test when the
// request cannot be made.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}
