package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestMain(m *testing.M) { deploy.Main(m) }

// migrationTag builds the newer charm revision whose server has one more migration
// (server/postgres/migrations_e2e.go).
const migrationTag = "e2emigration"

// Environment knobs.
const (
	// VariantEnv selects the variant: "full" for make reliability, else the short one.
	VariantEnv = "LIVEPATCH_RELIABILITY"
	// ReportEnv names a file whose measured table (between the markers) is rewritten.
	ReportEnv = "LIVEPATCH_RELIABILITY_REPORT"
)

// variant sizes a run.
type variant struct {
	Name string
	// Machines check in through haproxy at Rate check-ins per second in all.
	Machines int
	Rate     float64
	// Retries is how many times a check-in is sent again after a transport error or a 5xx.
	Retries int
	// Steady is the number of check-ins that end between the steps of a drill.
	Steady int64
	// Outage is the number of check-ins attempted while PostgreSQL is down.
	Outage int64
}

func currentVariant() variant {
	if os.Getenv(VariantEnv) == "full" {
		return variant{Name: "full", Machines: 40, Rate: 40, Retries: 3, Steady: 400, Outage: 200}
	}
	return variant{Name: "short", Machines: 8, Rate: 16, Retries: 3, Steady: 48, Outage: 24}
}

// drill is one line of the measured table.
type drill struct {
	Name  string
	Stats deploy.WitnessStats
	// Recover is the time to recover (what it is measured from and to is in Detail).
	Recover time.Duration
	Detail  string
}

// TestReliability deploys three livepatch units behind haproxy and, under a continuous
// stream of check-ins, runs the failure drills and a rolling upgrade one after the other,
// as an operator's deployment lives through them; then it looks for secrets in everything
// the scenarios showed, and checks that no acknowledged report was lost.
func TestReliability(t *testing.T) {
	v := currentVariant()
	deploy.CheckRequirements(t) // before the build starts: under -short, nothing is built
	// The newer charm revision compiles while the deployment comes up.
	go deploy.PrebuildLivepatchCharm(migrationTag)
	exp := newExposure()
	// The deployment guide's own command for auth_basic_users, which the deployment helper
	// runs: the password is an argument of htpasswd -b on the operator's machine. The charm's
	// README recommends the prompting form (htpasswd -nBC 10 admin) instead.
	exp.argvAllowed = append(exp.argvAllowed, "htpasswd -bnBC ")
	d := deploy.New(t, deploy.Options{Units: 3})
	exp.watch(d.Model)
	t.Cleanup(func() { exp.stop() })
	d.Configure(t)
	collectSecrets(t, d, exp)
	w := d.StartWitness(t, v.Machines, v.Rate, v.Retries)
	for i, token := range w.Tokens() {
		exp.secret(fmt.Sprintf("the machine token of witness machine %d", i), token)
	}
	t.Logf("variant %s: %d machines, %.0f check-ins/s, up to %d retries", v.Name, v.Machines, v.Rate, v.Retries)

	// The upstream the deployment syncs from after the upstream drill; it stays.
	flaky := newFlakyUpstream(t, d.Upstream.URL, d.Upstream.PublicKey)
	var drills []drill
	steps := []struct {
		name string
		run  func(t *testing.T) []drill
	}{
		{"kill-9", func(t *testing.T) []drill { return drillKill(t, d, w, v) }},
		{"postgresql-restart", func(t *testing.T) []drill { return drillPostgres(t, d, w, v) }},
		{"upstream-disappears", func(t *testing.T) []drill { return drillUpstream(t, d, w, v, exp, flaky) }},
		{"remove-add-unit", func(t *testing.T) []drill { return drillScale(t, d, w, v, exp) }},
		{"rolling-upgrade", func(t *testing.T) []drill { return drillUpgrade(t, d, w, v, exp) }},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { drills = append(drills, s.run(t)...) }) {
			break // the next drill would start from a broken deployment
		}
	}
	db := d.OpenDatabase(t)
	t.Run("secrets", func(t *testing.T) {
		actionTour(t, d, exp)
		cliTour(t, d, exp)
		exp.stop()
		exp.logs(d.Model)
		exp.database(t, db)
		if data, err := os.ReadFile(d.Upstream.LogPath); err == nil {
			exp.seen("the upstream's log", string(data))
		}
		exp.check(t)
	})
	total := w.Stats()
	lost := w.Verify(t, db)
	t.Logf("witness: %v; %d acknowledged reports, %d lost", total, w.Acked(), lost)
	if len(total.Errors) > 0 {
		t.Logf("failed attempts (the first %d):\n%s", len(total.Errors), strings.Join(total.Errors, "\n"))
	}
	if total.Sent == 0 || w.Acked() == 0 {
		t.Error("the witness sent nothing")
	}
	if err := writeReport(os.Getenv(ReportEnv), v, drills, total, w.Acked(), lost); err != nil {
		t.Error(err)
	}
	for _, dr := range drills {
		t.Logf("%-40s %v; recovered in %s; %s", dr.Name, dr.Stats, dr.Recover.Round(10*time.Millisecond), dr.Detail)
	}
}

