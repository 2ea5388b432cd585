package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

// rolloutFleet is machines speaking the client protocol through haproxy, each reporting
// its own state and remembering what it was offered.
type rolloutFleet struct {
	c       *client.Client
	ids     []string
	tokens  map[string]string
	status  map[string]server.Status
	offered map[string]string // machine -> newest version offered
	// explain says where the rollout of a version stands, for failure messages.
	explain func(version string) string
}

func newRolloutFleet(t *testing.T, d *deploy.Deployment, tier string, n int) *rolloutFleet {
	t.Helper()
	c, err := client.New(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &rolloutFleet{c: c, tokens: map[string]string{}, status: map[string]server.Status{}, offered: map[string]string{}}
	f.explain = func(version string) string {
		r, err := d.AdminClient(t).Rollout(t.Context(), tier, version)
		if err != nil {
			return err.Error()
		}
		out := fmt.Sprintf("rollout: %+v", r.Rollout)
		for _, u := range d.Units("livepatch") {
			out += fmt.Sprintf("\n%s: %v offers, %v held back, %v halted", u, d.UnitMetric(t, u, "livepatch_server_rollout_offers_total"),
				d.UnitMetric(t, u, "livepatch_server_rollout_held_total"), d.UnitMetric(t, u, "livepatch_server_rollout_halted"))
		}
		return out
	}
	token := d.AuthToken(t, tier)
	for i := range n {
		id := fmt.Sprintf("%s%02d", tier, i)
		st := server.Status{Kernel: deploy.DemoKernel, Architecture: "amd64", PatchState: server.StateNothingToApply, ClientVersion: "e2e-rollout"}
		mt, _, err := c.Enable(t.Context(), id, token, &st)
		if err != nil {
			t.Fatalf("cannot enrol %s: %v", id, err)
		}
		f.ids, f.tokens[id], f.status[id] = append(f.ids, id), mt, st
	}
	return f
}

// round checks every machine in once and returns the machines offered version.
func (f *rolloutFleet) round(t *testing.T, version string) []string {
	t.Helper()
	var got []string
	for _, id := range f.ids {
		up, err := f.c.CheckIn(t.Context(), id, f.tokens[id], f.status[id])
		if err != nil {
			t.Fatalf("check-in of %s: %v", id, err)
		}
		if up.Patch != nil && up.Patch.Version == version {
			f.offered[id] = version
			got = append(got, id)
		}
	}
	return got
}

func (f *rolloutFleet) report(ids []string, state, version string) {
	for _, id := range ids {
		st := f.status[id]
		st.PatchState, st.PatchVersion = state, version
		f.status[id] = st
	}
}

// until runs check-in rounds until cond holds of the machines offered version, checking
// invariant at every round, within deploy.Timeout; a failure says where the rollout stands.
func (f *rolloutFleet) until(t *testing.T, version, what string, cond, invariant func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(deploy.Timeout)
	var got []string
	for time.Now().Before(deadline) {
		got = f.round(t, version)
		if !invariant(got) {
			t.Fatalf("%s: %d machines offered %s: %v\n%s", what, len(got), version, got, f.explain(version))
		}
		if cond(got) {
			return got
		}
	}
	t.Fatalf("%s: not reached within %s; offered %v\n%s", what, deploy.Timeout, got, f.explain(version))
	return nil
}

// TestRollout follows rollout policies through two units behind haproxy from the
// machines' point of view: the canaries alone first, then a rate-limited wave, a halt when
// that wave fails to apply, and a resume that lets the rest through; then, in another
// tier, a maintenance window that opens, and what machines report after the offer.
func TestRollout(t *testing.T) {
	t.Parallel()
	d := deploy.Deploy(t, deploy.Options{Units: 2, NoUpstream: true})
	d.Admin(t, "login", "-a", d.AdminUser+":"+d.AdminPassword)
	admin := d.AdminClient(t)
	f := newRolloutFleet(t, d, "edge", 12)
	d.Admin(t, "rollout", "policy", "set", "edge", "--canaries", "2", "--rate", "4/1h", "--failure-threshold", "50")

	var archive bytes.Buffer
	if err := patchfile.Generate(&archive, patchfile.Metadata("5.15.0-107.117", "generic", "107.9", "amd64"), 4096); err != nil {
		t.Fatal(err)
	}
	name := server.PatchName{Kernel: "5.15.0-107.117", Flavour: "generic", Version: "107.9", Architecture: "amd64"}.Filename()
	if _, _, err := admin.UploadPatch(t.Context(), name, bytes.NewReader(archive.Bytes()), int64(archive.Len())); err != nil {
		t.Fatal(err)
	}
	status := func() server.Rollout {
		r, err := admin.Rollout(t.Context(), "edge", "107.9")
		if err != nil {
			t.Fatal(err)
		}
		return r.Rollout
	}

	// Canaries: two machines, whichever unit they reach, and nobody else until both
	// applied; the rollout claimed no more slots meanwhile.
	atMost := func(n int) func([]string) bool { return func(got []string) bool { return len(got) <= n } }
	canaries := f.until(t, "107.9", "canary phase", func(got []string) bool { return len(got) == 2 }, atMost(2))
	f.until(t, "107.9", "canaries recorded", func([]string) bool { r := status(); return r.Offered == 2 && r.Claimed == 2 }, atMost(2))

	// The canaries apply: the rest of the hour's 4 offers (the canaries count), across
	// both units.
	f.report(canaries, server.StateApplied, "107.9")
	wave := f.until(t, "107.9", "rate-limited phase", func(got []string) bool { return len(got) == 4 }, atMost(4))
	f.until(t, "107.9", "wave recorded", func([]string) bool { return status().Offered == 4 }, atMost(4))
	if r := status(); r.Claimed > 4 || r.CanariesDone.IsZero() {
		t.Fatalf("after the wave: %+v", r)
	}

	// The wave fails to apply: 2 of 4 offered reaches 50%, the rollout halts.
	var failing []string
	for _, id := range wave {
		if id != canaries[0] && id != canaries[1] {
			failing = append(failing, id)
		}
	}
	f.report(failing, server.StateApplyFailed, "")
	f.until(t, "107.9", "halt", func([]string) bool { return status().State == server.RolloutHalted }, atMost(4))
	out := d.Admin(t, "rollout", "status", "edge", "107.9")
	if !strings.Contains(out, "107.9 in tier edge: halted: 2 failed and 0 timed out of 4 offered") {
		t.Errorf("rollout status:\n%s", out)
	}
	// Halted: nobody new gets it; the wave keeps its offer at either unit (a unit knows
	// the other's offers from its next refresh on).
	inWave := func(got []string) bool {
		for _, id := range got {
			if !slices.Contains(wave, id) {
				return false
			}
		}
		return true
	}
	f.until(t, "107.9", "while halted", func(got []string) bool { return len(got) == 4 }, inWave)
	if r := status(); r.State != server.RolloutHalted || r.Offered != 4 {
		t.Errorf("while halted: %+v", r)
	}

	// The operator resumes with a higher rate: the rest get it within the hour.
	d.Admin(t, "rollout", "policy", "set", "edge", "--canaries", "2", "--rate", "20/1h", "--failure-threshold", "50")
	if out := d.Admin(t, "rollout", "resume", "edge", "107.9"); out != "Resumed the rollout of 107.9 in tier edge\n" {
		t.Errorf("resume: %q", out)
	}
	f.until(t, "107.9", "after resume", func(got []string) bool { return len(got) == 12 }, atMost(12))
	f.until(t, "107.9", "every offer recorded", func([]string) bool { return status().Offered == 12 }, atMost(12))
	if r := status(); r.State != server.RolloutActive || r.Failed != 2 || r.Claimed > 20 {
		t.Errorf("after resume: %+v", r)
	}

	// A maintenance window, by the servers' own clocks: stable's policy allows offers from
	// the next minute on (in a time zone half an hour off UTC, on that day alone), and 107.9
	// is promoted to stable. No machine gets it before the window opens; every one does
	// once it has.
	stable := newRolloutFleet(t, d, "stable", 6)
	zone, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	opens := time.Now().In(zone).Truncate(time.Minute).Add(time.Minute)
	if time.Until(opens) < 15*time.Second {
		opens = opens.Add(time.Minute) // time for rounds before it opens
	}
	window := fmt.Sprintf("%s %s-%s", strings.ToLower(opens.Weekday().String()[:3]), opens.Format("15:04"), opens.Add(30*time.Minute).Format("15:04"))
	d.Admin(t, "rollout", "policy", "set", "stable", "--window", window, "--time-zone", zone.String())
	d.Admin(t, "patch", "promote", "107.9", "stable")
	before := 0
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Until(opens) > 0 {
		got := stable.round(t, "107.9")
		if ended := time.Now(); ended.Before(opens) {
			if len(got) > 0 {
				t.Fatalf("at %s, before the window %s opens at %s, machines offered 107.9: %v", ended.In(zone).Format(time.TimeOnly), window, opens.Format(time.TimeOnly), got)
			}
			before++
		}
		<-tick.C
	}
	if before == 0 {
		t.Fatalf("no check-in round ended before the window opened")
	}
	inWindow := stable.until(t, "107.9", "window open", func(got []string) bool { return len(got) == 6 }, atMost(6))
	if time.Now().Before(opens) {
		t.Fatalf("offered %v before the window opened", inWindow)
	}

	// What the machines report after the offer: two hold it verified, not applied (mode
	// no-apply: downloaded), the others applied it.
	stable.report(inWindow[:2], server.StateUnapplied, "")
	stable.report(inWindow[2:], server.StateApplied, "107.9")
	stableStatus := func() server.Rollout {
		r, err := admin.Rollout(t.Context(), "stable", "107.9")
		if err != nil {
			t.Fatal(err)
		}
		return r.Rollout
	}
	stable.until(t, "107.9", "downloaded and applied", func([]string) bool {
		r := stableStatus()
		return r.Downloaded == 2 && r.Applied == 4
	}, atMost(6))
	if out := d.Admin(t, "report", "patch-health", "stable", "107.9"); !strings.Contains(out, "6 offered, 2 downloaded, 4 applied, 0 failed") {
		t.Errorf("patch health:\n%s", out)
	}
}
