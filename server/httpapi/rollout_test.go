package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// clock is a test clock that the server's background refresh may read concurrently.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }
func (c *clock) options(o *httpapi.Options) {
	o.Now = c.now
	o.CatalogRefresh = time.Hour // tests refresh by hand
}

// fleet is machines of one tier checking in to a server.
type fleet struct {
	e      *env
	ids    []string
	tokens map[string]string
	status map[string]server.Status
}

func newFleet(e *env, tier string, n int) *fleet {
	e.t.Helper()
	tok := e.authToken("fleet-"+tier, tier, 0)
	f := &fleet{e: e, tokens: map[string]string{}, status: map[string]server.Status{}}
	for i := range n {
		id := fmt.Sprintf("%s-%02d", tier, i)
		f.ids = append(f.ids, id)
		f.tokens[id] = e.enable(id, tok)
		f.status[id] = status("5.15.0-107-generic")
	}
	return f
}

// checkIn checks every machine in through e and returns, per machine, the version offered
// ("" for none).
func (f *fleet) checkIn(e *env) map[string]string {
	e.t.Helper()
	got := map[string]string{}
	for _, id := range f.ids {
		var up server.Update
		e.must(200, "POST", "/v1/client/"+id+"/updates", "Bearer "+f.tokens[id], f.status[id], &up)
		if up.Patch != nil {
			got[id] = up.Patch.Version
		} else {
			got[id] = ""
		}
	}
	return got
}

// report sets what machines report at their next check-in.
func (f *fleet) report(ids []string, state, version string) {
	for _, id := range ids {
		st := f.status[id]
		st.PatchState, st.PatchVersion = state, version
		f.status[id] = st
	}
}

