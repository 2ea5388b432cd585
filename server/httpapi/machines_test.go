package httpapi_test

import (
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// checkInAs reports st for machine id with its machine token.
func (e *env) checkInAs(id, token string, st server.Status) {
	e.t.Helper()
	e.must(200, "POST", "/v1/client/"+id+"/updates", "Bearer "+token, st, nil)
}

func TestMachineRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := e.authToken("web", "beta", 2)
	mt := e.enable("m1", tok)
	st := status("5.15.0-107-generic")
	st.Hostname = "web-1"
	st.Cloud = server.Cloud{Name: "aws", Region: "eu-west-1", Zone: "eu-west-1b"}
	e.checkInAs("m1", mt, st)
	e.now = e.now.Add(time.Hour)
	e.checkInAs("m1", mt, st) // no change: no history row
	st.PatchState = server.StateNeedsCheck
	e.now = e.now.Add(time.Hour)
	e.checkInAs("m1", mt, st)

	var d server.MachineDetail
	e.must(200, "GET", "/v1/admin/machines/m1", "session", nil, &d)
	if d.Tier != "beta" || d.TokenID != "web" || d.Hostname != "web-1" || d.Cloud.Zone != "eu-west-1b" || len(d.History) != 3 ||
		d.History[0].PatchState != server.StateNeedsCheck || d.History[2].Cause != server.CauseEnable {
		t.Errorf("machine show = %+v", d)
	}

	// History: the changes, or every check-in, paged.
	var page struct {
		Events []server.MachineEvent
		Next   int64
	}
	e.must(200, "GET", "/v1/admin/machines/m1/history?limit=2", "session", nil, &page)
	if len(page.Events) != 2 || page.Next == 0 {
		t.Fatalf("history page = %+v; want 2 events and a cursor", page)
	}
	before := page.Next
	page.Events, page.Next = nil, 0
	e.must(200, "GET", fmt.Sprintf("/v1/admin/machines/m1/history?limit=2&before=%d", before), "session", nil, &page)
	if len(page.Events) != 1 || page.Events[0].Cause != server.CauseEnable || page.Next != 0 {
		t.Errorf("second history page = %+v; want the enrolment", page)
	}
	page.Events, page.Next = nil, 0
	e.must(200, "GET", "/v1/admin/machines/m1/history?all=true", "session", nil, &page)
	if len(page.Events) != 3 {
		t.Errorf("history of every check-in = %+v; want 3", page)
	}

	// Move: the machine learns its tier at its next check-in.
	var m server.Machine
	e.must(200, "POST", "/v1/admin/machines/m1/move", "session", map[string]string{"tier": "stable"}, &m)
	if m.Tier != "stable" {
		t.Errorf("moved machine = %+v", m)
	}
	var u server.Update
	e.must(200, "POST", "/v1/client/m1/updates", "Bearer "+mt, st, &u)
	if u.Tier != "stable" {
		t.Errorf("check-in after the move answers tier %q, want stable", u.Tier)
	}

	// Tags, and the report's filters.
	e.must(200, "POST", "/v1/admin/machines/m1/tags", "session", map[string]any{"set": map[string]string{"role": "web"}}, &m)
	if m.Tags["role"] != "web" {
		t.Errorf("tagged machine = %+v", m)
	}
	mt2 := e.enable("m2", tok)
	e.checkInAs("m2", mt2, status("6.8.0-40-generic"))
	var report struct{ Machines []server.Machine }
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"hostname=web-1", []string{"m1"}},
		{"tag=role%3Dweb", []string{"m1"}},
		{"kernel=6.8.0-40-generic", []string{"m2"}},
		{"tier=stable&state=needs-check", []string{"m1"}},
		{"seen-after=30m", []string{"m1", "m2"}},
		{"seen-before=1h", nil},
	} {
		report.Machines = nil
		e.must(200, "GET", "/v1/admin/reports/machines?"+tc.query, "session", nil, &report)
		var ids []string
		for _, m := range report.Machines {
			ids = append(ids, m.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tc.want) {
			t.Errorf("report machines ?%s = %v, want %v", tc.query, ids, tc.want)
		}
	}

	// Bulk move by filter.
	var moved struct{ Moved int }
	e.must(200, "POST", "/v1/admin/machines/move", "session", map[string]any{"tier": "edge", "filter": map[string]any{"kernel": "6.8.0-40-generic"}}, &moved)
	if moved.Moved != 1 {
		t.Errorf("bulk move moved %d, want 1", moved.Moved)
	}

	// Bad input: JSON errors with the status of their code.
	e.wantError(404, `machine "nope" not found`, "GET", "/v1/admin/machines/nope", "session", nil)
	e.wantError(404, `machine "nope" not found`, "GET", "/v1/admin/machines/nope/history", "session", nil)
	e.wantError(404, `machine "nope" not found`, "POST", "/v1/admin/machines/nope/move", "session", map[string]string{"tier": "stable"})
	e.wantError(404, `tier "gold" does not exist`, "POST", "/v1/admin/machines/m1/move", "session", map[string]string{"tier": "gold"})
	e.wantError(404, `tier "gold" does not exist`, "POST", "/v1/admin/machines/move", "session", map[string]any{"tier": "gold", "filter": map[string]any{}})
	e.wantError(400, "a bulk move needs a filter", "POST", "/v1/admin/machines/move", "session", map[string]string{"tier": "stable"})
	e.wantError(400, "tier is required", "POST", "/v1/admin/machines/m1/move", "session", map[string]string{})
	e.wantError(400, "invalid machine id", "GET", "/v1/admin/machines/"+url.PathEscape("a b"), "session", nil)
	e.wantError(400, "invalid seen-before", "GET", "/v1/admin/reports/machines?seen-before=7x", "session", nil)
	e.wantError(400, "invalid seen-after", "GET", "/v1/admin/reports/machines?seen-after=-1h", "session", nil)
	e.wantError(400, "invalid tag filter", "GET", "/v1/admin/reports/machines?tag=role", "session", nil)
	e.wantError(400, "invalid tag key", "POST", "/v1/admin/machines/m1/tags", "session", map[string]any{"set": map[string]string{"-bad": "x"}})
	e.wantError(400, "limit must be", "GET", "/v1/admin/machines/m1/history?limit=0", "session", nil)
	e.wantError(400, "invalid before", "GET", "/v1/admin/machines/m1/history?before=x", "session", nil)
	e.wantError(401, "", "GET", "/v1/admin/machines/m1", "", nil)

	// Delete frees the token's quota (max 2): a third machine enrols, and m1 enrols anew.
	e.must(204, "DELETE", "/v1/admin/machines/m1", "session", nil, nil)
	e.wantError(404, `machine "m1" not found`, "DELETE", "/v1/admin/machines/m1", "session", nil)
	e.enable("m3", tok)
	e.wantError(403, "limit of 2 machines", "POST", "/v1/client/m1", "Bearer "+tok, nil)
}

