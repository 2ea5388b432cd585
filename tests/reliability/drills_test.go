package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func httpClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

func newRequest(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

// drillKill kills one unit's server with SIGKILL: haproxy takes it out after its failed
// health checks, the requests that were on their way to it are retried on the others, the
// service manager starts it again and haproxy takes it back.
func drillKill(t *testing.T, d *deploy.Deployment, w *deploy.Witness, v variant) []drill {
	unit := nonLeaders(d)[0]
	pid, err := d.Model.ServicePID(unit, "livepatch-server")
	if err != nil || pid == 0 {
		t.Fatalf("no server running on %s: %v", unit, err)
	}
	hlog := haproxyLog(t, d)
	offset := logSize(hlog)
	name := backendName(t, d, unit)
	base := w.Stats()
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down := poll(t, "haproxy takes "+name+" out", 20*time.Millisecond, func() bool { return logHas(hlog, offset, "Server "+name+" is DOWN") })
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	if err := d.Model.WaitService(ctx, unit, "livepatch-server", func(state string, p int) bool {
		return state == "active" && p != 0 && p != pid
	}); err != nil {
		t.Fatalf("the service of %s did not come back: %v", unit, err)
	}
	restarted := time.Now()
	up := poll(t, "haproxy takes "+name+" back", 20*time.Millisecond, func() bool { return logHas(hlog, offset, "Server "+name+" is UP") })
	// Traffic reaches the new process (its counters start from zero).
	served := poll(t, unit+" serves check-ins again", 100*time.Millisecond, func() bool {
		return d.UnitMetric(t, unit, "livepatch_server_checkins_total") > 0
	})
	steady(t, w, v)
	st := w.Stats().Sub(base)
	noFailures(t, "kill -9", st)
	return []drill{{
		Name: "kill -9 of one unit's server", Stats: st, Recover: served.Sub(start),
		Detail: fmt.Sprintf("haproxy took it out after %s (check inter 1s, fall 2); the service manager restarted it after %s (RestartSec=5); haproxy took it back after %s; it served check-ins again after %s",
			round(down.Sub(start)), round(restarted.Sub(start)), round(up.Sub(start)), round(served.Sub(start))),
	}}
}

// drillPostgres stops PostgreSQL for a while and starts it again: the servers say they are
// unhealthy (/debug/status and the update-status hook), check-ins fail while it is down
// and nothing they acknowledged is lost; they recover by themselves.
func drillPostgres(t *testing.T, d *deploy.Deployment, w *deploy.Witness, v variant) []drill {
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	units := d.Units("livepatch")
	// A fast shutdown (SIGINT: open sessions are ended), as `systemctl stop postgresql`
	// does on Ubuntu (pg_ctlcluster stop); the stand-in's unit would send SIGTERM, a smart
	// shutdown that waits for the servers' pooled connections to close.
	pid, err := d.Model.ServicePID("postgresql/0", "postgresql")
	if err != nil || pid == 0 {
		t.Fatalf("postgresql is not running: %v", err)
	}
	base := w.Stats()
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := d.Model.WaitService(ctx, "postgresql/0", "postgresql", func(state string, _ int) bool { return state != "active" }); err != nil {
		t.Fatalf("postgresql did not stop: %v", err)
	}
	gone := time.Now()
	detected := poll(t, "every server reports the database down", 50*time.Millisecond, func() bool {
		for _, u := range units {
			if unitStatusCode(t, d, u) != http.StatusServiceUnavailable {
				return false
			}
		}
		return true
	})
	// update-status on the livepatch units only (through juju exec): a model-wide one would
	// have the postgresql charm start its server again.
	for _, u := range units {
		runHook(t, d, u, "update-status")
		if st := workload(d, u); st.Current == "active" {
			t.Errorf("%s says %s %q while the database is down", u, st.Current, st.Message)
		}
	}
	statusSeen := workload(d, units[0])
	if err := w.WaitEnded(ctx, w.Stats(), v.Outage); err != nil {
		t.Fatal(err)
	}
	down := w.Stats().Sub(base)
	started := time.Now()
	if res, err := d.Model.Exec(ctx, "postgresql/0", "systemctl", "start", "postgresql"); err != nil || res.Code != 0 {
		t.Fatalf("cannot start postgresql: %v %+v", err, res)
	}
	healthy := poll(t, "every server is healthy again", 50*time.Millisecond, func() bool {
		for _, u := range units {
			if unitStatusCode(t, d, u) != http.StatusOK {
				return false
			}
		}
		return true
	})
	after := w.Stats()
	ok, err := w.WaitSucceeded(ctx, after)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		runHook(t, d, u, "update-status")
	}
	d.WaitActive(t)
	steady(t, w, v)
	st := w.Stats().Sub(base)
	if st.Failed == 0 {
		t.Errorf("no check-in failed while the database was down (%v): the drill did not bite", st)
	}
	// Everything after the recovery succeeds.
	if late := w.Stats().Sub(after); late.Failed > 0 {
		t.Errorf("check-ins failed after the database came back: %v\n%s", late, strings.Join(late.Errors, "\n"))
	}
	return []drill{{
		Name: "PostgreSQL stopped, then started", Stats: st, Recover: healthy.Sub(started),
		Detail: fmt.Sprintf("PostgreSQL stopped (fast shutdown) in %s; every server answered 503 on /debug/status %s after the stop and update-status said %s %q; "+
			"down for %s (%d check-ins meanwhile, %d failed after their retries); every server healthy %s after the start, a check-in acknowledged after %s",
			round(gone.Sub(stopped)), round(detected.Sub(stopped)), statusSeen.Current, statusSeen.Message, round(started.Sub(stopped)), down.Sent, down.Failed,
			round(healthy.Sub(started)), round(ok.Sub(started))),
	}}
}