func offered(got map[string]string, version string) []string {
	var ids []string
	for id, v := range got {
		if v == version {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (e *env) refreshRollouts() {
	e.t.Helper()
	if err := e.api.RefreshRollouts(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) rollout(tier, version string) server.Rollout {
	e.t.Helper()
	var r server.Rollout
	e.must(200, "GET", "/v1/admin/tiers/"+tier+"/rollouts/"+version, "session", nil, &r)
	return r
}

// promtoolCheck lints the names of a /metrics scrape with promtool, when installed.
func promtoolCheck(t *testing.T, e *env) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool is missing (apt-get install -y prometheus): metric names not linted")
		return
	}
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = resp.Body
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func (e *env) metric(name string) string {
	e.t.Helper()
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, name) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// TestRolloutPolicyValidation checks that bad policies are refused with what is wrong.
func TestRolloutPolicyValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		body any
		want string
	}{
		{map[string]any{"canaries": -1}, "canaries must be between 0"},
		{map[string]any{"canaries": 2, "canary-percent": 10}, "not both"},
		{map[string]any{"canary-percent": 101}, "percentage"},
		{map[string]any{"rate-limit": 5}, "rate-limit and rate-period go together"},
		{map[string]any{"rate-limit": 5, "rate-period": "10s"}, "at least 1m"},
		{map[string]any{"soak": "forever"}, "invalid duration"},
		{map[string]any{"time-zone": "Mars/Olympus"}, "unknown time-zone"},
		{map[string]any{"windows": []any{map[string]any{"start": "25:00", "end": "03:00"}}}, "not HH:MM"},
		{map[string]any{"windows": []any{map[string]any{"days": []string{"monday"}, "start": "01:00", "end": "03:00"}}}, "is not one of"},
		{map[string]any{"tier": "beta"}, "names tier"},
		{map[string]any{"surprise": 1}, "unknown field"},
	} {
		e.wantError(400, tc.want, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", tc.body)
	}
	e.wantError(404, "not found", "PUT", "/v1/admin/tiers/nope/rollout-policy", "session", map[string]any{"canaries": 1})
	e.wantError(404, "no rollout policy", "GET", "/v1/admin/tiers/edge/rollout-policy", "session", nil)
	e.wantError(400, "invalid patch version", "POST", "/v1/admin/tiers/edge/rollouts/x.y/pause", "session", nil)
	e.wantError(404, "unknown rollout action", "POST", "/v1/admin/tiers/edge/rollouts/107.1/explode", "session", nil)

	want := server.RolloutPolicy{Tier: "edge", Canaries: 2, Soak: server.Duration(time.Hour), RateLimit: 3,
		RatePeriod: server.Duration(time.Hour), MaxInFlight: 5, FailureThreshold: 50, TimeZone: "Europe/Paris",
		Windows: []server.Window{{Days: []string{"sat", "sun"}, Start: "22:00", End: "04:00"}}}
	e.must(200, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", want, nil)
	var got server.RolloutPolicy
	e.must(200, "GET", "/v1/admin/tiers/edge/rollout-policy", "session", nil, &got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("policy read back %+v, want %+v", got, want)
	}
	e.must(204, "DELETE", "/v1/admin/tiers/edge/rollout-policy", "session", nil, nil)
	e.wantError(404, "no rollout policy", "DELETE", "/v1/admin/tiers/edge/rollout-policy", "session", nil)
}

// TestRolloutCanariesRateHaltResume walks a rollout through its phases from the
// machines' point of view: before the policy lets a patch through nobody gets it, then
// the canaries, a soak, a rate-limited phase, a halt by apply failures, and a resume.
func TestRolloutCanariesRateHaltResume(t *testing.T) {
	t.Parallel()
	clk := newClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, clk.options)
	f := newFleet(e, "edge", 10)
	e.must(200, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", map[string]any{
		"canaries": 2, "soak": "1h", "rate-limit": 3, "rate-period": "1h", "failure-threshold": 50,
	}, nil)
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")

	// Nobody has claimed a slot yet: every machine is held back.
	if got := offered(f.checkIn(e), "107.1"); len(got) != 0 {
		t.Fatalf("offered before any slot was claimed: %v", got)
	}
	e.refreshRollouts()
	canaries := offered(f.checkIn(e), "107.1")
	if len(canaries) != 2 {
		t.Fatalf("canary phase offered %v, want 2 machines", canaries)
	}
	// The canaries keep their offer; nobody else gets one while they have not applied.
	e.refreshRollouts()
	if got := offered(f.checkIn(e), "107.1"); !slices.Equal(got, canaries) {
		t.Fatalf("while canaries apply, offered %v, want %v", got, canaries)
	}
	f.report(canaries, server.StateApplied, "107.1")
	f.checkIn(e)
	e.refreshRollouts()
	if got := offered(f.checkIn(e), "107.1"); !slices.Equal(got, canaries) {
		t.Fatalf("during the soak, offered %v, want %v", got, canaries)
	}
	if r := e.rollout("edge", "107.1"); r.CanariesDone.IsZero() || r.CanariesApplied != 2 || r.Applied != 2 {
		t.Errorf("rollout after canaries: %+v", r)
	}

	// Soak over: at most 3 machines per hour.
	clk.add(time.Hour + time.Minute)
	f.checkIn(e)
	e.refreshRollouts()
	got := offered(f.checkIn(e), "107.1")
	if len(got) != 5 {
		t.Fatalf("after the soak, offered %v, want the 2 canaries and 3 more", got)
	}
	e.refreshRollouts()
	if again := offered(f.checkIn(e), "107.1"); !slices.Equal(again, got) {
		t.Fatalf("within the rate period, offered %v, want %v", again, got)
	}

	// The three new machines fail to apply: 3 of 5 is past 50%.
	wave := slices.DeleteFunc(slices.Clone(got), func(id string) bool { return slices.Contains(canaries, id) })
	f.report(wave, server.StateApplyFailed, "")
	clk.add(time.Minute)
	f.checkIn(e)
	e.refreshRollouts()
	r := e.rollout("edge", "107.1")
	if r.State != server.RolloutHalted || r.Failed != 3 || !strings.Contains(r.Reason, "failure threshold") {
		t.Fatalf("after failures: %+v", r)
	}
	var health struct{ Rollout *server.Rollout }
	e.must(200, "GET", "/v1/admin/reports/patch-health?tier=edge&version=107.1", "session", nil, &health)
	if health.Rollout == nil || health.Rollout.Failed != 3 || health.Rollout.State != server.RolloutHalted {
		t.Errorf("patch health rollout: %+v", health.Rollout)
	}
	var detail struct {
		MachineStates []server.RolloutMachine `json:"machine-states"`
	}
	e.must(200, "GET", "/v1/admin/tiers/edge/rollouts/107.1", "session", nil, &detail)
	states := map[string]string{}
	for _, m := range detail.MachineStates {
		states[m.MachineID] = fmt.Sprint(m.State, " ", m.Canary)
	}
	for _, id := range got {
		want := "failed false"
		if slices.Contains(canaries, id) {
			want = "applied true"
		}
		if states[id] != want {
			t.Errorf("machine %s: state %q, want %q", id, states[id], want)
		}
	}
	if m := e.metric(`livepatch_server_rollout_halted{tier="edge"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("halted metric: %q", m)
	}
	for state, want := range map[string]string{"applied": "2", "failed": "3", "offered": "0"} {
		if m := e.metric(`livepatch_server_rollout_machines{state="` + state + `",tier="edge",version="107.1"}`); !strings.HasSuffix(m, " "+want) {
			t.Errorf("machines %s metric: %q, want %s", state, m, want)
		}
	}
	promtoolCheck(t, e)
	if !strings.Contains(e.logBuf.String(), `"event":"rollout_halted"`) {
		t.Errorf("no rollout_halted security event in the log")
	}
	clk.add(time.Hour)
	f.checkIn(e)
	e.refreshRollouts()
	if after := offered(f.checkIn(e), "107.1"); !slices.Equal(after, got) {
		t.Fatalf("while halted, offered %v, want only %v", after, got)
	}

	// The operator resumes: the failures counted so far no longer count.
	e.must(200, "POST", "/v1/admin/tiers/edge/rollouts/107.1/resume", "session", nil, nil)
	f.checkIn(e)
	e.refreshRollouts()
	if after := offered(f.checkIn(e), "107.1"); len(after) != 8 {
		t.Fatalf("after resume, offered %v, want 8", after)
	}
	if r := e.rollout("edge", "107.1"); r.State != server.RolloutActive {
		t.Errorf("after resume: %+v", r)
	}
	if m := e.metric(`livepatch_server_rollout_halted{tier="edge"}`); !strings.HasSuffix(m, " 0") {
		t.Errorf("halted metric after resume: %q", m)
	}
}

// TestRolloutTwoUnits checks that two units claiming slots for the same rollout never
// together exceed its rate limit or canary count, that each honours the other's offers,
// and that a restarted unit keeps them.
func TestRolloutTwoUnits(t *testing.T) {
	t.Parallel()
	clk := newClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	a := newEnv(t, clk.options)
	b := newEnvOn(t, a.db, clk.options)
	f := newFleet(a, "beta", 12)
	a.must(200, "PUT", "/v1/admin/tiers/beta/rollout-policy", "session", map[string]any{
		"rate-limit": 4, "rate-period": "1h", "max-in-flight": 6,
	}, nil)
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	a.must(200, "POST", "/v1/admin/patches/107.1/promote", "session", map[string]any{"tier": "beta"}, nil)
	for _, e := range []*env{a, b} {
		e.refreshRollouts() // loads the policy
		f.checkIn(e)        // every machine held back: each unit wants slots
	}
	a.refreshRollouts()
	b.refreshRollouts()
	got := map[string]string{}
	for id, v := range f.checkIn(a) {
		got[id] = v
	}
	for id, v := range f.checkIn(b) {
		if v != "" {
			got[id] = v
		}
	}
	first := offered(got, "107.1")
	if len(first) != 4 {
		t.Fatalf("two units offered %v in one rate period, want 4", first)
	}
	// Each unit learns the other's offers: a machine keeps its offer at either unit.
	a.refreshRollouts()
	b.refreshRollouts()
	for _, e := range []*env{a, b} {
		if again := offered(f.checkIn(e), "107.1"); !slices.Equal(again, first) {
			t.Fatalf("after refresh, a unit offers %v, want %v", again, first)
		}
	}
	// The next period: the in-flight bound (6, none applied) allows 2 more.
	clk.add(time.Hour)
	f.checkIn(a)
	f.checkIn(b)
	a.refreshRollouts()
	b.refreshRollouts()
	f.checkIn(b)
	restarted := newEnvOn(t, a.db, clk.options)
	restarted.refreshRollouts()
	restarted.refreshRollouts() // a claim asked for at the first refresh of its check-ins
	union := map[string]string{}
	for _, e := range []*env{a, b} {
		e.refreshRollouts()
	}
	for _, e := range []*env{restarted, a, b} {
		for id, v := range f.checkIn(e) {
			if v != "" {
				union[id] = v
			}
		}
	}
	if n := len(offered(union, "107.1")); n != 6 {
		t.Fatalf("with a max-in-flight of 6, %d machines offered: %v", n, union)
	}
	if r := a.rollout("beta", "107.1"); r.Offered > 6 || r.Claimed > 6 {
		t.Errorf("rollout: %+v", r)
	}
}

// TestRolloutWindow checks that new offers wait for a maintenance window in the policy's
// time zone.
func TestRolloutWindow(t *testing.T) {
	t.Parallel()
	// Monday 2026-03-02 10:00 UTC is 11:00 in Paris.
	clk := newClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, clk.options)
	f := newFleet(e, "stable", 3)
	e.must(200, "PUT", "/v1/admin/tiers/stable/rollout-policy", "session", map[string]any{
		"time-zone": "Europe/Paris", "windows": []any{map[string]any{"days": []string{"mon"}, "start": "22:00", "end": "02:00"}},
	}, nil)
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	e.must(200, "POST", "/v1/admin/patches/107.1/promote", "session", map[string]any{"tier": "stable"}, nil)
	f.checkIn(e)
	e.refreshRollouts()
	if got := offered(f.checkIn(e), "107.1"); len(got) != 0 {
		t.Fatalf("outside the window, offered %v", got)
	}
	clk.set(time.Date(2026, 3, 2, 23, 30, 0, 0, time.UTC)) // Tuesday 00:30 in Paris
	f.checkIn(e)
	e.refreshRollouts()
	if got := offered(f.checkIn(e), "107.1"); len(got) != 3 {
		t.Fatalf("inside the window, offered %v, want every machine", got)
	}
}

// TestRolloutPolicyBeforePatch checks that a unit never serves a patch recorded after a
// policy was set on another unit without that policy: policies load with the catalog.
func TestRolloutPolicyBeforePatch(t *testing.T) {
	t.Parallel()
	clk := newClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	a := newEnv(t, clk.options)
	b := newEnvOn(t, a.db, clk.options)
	f := newFleet(a, "edge", 4)
	a.must(200, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", map[string]any{"canaries": 1}, nil)
	b.upload("5.15.0-107.117", "generic", "107.1", "amd64") // b reloads its catalog, nothing else
	if got := offered(f.checkIn(b), "107.1"); len(got) != 0 {
		t.Fatalf("a unit that had not refreshed since the policy offered %v", got)
	}
}

// TestRolloutPrune checks that a unit forgets the rollouts no check-in consults (a patch
// superseded by a newer one, a tier whose policy is gone) and, when one matters again (the
// newer patch blocked), loads its offers again: the machines offered it keep their offer
// and take no new slot.
func TestRolloutPrune(t *testing.T) {
	t.Parallel()
	clk := newClock(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, clk.options)
	f := newFleet(e, "edge", 4)
	e.must(200, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", map[string]any{"rate-limit": 2, "rate-period": "1h"}, nil)
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	f.checkIn(e)
	e.refreshRollouts()
	first := offered(f.checkIn(e), "107.1")
	if len(first) != 2 {
		t.Fatalf("offered %v, want the rate limit's 2", first)
	}
	e.refreshRollouts() // records the offers
	if got := e.api.RolloutsHeld(); fmt.Sprint(got) != "map[edge/107.1:2]" {
		t.Fatalf("held %v", got)
	}

	// 107.2 supersedes 107.1: only its rollout is held. Other offers recorded meanwhile
	// (another tier's) take the offer cursor well past those of 107.1.
	e.upload("5.15.0-107.117", "generic", "107.2", "amd64")
	f.checkIn(e)
	e.refreshRollouts()
	if _, err := e.db.SetRolloutState(t.Context(), "stable", "107.1", server.RolloutPaused, "", clk.now()); err != nil {
		t.Fatal(err)
	}
	var others []server.RolloutOffer
	for i := range 1000 {
		others = append(others, server.RolloutOffer{MachineID: fmt.Sprint("other-", i), OfferedAt: clk.now()})
	}
	if err := e.db.RecordOffers(t.Context(), "stable", "107.1", others); err != nil {
		t.Fatal(err)
	}
	e.refreshRollouts()
	if got := e.api.RolloutsHeld(); fmt.Sprint(got) != "map[edge/107.2:0]" {
		t.Errorf("after 107.2, held %v, want 107.2 alone", got)
	}

	// 107.2 blocked: 107.1 is offered again, to the machines offered it before, at once
	// (the period's two slots are gone).
	e.must(200, "POST", "/v1/admin/patches/107.2/block", "session", map[string]string{"reason": "regression"}, nil)
	e.refreshRollouts() // gives back the slots 107.2 held
	e.refreshRollouts()
	if got := e.api.RolloutsHeld(); fmt.Sprint(got) != "map[edge/107.1:2]" {
		t.Errorf("after blocking 107.2, held %v, want 107.1 alone with its 2 offers", got)
	}
	if got := offered(f.checkIn(e), "107.1"); !slices.Equal(got, first) {
		t.Errorf("after blocking 107.2, offered %v, want %v", got, first)
	}
	if r := e.rollout("edge", "107.1"); r.Claimed != 2 {
		t.Errorf("after blocking 107.2, %d slots claimed, want 2", r.Claimed)
	}
	if r := e.rollout("edge", "107.2"); r.Claimed != 0 {
		t.Errorf("107.2 blocked: %d slots still claimed, want them given back", r.Claimed)
	}

	// A halted rollout counts in the halted gauge while its patch is offered, not once a
	// newer one supersedes it.
	e.must(200, "POST", "/v1/admin/tiers/edge/rollouts/107.1/halt", "session", nil, nil)
	if m := e.metric(`livepatch_server_rollout_halted{tier="edge"}`); !strings.HasSuffix(m, " 1") {
		t.Errorf("107.1 halted: %q", m)
	}
	e.must(200, "POST", "/v1/admin/patches/107.2/unblock", "session", nil, nil)
	e.refreshRollouts()
	if m := e.metric(`livepatch_server_rollout_halted{tier="edge"}`); !strings.HasSuffix(m, " 0") {
		t.Errorf("107.1 halted, superseded by 107.2: %q", m)
	}

	// No policy: nothing held.
	e.must(204, "DELETE", "/v1/admin/tiers/edge/rollout-policy", "session", nil, nil)
	e.refreshRollouts()
	if got := e.api.RolloutsHeld(); len(got) != 0 {
		t.Errorf("without a policy, held %v", got)
	}
}
