package httpapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// syncRequest sends a downstream's sync request with its telemetry headers (empty values
// are not sent) and returns the status.
func (e *env) syncRequest(method, path, token, deployment, machines string, body any) int {
	e.t.Helper()
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(string(data)))
	req.Header.Set("Authorization", "Bearer "+token)
	if deployment != "" {
		req.Header.Set(server.HeaderDeploymentID, deployment)
	}
	if machines != "" {
		req.Header.Set(server.HeaderMachineCount, machines)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDownstreamReportAPI(t *testing.T) {
	var pub ed25519.PublicKey
	e := newEnv(t, withSigningKey(&pub), func(o *httpapi.Options) {
		o.ResourceTokens = func(ctx context.Context, token string) error {
			if token == "good-resource-token" {
				return nil
			}
			return server.Errorf(server.CodeUnauthorized, "the contracts server refused the resource token")
		}
	})
	token := e.syncToken("region-1", "stable", nil)
	e.now = e.now.Truncate(time.Second) // as PostgreSQL keeps it
	t0 := e.now

	list := func(token, deployment, machines string) {
		t.Helper()
		if status := e.syncRequest("GET", "/v1/sync/patches?tier=stable", token, deployment, machines, nil); status != 200 {
			t.Fatalf("sync list of %q: status %d", deployment, status)
		}
	}
	// Each list request with a deployment id is recorded, the last one wins; requests
	// without a valid one are served and not recorded.
	list(token, "model-1", "50")
	e.now = e.now.Add(time.Minute)
	list(token, "model-1", "100")
	list(token, "", "7")
	list(token, "bad id", "7")
	list("good-resource-token", "model-2", "")
	list("good-resource-token", "model-3", "many") // an unreadable count is not recorded
	// model-1 reports its machines.
	machine := func(c, tier, state string) map[string]any {
		return map[string]any{"id": strings.Repeat(c, 64), "tier": tier, "kernel": "5.15.0-107-generic",
			"architecture": "amd64", "patch-state": state, "patch-version": "107.1", "last-seen": t0}
	}
	reported := []any{machine("a", "stable", "applied"), machine("b", "stable", "apply-failed"), machine("c", "edge", "applied")}
	if status := e.syncRequest("POST", "/v1/sync/machine-reports", token, "model-1", "", map[string]any{"machines": reported}); status != 200 {
		t.Fatalf("machine report: status %d", status)
	}

	var got struct{ Deployments []server.Downstream }
	e.must(200, "GET", "/v1/admin/reports/downstream", "session", nil, &got)
	t1 := t0.Add(time.Minute)
	want := []server.Downstream{{
		ID: "model-1", FirstSeen: t0, LastSync: t1, Via: server.ViaSyncToken, SyncToken: "region-1", Tier: "stable",
		MachineCount: new(100), ReportedMachines: 3, PatchStates: map[string]int{"applied": 2, "apply-failed": 1}, LastReport: t1,
	}, {
		ID: "model-2", FirstSeen: t1, LastSync: t1, Via: server.ViaResourceToken, Tier: "stable", PatchStates: map[string]int{},
	}, {
		ID: "model-3", FirstSeen: t1, LastSync: t1, Via: server.ViaResourceToken, Tier: "stable", PatchStates: map[string]int{},
	}}
	if diff := cmp.Diff(want, got.Deployments); diff != "" {
		t.Errorf("downstream report (-want +got):\n%s", diff)
	}
	// Another sync token's holder sending model-1's id is still served its list, but
	// changes neither model-1's record nor its machines.
	other := e.syncToken("region-2", "stable", nil)
	list(other, "model-1", "1")
	if status := e.syncRequest("POST", "/v1/sync/machine-reports", other, "model-1", "", map[string]any{"machines": reported[:1]}); status != 409 {
		t.Errorf("machine report for another downstream's id: status %d, want 409", status)
	}
	// The JSON names, as docs/contracts.md gives them.
	_, body := e.do("GET", "/v1/admin/reports/downstream", "session", nil)
	for _, field := range []string{`"id":"model-1"`, `"first-seen":`, `"last-sync":`, `"via":"sync-token"`, `"sync-token":"region-1"`,
		`"tier":"stable"`, `"machine-count":100`, `"reported-machines":3`, `"patch-states":{"applied":2,"apply-failed":1}`, `"last-report":`} {
		if !strings.Contains(string(body), field) {
			t.Errorf("downstream report lacks %s: %s", field, body)
		}
	}

	// The machines of one deployment, a page at a time, and filtered.
	type page struct {
		Machines []server.DownstreamMachine
		Next     string
	}
	ids := func(p page) []string {
		var out []string
		for _, m := range p.Machines {
			out = append(out, m.ID[:1]+" "+m.Tier+" "+m.PatchState)
		}
		return out
	}
	var p page
	e.must(200, "GET", "/v1/admin/reports/downstream/model-1/machines?limit=2", "session", nil, &p)
	if diff := cmp.Diff([]string{"a stable applied", "b stable apply-failed"}, ids(p)); diff != "" || p.Next != strings.Repeat("b", 64) {
		t.Errorf("first page (-want +got):\n%s\nnext %q", diff, p.Next)
	}
	e.must(200, "GET", "/v1/admin/reports/downstream/model-1/machines?limit=2&after="+p.Next, "session", nil, &p)
	if diff := cmp.Diff([]string{"c edge applied"}, ids(p)); diff != "" || p.Next != "" {
		t.Errorf("second page (-want +got):\n%s\nnext %q", diff, p.Next)
	}
	if m := p.Machines[0]; m.PatchVersion != "107.1" || m.Kernel != "5.15.0-107-generic" || !m.LastSeen.Equal(t0) || !m.ReportedAt.Equal(t1) {
		t.Errorf("reported machine = %+v", m)
	}
	e.must(200, "GET", "/v1/admin/reports/downstream/model-1/machines?state=applied&tier=stable", "session", nil, &p)
	if diff := cmp.Diff([]string{"a stable applied"}, ids(p)); diff != "" {
		t.Errorf("applied machines of stable (-want +got):\n%s", diff)
	}
	_, body = e.do("GET", "/v1/admin/reports/downstream/model-2/machines", "session", nil)
	if string(body) != `{"machines":[],"next":""}`+"\n" {
		t.Errorf("machines of a deployment that reports none: %s", body)
	}
	e.wantError(404, `downstream deployment "nosuch" not found`, "GET", "/v1/admin/reports/downstream/nosuch/machines", "session", nil)
	e.wantError(400, `invalid patch state "happy"`, "GET", "/v1/admin/reports/downstream/model-1/machines?state=happy", "session", nil)
	e.wantError(400, "invalid tier name", "GET", "/v1/admin/reports/downstream/model-1/machines?tier=Bad%20Tier", "session", nil)
	e.wantError(400, "limit must be a number from 1 to 10000", "GET", "/v1/admin/reports/downstream/model-1/machines?limit=0", "session", nil)
	e.wantError(400, "invalid deployment id", "GET", "/v1/admin/reports/downstream/bad%20id/machines", "session", nil)
	// Administrators only: a downstream's credentials do not open the report.
	e.wantError(401, "", "GET", "/v1/admin/reports/downstream", "Bearer "+token, nil)
	e.wantError(401, "", "GET", "/v1/admin/reports/downstream/model-1/machines", "Bearer good-resource-token", nil)

	// A month later, what was not seen since is gone from the report.
	e.now = e.now.Add(31 * 24 * time.Hour)
	e.token = "" // the session expired
	list(token, "model-1", "1")
	e.must(200, "GET", "/v1/admin/reports/downstream", "session", nil, &got)
	if len(got.Deployments) != 1 || got.Deployments[0].ID != "model-1" || got.Deployments[0].ReportedMachines != 0 || !got.Deployments[0].FirstSeen.Equal(e.now) {
		t.Errorf("downstream report a month later = %+v, want model-1 anew, without its old machines", got.Deployments)
	}

	// When the record cannot be written, the list is still served.
	if _, err := e.db.SQL().ExecContext(t.Context(), `ALTER TABLE sync_deployments RENAME TO sync_deployments_gone`); err != nil {
		t.Fatal(err)
	}
	list(token, "model-1", "50")
	if !strings.Contains(e.logBuf.String(), `"msg":"Cannot record the sync of a downstream deployment"`) {
		t.Errorf("no warning for the failed record:\n%s", e.logBuf)
	}

	// An empty report is an empty list.
	plain := newEnv(t)
	_, body = plain.do("GET", "/v1/admin/reports/downstream", "session", nil)
	if string(body) != `{"deployments":[]}`+"\n" {
		t.Errorf("report of a server without downstreams: %s", body)
	}
}