// TestFleetMetrics checks /metrics counts machines by tier, patch state and kernel, with
// at most 20 kernels by name, and counts again only once the counts are older than the
// interval.
func TestFleetMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *httpapi.Options) { o.FleetMetricsInterval = time.Minute })
	tok := e.authToken("web", "beta", 0)
	for i := range 23 {
		id := fmt.Sprintf("m%02d", i)
		mt := e.enable(id, tok)
		if i == 22 {
			continue // not reported yet
		}
		e.checkInAs(id, mt, status(fmt.Sprintf("5.15.0-%d-generic", 100+min(i, 20))))
	}
	// m20 and m21 share a kernel, the most used; the 19 next by name (100-118) and the rest
	// (119 and the machine not reported) as "other".
	scrape := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, body := e.do("GET", "/metrics", "", nil)
			if strings.Contains(string(body), want) {
				return string(body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics has no %q after 30s:\n%s", want, body)
			}
			runtime.Gosched()
		}
	}
	body := scrape(`livepatch_server_machines_by_tier{tier="beta"} 23`)
	for _, line := range []string{
		`livepatch_server_machines_by_patch_state{state="nothing-to-apply"} 22`,
		`livepatch_server_machines_by_patch_state{state="not-reported"} 1`,
		`livepatch_server_machines_by_kernel{kernel="5.15.0-120-generic"} 2`,
		`livepatch_server_machines_by_kernel{kernel="5.15.0-118-generic"} 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if n := strings.Count(body, "livepatch_server_machines_by_kernel{"); n != 21 {
		t.Errorf("/metrics has %d kernel series, want 20 and other", n)
	}
	if !strings.Contains(body, `livepatch_server_machines_by_kernel{kernel="other"} 2`+"\n") {
		t.Errorf("/metrics lacks the other kernels (2 machines):\n%s", body)
	}

	// A new machine shows only once the counts are older than the interval.
	e.enable("late", tok)
	if _, body := e.do("GET", "/metrics", "", nil); !strings.Contains(string(body), `livepatch_server_machines_by_tier{tier="beta"} 23`) {
		t.Errorf("counts changed within the interval:\n%s", body)
	}
	e.now = e.now.Add(time.Minute)
	scrape(`livepatch_server_machines_by_tier{tier="beta"} 24`)
}