// drillUpstream points the deployment at a mirror of its upstream (a configuration change:
// a rolling restart), then has the mirror disappear in the middle of a sync: what was
// stored before it went is complete and recorded, the file it was sending is neither; when
// it is back, the next sync completes.
func drillUpstream(t *testing.T, d *deploy.Deployment, w *deploy.Witness, v variant, exp *exposure, flaky *flakyUpstream) []drill {
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()

	// A configuration change rolls through the units one at a time.
	base := w.Stats()
	changed := time.Now()
	d.Config(t, "livepatch", map[string]string{"sync_upstream": flaky.URL, "sync_trusted_key": flaky.PublicKey})
	d.WaitActive(t)
	rolled := time.Now()
	order := d.Restarts(changed)
	if !slices.IsSortedFunc(order, func(a, b string) int { return unitNum(a) - unitNum(b) }) || len(order) != len(d.Units("livepatch")) {
		t.Errorf("units restarted in the order %v, want each once in unit order", order)
	}
	steady(t, w, v)
	roll := w.Stats().Sub(base)
	noFailures(t, "configuration change", roll)
	admin := d.AdminClient(t)

	// New patches upstream, large enough to cut one in the middle.
	specs := []deploy.PatchSpec{
		{Kernel: "6.8.0-50.51", Flavour: "generic", Version: "50.1", Architecture: "amd64"},
		{Kernel: "6.8.0-50.51", Flavour: "lowlatency", Version: "50.1", Architecture: "amd64"},
		{Kernel: "6.8.0-50.51", Flavour: "aws", Version: "50.1", Architecture: "amd64"},
		{Kernel: "6.8.0-51.52", Flavour: "generic", Version: "51.1", Architecture: "amd64"},
	}
	up, err := d.Upstream.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // filename -> sha256
	for _, p := range specs {
		var buf bytes.Buffer
		if err := patchfile.Generate(&buf, patchfile.Metadata(p.Kernel, p.Flavour, p.Version, p.Architecture), 512<<10); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		want[p.Filename()] = hex.EncodeToString(sum[:])
		if _, _, err := up.UploadPatch(ctx, p.Filename(), &buf, int64(buf.Len())); err != nil {
			t.Fatal(err)
		}
	}
	for _, version := range []string{"50.1", "51.1"} {
		if _, err := up.PromotePatch(ctx, version, deploy.UpstreamTier); err != nil {
			t.Fatal(err)
		}
	}

	base = w.Stats()
	flaky.arm(1)
	start := time.Now()
	var rep server.SyncReport
	poll(t, "a sync that is not skipped", 50*time.Millisecond, func() bool {
		rep, err = admin.TriggerSyncWait(ctx)
		return err == nil && rep.Outcome != server.SyncSkipped
	})
	gone := time.Now()
	if rep.Outcome != server.SyncFailed || flaky.cutFile() == "" {
		t.Fatalf("the sync did not lose its upstream: %+v, cut %q", rep, flaky.cutFile())
	}
	cut := strings.TrimPrefix(flaky.cutFile(), "/v1/patches/")
	recorded := checkStorage(t, d, want)
	if recorded[cut] {
		t.Errorf("%s was recorded although its download was cut", cut)
	}
	partial := len(recorded)

	flaky.restore()
	back := time.Now()
	final := d.TriggerSync(t)
	synced := time.Now()
	recorded = checkStorage(t, d, want)
	if len(recorded) != len(want) {
		t.Errorf("after the upstream came back %d of %d new patches are recorded: %v", len(recorded), len(want), recorded)
	}
	steady(t, w, v)
	st := w.Stats().Sub(base)
	noFailures(t, "upstream drill", st)
	exp.seen("sync report", rep.Error)
	return []drill{{
		Name: "Configuration change (sync_upstream)", Stats: roll, Recover: rolled.Sub(changed),
		Detail: fmt.Sprintf("the units restarted one at a time in the order %s; every unit Active again after %s", strings.Join(order, ", "), round(rolled.Sub(changed))),
	}, {
		Name: "Upstream disappears in the middle of a sync", Stats: st, Recover: synced.Sub(back),
		Detail: fmt.Sprintf("the sync failed after %s (%q), with %d of %d new patches complete and recorded and the cut one (%s) neither stored nor recorded; "+
			"with the upstream back the next sync added %d patches in %s",
			round(gone.Sub(start)), firstLine(strings.ReplaceAll(rep.Error, flaky.URL, "<upstream>")), partial, len(want), cut, final.PatchesAdded, round(synced.Sub(back))),
	}}
}