// steady lets v.Steady more check-ins end.
func steady(t *testing.T, w *deploy.Witness, v variant) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	if err := w.WaitEnded(ctx, w.Stats(), v.Steady); err != nil {
		t.Fatal(err)
	}
}

// noFailures fails the test when check-ins failed.
func noFailures(t *testing.T, what string, s deploy.WitnessStats) {
	t.Helper()
	if s.Failed > 0 {
		t.Errorf("%s: %v:\n%s", what, s, strings.Join(s.Errors, "\n"))
	}
}

// poll checks cond every interval until it holds, or fails the test after deploy.Timeout.
func poll(t *testing.T, what string, interval time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(deploy.Timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, deploy.Timeout)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-tick.C:
		}
	}
	return time.Now()
}

// unitStatusCode returns the HTTP status of a unit's own /debug/status (0: no answer).
func unitStatusCode(t *testing.T, d *deploy.Deployment, unit string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := httpClient()
	req, _ := newRequest(ctx, d.UnitURL(t, unit)+"/debug/status")
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// haproxyLog returns the haproxy service's log (its stderr: server state changes).
func haproxyLog(t *testing.T, d *deploy.Deployment) string {
	t.Helper()
	root, err := d.Model.UnitRoot("haproxy/0")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "var/log/jujusim/haproxy*.log"))
	if len(files) == 0 {
		t.Fatal("no haproxy log")
	}
	return files[0]
}

// logSize returns the size of a file (0 when missing).
func logSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// logHas reports whether the file holds text after offset.
func logHas(path string, offset int64, text string) bool {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return false
	}
	return strings.Contains(string(data[offset:]), text)
}

// backendName is haproxy's name for a livepatch unit's server.
func backendName(t *testing.T, d *deploy.Deployment, unit string) string {
	t.Helper()
	cfg, err := d.Model.Config("livepatch")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("livepatch/%s-%v", strings.ReplaceAll(unit, "/", "-"), cfg["port"])
}

// nonLeaders returns the livepatch units that are not the leader.
func nonLeaders(d *deploy.Deployment) []string {
	var out []string
	for _, u := range d.Units("livepatch") {
		if u != d.Model.Leader("livepatch") {
			out = append(out, u)
		}
	}
	return out
}

// runHook runs a livepatch unit's hook through juju exec: its dispatch with
// JUJU_DISPATCH_PATH set, in the unit's context.
func runHook(t *testing.T, d *deploy.Deployment, unit, hook string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	res, err := d.Model.Exec(ctx, unit, "env", "JUJU_DISPATCH_PATH=hooks/"+hook, "JUJU_HOOK_NAME="+hook, "./dispatch")
	if err != nil || res.Code != 0 {
		t.Fatalf("%s on %s: %v %d\n%s%s", hook, unit, err, res.Code, res.Stdout, res.Stderr)
	}
}

func workload(d *deploy.Deployment, unit string) jujusim.StatusInfo {
	u, _ := d.Model.Status().Unit(unit)
	return u.Workload
}

func machineLoad() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return fmt.Sprintf("%s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
}
