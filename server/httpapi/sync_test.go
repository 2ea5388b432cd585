package httpapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// withSigningKey makes the env a sync upstream and returns its public key.
func withSigningKey(pub *ed25519.PublicKey) func(*httpapi.Options) {
	return func(o *httpapi.Options) {
		p, key, _ := ed25519.GenerateKey(nil)
		o.SigningKey = key
		*pub = p
	}
}

func (e *env) syncToken(name, tier string, validUntil *time.Time) string {
	e.t.Helper()
	var tok server.SyncToken
	e.must(201, "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": name, "tier": tier, "valid-until": validUntil}, &tok)
	return tok.Token
}

func TestSyncTokensAPI(t *testing.T) {
	e := newEnv(t)
	until := e.now.Add(48 * time.Hour).Truncate(time.Second)
	var tok server.SyncToken
	e.must(201, "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "region-1", "tier": "stable", "valid-until": until}, &tok)
	if tok.Name != "region-1" || tok.Tier != "stable" || len(tok.Token) != 36 || tok.ValidUntil == nil || !tok.ValidUntil.Equal(until) || tok.Revoked {
		t.Fatalf("created sync token = %+v", tok)
	}
	e.must(201, "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "lab", "tier": "edge"}, nil)
	e.wantError(409, `sync token "region-1" already exists`, "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "region-1", "tier": "edge"})
	e.wantError(404, `tier "nosuch" not found`, "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "x", "tier": "nosuch"})
	e.wantError(400, "invalid sync token name", "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "a b", "tier": "edge"})
	e.wantError(400, "tier is required", "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "x"})
	e.wantError(400, "is in the past", "POST", "/v1/admin/sync-tokens", "session", map[string]any{"name": "x", "tier": "edge", "valid-until": e.now.Add(-time.Hour)})

	var list struct{ Tokens []server.SyncToken }
	e.must(200, "GET", "/v1/admin/sync-tokens", "session", nil, &list)
	if len(list.Tokens) != 2 || list.Tokens[0].Name != "lab" || list.Tokens[1].Name != "region-1" || list.Tokens[0].Token != "" || list.Tokens[1].Token != "" {
		t.Errorf("sync tokens = %+v", list.Tokens)
	}
	e.must(204, "DELETE", "/v1/admin/sync-tokens/region-1", "session", nil, nil)
	e.wantError(404, `sync token "region-1" not found`, "DELETE", "/v1/admin/sync-tokens/region-1", "session", nil)
	e.must(200, "GET", "/v1/admin/sync-tokens", "session", nil, &list)
	if !list.Tokens[1].Revoked {
		t.Errorf("revoked token lists as %+v", list.Tokens[1])
	}
	if strings.Contains(e.logBuf.String(), tok.Token) || !strings.Contains(e.logBuf.String(), `"event":"synctoken_create"`) {
		t.Errorf("log holds the token or lacks the event:\n%s", e.logBuf)
	}
}

func TestSyncPatchesAPI(t *testing.T) {
	var pub ed25519.PublicKey
	e := newEnv(t, withSigningKey(&pub))
	p1 := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	e.upload("5.15.0-107.117", "generic", "107.2", "amd64") // stays in edge
	p3 := e.upload("6.8.0-31.31", "lowlatency", "31.1", "arm64")
	e.must(200, "POST", "/v1/admin/patches/107.1/promote", "session", map[string]string{"tier": "stable"}, nil)
	e.must(200, "POST", "/v1/admin/patches/31.1/promote", "session", map[string]string{"tier": "stable"}, nil)
	e.must(200, "POST", "/v1/admin/patches/31.1/block", "session", map[string]string{"reason": "bad"}, nil)
	token := e.syncToken("region-1", "stable", nil)

	get := func(path, auth string, headers map[string]string) server.SyncList {
		t.Helper()
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		req.Header.Set("Authorization", auth)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var signed server.SignedSyncList
		if err := json.NewDecoder(resp.Body).Decode(&signed); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
		}
		if signed.KeyID != server.KeyID(pub) {
			t.Errorf("key id %q, want %q", signed.KeyID, server.KeyID(pub))
		}
		list, err := signed.Verify(pub)
		if err != nil {
			t.Fatalf("signature: %v", err)
		}
		return list
	}
	list := get("/v1/sync/patches?tier=stable", "Bearer "+token, map[string]string{
		server.HeaderDeploymentID: "model-1", server.HeaderMachineCount: "50"})
	// This server originates its uploads: it signs each, for the clients that trust its key.
	for i, sp := range list.Patches {
		if err := server.VerifyPatch(pub, sp.Signature, sp.Filename, sp.SHA256, sp.Size); err != nil {
			t.Errorf("signature of %s: %v", sp.Filename, err)
		}
		list.Patches[i].Signature = nil
	}
	want := server.SyncList{Tier: "stable", GeneratedAt: e.now.UTC(), Tiers: []string{"stable"}, Patches: []server.SyncPatch{{
		Filename: p1.Filename, Version: "107.1", Kernel: "5.15.0-107.117", Flavour: "generic", Architecture: "amd64",
		SHA256: p1.SHA256, Size: p1.Size, Module: p1.Module, Description: p1.Description, Fixes: p1.Fixes,
		URL: "http://lp.example/patches/" + p1.Filename, Tier: "stable",
	}}}
	if diff := cmp.Diff(want, list); diff != "" {
		t.Errorf("stable list (-want +got):\n%s", diff)
	}
	if !strings.Contains(e.logBuf.String(), `"event":"sync_list","user":"sync-token:region-1","method":"GET","path":"/v1/sync/patches","remote":"127.0.0.1","tier":"stable","patches":1,"deployment":"model-1","machines":50`) {
		t.Errorf("no sync_list event with telemetry:\n%s", e.logBuf)
	}
	// A machine's offer carries the same signature.
	machine := e.enable("m1", e.authToken("prod", "stable", 0))
	var up server.Update
	e.must(200, "POST", "/v1/client/m1/updates", "Bearer "+machine, status("5.15.0-107-generic"), &up)
	if up.Patch == nil || up.Patch.Filename != p1.Filename {
		t.Fatalf("check-in = %+v, want an offer of %s", up, p1.Filename)
	}
	if err := server.VerifyPatch(pub, up.Patch.Signature, up.Patch.Filename, up.Patch.SHA256, up.Patch.Size); err != nil {
		t.Errorf("offer signature: %v", err)
	}
	// The admin listing shows the signature clients receive.
	var listed struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/patches", "session", nil, &listed)
	for _, p := range listed.Patches {
		if err := server.VerifyPatch(pub, p.Signature, p.Filename, p.SHA256, p.Size); err != nil {
			t.Errorf("admin listing of %s: %v", p.Filename, err)
		}
	}
	// Without ?tier= a sync token gets its own tier.
	if list := get("/v1/sync/patches", "Bearer "+token, nil); list.Tier != "stable" || len(list.Patches) != 1 {
		t.Errorf("list without tier = %+v", list)
	}
	_ = p3

	expiring := e.syncToken("short", "edge", new(e.now.Add(time.Hour)))
	// The list of a tier names the tiers from it onward, and the tier of each patch.
	list = get("/v1/sync/patches?tier=edge", "Bearer "+expiring, nil)
	if diff := cmp.Diff([]string{"edge", "beta", "candidate", "stable"}, list.Tiers); diff != "" {
		t.Errorf("edge list's tiers (-want +got):\n%s", diff)
	}
	tiers := map[string]string{}
	for _, p := range list.Patches {
		tiers[p.Version] = p.Tier
	}
	if diff := cmp.Diff(map[string]string{"107.2": "edge", "107.1": "stable"}, tiers); diff != "" {
		t.Errorf("edge list has patches (-want +got):\n%s\nwant 107.2, and 107.1 promoted past edge", diff)
	}
	if err := list.CheckTiers(); err != nil {
		t.Errorf("edge list: %v", err)
	}
	e.wantError(403, `sync token "region-1" is for tier "stable", not "edge": set patch-sync.upstream-tier to "stable"`, "GET", "/v1/sync/patches?tier=edge", "Bearer "+token, nil)
	e.wantError(401, "a bearer token is required", "GET", "/v1/sync/patches?tier=stable", "", nil)
	e.wantError(401, "unknown sync token", "GET", "/v1/sync/patches?tier=stable", "Bearer "+server.NewUUID(), nil)
	e.wantError(401, "unknown sync token", "GET", "/v1/sync/patches?tier=stable", "Bearer some-resource-token", nil)
	e.now = e.now.Add(2 * time.Hour)
	e.wantError(401, `sync token "short" expired at`, "GET", "/v1/sync/patches?tier=edge", "Bearer "+expiring, nil)
	e.must(204, "DELETE", "/v1/admin/sync-tokens/region-1", "session", nil, nil)
	e.wantError(401, `sync token "region-1" has been revoked`, "GET", "/v1/sync/patches?tier=stable", "Bearer "+token, nil)
	if strings.Contains(e.logBuf.String(), token) {
		t.Errorf("a sync token reached the log")
	}

	// A server without a signing key is not an upstream.
	plain := newEnv(t)
	tok := plain.syncToken("x", "stable", nil)
	plain.wantError(503, "this server is not configured as a sync upstream (sync-server.signing-key)", "GET", "/v1/sync/patches?tier=stable", "Bearer "+tok, nil)
	plain.wantError(503, "not configured as a sync upstream", "POST", "/v1/sync/machine-reports", "Bearer "+tok, map[string]any{"machines": []any{}})
}

func TestSyncResourceTokens(t *testing.T) {
	var pub ed25519.PublicKey
	var checked []string
	e := newEnv(t, withSigningKey(&pub), func(o *httpapi.Options) {
		o.ResourceTokens = func(ctx context.Context, token string) error {
			checked = append(checked, token)
			switch token {
			case "good-resource-token":
				return nil
			case "down":
				return server.Errorf(server.CodeUnavailable, "cannot check the resource token: the contracts server at x answered 502")
			}
			return server.Errorf(server.CodeUnauthorized, "the contracts server refused the resource token")
		}
	})
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	e.must(200, "GET", "/v1/sync/patches?tier=edge", "Bearer good-resource-token", nil, nil)
	e.wantError(400, "tier is required with a resource token", "GET", "/v1/sync/patches", "Bearer good-resource-token", nil)
	e.wantError(404, `tier "nosuch" does not exist`, "GET", "/v1/sync/patches?tier=nosuch", "Bearer good-resource-token", nil)
	e.wantError(401, "the contracts server refused the resource token", "GET", "/v1/sync/patches?tier=edge", "Bearer bad", nil)
	e.wantError(503, "contracts server", "GET", "/v1/sync/patches?tier=edge", "Bearer down", nil)
	// Tokens shaped as sync tokens never go to the contracts server.
	e.wantError(401, "unknown sync token", "GET", "/v1/sync/patches?tier=edge", "Bearer "+server.NewUUID(), nil)
	if diff := cmp.Diff([]string{"good-resource-token", "good-resource-token", "good-resource-token", "bad", "down"}, checked); diff != "" {
		t.Errorf("tokens checked with the contracts server (-want +got):\n%s", diff)
	}
}

func TestSyncMachineReportsAPI(t *testing.T) {
	var pub ed25519.PublicKey
	e := newEnv(t, withSigningKey(&pub))
	token := e.syncToken("region-1", "stable", nil)
	machine := map[string]any{"id": strings.Repeat("ab", 32), "tier": "stable", "kernel": "5.15.0-107-generic",
		"architecture": "amd64", "patch-state": "applied", "patch-version": "107.1"}
	post := func(deployment string, body any) (int, []byte) {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/sync/machine-reports", strings.NewReader(string(data)))
		req.Header.Set("Authorization", "Bearer "+token)
		if deployment != "" {
			req.Header.Set(server.HeaderDeploymentID, deployment)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out json.RawMessage
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if status, body := post("model-1", map[string]any{"machines": []any{machine}}); status != 200 || string(body) != `{"recorded":1}` {
		t.Errorf("machine report: %d %s", status, body)
	}
	var n int
	if err := e.db.SQL().QueryRow(`SELECT count(*) FROM sync_machines WHERE deployment_id = 'model-1'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("recorded machines = %d, %v", n, err)
	}
	if status, body := post("", map[string]any{"machines": []any{machine}}); status != 400 || !strings.Contains(string(body), "Livepatch-Deployment-Id") {
		t.Errorf("report without deployment: %d %s", status, body)
	}
	bad := map[string]any{"id": "raw-machine-id", "kernel": "5.15.0-107-generic", "architecture": "amd64", "patch-state": "applied"}
	if status, body := post("model-1", map[string]any{"machines": []any{bad}}); status != 400 || !strings.Contains(string(body), "HMAC") {
		t.Errorf("report with a raw machine id: %d %s", status, body)
	}
	many := make([]any, server.MaxSyncMachines+1)
	for i := range many {
		many[i] = machine
	}
	if status, _ := post("model-1", map[string]any{"machines": many}); status != 413 {
		t.Errorf("report of too many machines: %d, want 413", status)
	}
}

// fakeSyncer answers the admin sync routes with fixed data.
type fakeSyncer struct {
	report server.SyncReport
	status server.SyncStatus
}

func (f *fakeSyncer) Trigger(ctx context.Context) (<-chan server.SyncReport, error) {
	ch := make(chan server.SyncReport, 1)
	ch <- f.report
	return ch, nil
}

func (f *fakeSyncer) Status(ctx context.Context) (server.SyncStatus, error) { return f.status, nil }

func (f *fakeSyncer) Health(ctx context.Context) server.SyncHealth {
	return server.SyncHealth{Enabled: f.status.Enabled, Status: server.HealthOK}
}

func (f *fakeSyncer) Import(ctx context.Context, r io.Reader) (server.SyncReport, error) {
	return server.SyncReport{}, server.Errorf(server.CodeConflict, "the routes tested here do not import")
}

func TestSyncAdminAPI(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	report := server.SyncReport{ID: 3, StartedAt: t0, EndedAt: t0.Add(time.Second), Outcome: server.SyncSuccess, PatchesAdded: 2, Bytes: 10, Unit: "lp-0"}
	f := &fakeSyncer{report: report, status: server.SyncStatus{Enabled: true, Upstream: "https://up", UpstreamTier: "stable", Tier: "edge", LastRun: &report}}
	e := newEnv(t, func(o *httpapi.Options) { o.Sync = f })
	var triggered map[string]bool
	e.must(202, "POST", "/v1/admin/sync/trigger", "session", nil, &triggered)
	if !triggered["triggered"] {
		t.Errorf("trigger answered %v", triggered)
	}
	e.must(202, "POST", "/v1/admin/sync/trigger?wait=false", "session", nil, nil)
	var got server.SyncReport
	e.must(200, "POST", "/v1/admin/sync/trigger?wait=true", "session", nil, &got)
	if diff := cmp.Diff(report, got); diff != "" {
		t.Errorf("waited report (-want +got):\n%s", diff)
	}
	e.wantError(400, `invalid wait "soon"`, "POST", "/v1/admin/sync/trigger?wait=soon", "session", nil)
	var st server.SyncStatus
	e.must(200, "GET", "/v1/admin/sync/status", "session", nil, &st)
	if diff := cmp.Diff(f.status, st); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	// Reports come from the store, newest first.
	for i := range 3 {
		r := report
		r.StartedAt = t0.Add(time.Duration(i) * time.Hour)
		if _, err := e.db.AddSyncReport(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	var reports struct{ Reports []server.SyncReport }
	e.must(200, "GET", "/v1/admin/sync/reports", "session", nil, &reports)
	if len(reports.Reports) != 3 || !reports.Reports[0].StartedAt.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("reports = %+v", reports.Reports)
	}
	e.must(200, "GET", "/v1/admin/sync/reports?limit=1", "session", nil, &reports)
	if len(reports.Reports) != 1 {
		t.Errorf("limited reports = %+v", reports.Reports)
	}
	e.wantError(400, "invalid limit", "GET", "/v1/admin/sync/reports?limit=0", "session", nil)

	// A server that does not sync refuses triggers and says so in its status.
	plain := newEnv(t)
	plain.wantError(409, "upstream sync is not enabled on this server (patch-sync.enabled)", "POST", "/v1/admin/sync/trigger?wait=true", "session", nil)
	var plainStatus map[string]any
	plain.must(200, "GET", "/v1/admin/sync/status", "session", nil, &plainStatus)
	if plainStatus["enabled"] != false || plainStatus["last-run"] != nil {
		t.Errorf("status of a server without sync = %v", plainStatus)
	}
	plain.must(200, "GET", "/v1/admin/sync/reports", "session", nil, &reports)
	if reports.Reports == nil || len(reports.Reports) != 0 {
		t.Errorf("reports of a server without sync = %#v, want []", reports.Reports)
	}
}