// checkStorage checks that every patch file in storage is recorded, and that every new
// patch recorded downloads through haproxy with the upstream's SHA-256. It returns the new
// patches recorded.
func checkStorage(t *testing.T, d *deploy.Deployment, want map[string]string) map[string]bool {
	t.Helper()
	ctx := t.Context()
	admin := d.AdminClient(t)
	files, err := admin.StoragePatches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, f := range files {
		stored[f.Filename] = true
		if !f.Recorded {
			t.Errorf("%s is stored but not recorded: half a sync", f.Filename)
		}
	}
	patches, err := admin.Patches(ctx, server.PatchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, p := range patches {
		sum, ok := want[p.Filename]
		if !ok {
			continue
		}
		recorded[p.Filename] = true
		if p.SHA256 != sum || !stored[p.Filename] {
			t.Errorf("%s recorded with sha256 %s (stored: %v), want %s", p.Filename, p.SHA256, stored[p.Filename], sum)
		}
		body, _, err := admin.Download(ctx, d.URL+"/v1/patches/"+p.Filename)
		if err != nil {
			t.Errorf("cannot download %s: %v", p.Filename, err)
			continue
		}
		h := sha256.New()
		io.Copy(h, body)
		body.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			t.Errorf("%s downloads with sha256 %s, want %s", p.Filename, got, sum)
		}
	}
	return recorded
}

// drillScale removes a unit, then adds one: haproxy follows without a failed check-in.
func drillScale(t *testing.T, d *deploy.Deployment, w *deploy.Witness, v variant, exp *exposure) []drill {
	units := d.Units("livepatch")
	victim := nonLeaders(d)[len(nonLeaders(d))-1]
	if root, err := d.Model.UnitRoot(victim); err == nil {
		exp.serviceLogs(victim, root) // its machine goes with it
	}
	base := w.Stats()
	start := time.Now()
	if err := d.Model.RemoveUnit(victim); err != nil {
		t.Fatal(err)
	}
	d.WaitIdle(t, func(st *jujusim.Status) bool { return len(st.UnitNames("livepatch")) == len(units)-1 })
	removed := time.Now()
	steady(t, w, v)
	mid := w.Stats()
	removal := mid.Sub(base)
	noFailures(t, "remove-unit", removal)

	added := time.Now()
	names, err := d.Model.AddUnit("livepatch", 1)
	if err != nil {
		t.Fatal(err)
	}
	d.WaitActive(t)
	active := time.Now()
	served := poll(t, names[0]+" serves check-ins", 100*time.Millisecond, func() bool {
		return d.UnitMetric(t, names[0], "livepatch_server_checkins_total") > 0
	})
	steady(t, w, v)
	addition := w.Stats().Sub(mid)
	noFailures(t, "add-unit", addition)
	return []drill{{
		Name: "Remove a unit", Stats: removal, Recover: removed.Sub(start),
		Detail: fmt.Sprintf("%s gone and haproxy reconfigured after %s", victim, round(removed.Sub(start))),
	}, {
		Name: "Add a unit", Stats: addition, Recover: served.Sub(added),
		Detail: fmt.Sprintf("%s Active after %s, serving check-ins through haproxy after %s", names[0], round(active.Sub(added)), round(served.Sub(added))),
	}}
}

// drillUpgrade refreshes the charm to a revision whose server adds a migration: the old
// servers serve until schema-upgrade, then the units switch one at a time, and nothing is
// lost.
func drillUpgrade(t *testing.T, d *deploy.Deployment, w *deploy.Witness, v variant, exp *exposure) []drill {
	before := d.Inventory(t)
	oldVersion := version(t, d.URL)
	charm := deploy.BuildLivepatchCharm(t, migrationTag)
	base := w.Stats()
	start := time.Now()
	if err := d.Model.Upgrade("livepatch", charm); err != nil {
		t.Fatal(err)
	}
	leader := d.Model.Leader("livepatch")
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		return deploy.AllUnits(st, "livepatch", func(u jujusim.UnitStatus) bool {
			if u.Leader {
				return u.Workload.Current == "blocked" && u.Workload.Message == livepatch.MessageSchemaUpgrade
			}
			return u.Workload.Current == "active" && strings.Contains(u.Workload.Message, "staged and waits for the schema-upgrade action")
		})
	})
	held := time.Now()
	for _, u := range d.Units("livepatch") {
		if got := version(t, d.UnitURL(t, u)); got != oldVersion {
			t.Errorf("%s serves %s while the upgrade waits, want the old %s", u, got, oldVersion)
		}
	}
	steady(t, w, v)
	waiting := w.Stats().Sub(base)

	upgrade := time.Now()
	res := d.RunAction(t, leader, "schema-upgrade", nil)
	exp.action(res)
	d.WaitActive(t)
	done := time.Now()
	order := d.Restarts(upgrade)
	if !slices.IsSortedFunc(order, func(a, b string) int { return unitNum(a) - unitNum(b) }) || len(order) != len(d.Units("livepatch")) {
		t.Errorf("units restarted in the order %v, want each once in unit order", order)
	}
	for _, u := range d.Units("livepatch") {
		if got := version(t, d.UnitURL(t, u)); !strings.HasSuffix(got, "+"+migrationTag) {
			t.Errorf("%s serves %s after the upgrade, want the new revision's", u, got)
		}
	}
	if diff := cmp.Diff(before, d.Inventory(t)); diff != "" {
		t.Errorf("rows changed across the upgrade (-before +after):\n%s", diff)
	}
	steady(t, w, v)
	st := w.Stats().Sub(base)
	noFailures(t, "rolling upgrade", st)
	return []drill{{
		Name: "Rolling upgrade with a migration", Stats: st, Recover: done.Sub(upgrade),
		Detail: fmt.Sprintf("every unit had staged the new server %s after upgrade-charm, and the old servers served on (%s, %d check-ins, in the test) until schema-upgrade (leader Blocked, the others Active, saying what waits); "+
			"schema-upgrade migrated the schema from version %v to %v, then the units restarted one at a time in the order %s and were all Active on the new server after %s",
			round(held.Sub(start)), round(upgrade.Sub(held)), waiting.Sent, res.Results["from-version"], res.Results["to-version"], strings.Join(order, ", "), round(done.Sub(upgrade))),
	}}
}

func unitNum(unit string) int {
	_, n, _ := strings.Cut(unit, "/")
	var i int
	fmt.Sscan(n, &i)
	return i
}

// version returns what a server (or haproxy) reports at /debug/info.
func version(t *testing.T, base string) string {
	t.Helper()
	c, err := clientFor(base)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatalf("%s/debug/info: %v", base, err)
	}
	return info.Version
}

func clientFor(base string) (*client.Client, error) { return client.New(base) }

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 240 {
		line = line[:240] + "..."
	}
	return line
}
