package client_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

func TestSyncRoutes(t *testing.T) {
	report := `{"id":7,"started-at":"2024-05-01T12:00:00Z","ended-at":"2024-05-01T12:00:00Z","outcome":"failed","patches-added":1,"bytes":10,"error":"checksum mismatch","unit":"lp-0"}`
	reportV := server.SyncReport{ID: 7, StartedAt: t0, EndedAt: t0, Outcome: "failed", PatchesAdded: 1, Bytes: 10, Error: "checksum mismatch", Unit: "lp-0"}
	tokenV := server.SyncToken{Name: "region-1", Tier: "stable", Token: "tok", CreatedAt: t0, ValidUntil: &t0}
	tests := []struct {
		name    string
		call    func(ctx context.Context, c *client.Client) (any, error)
		status  int
		resp    string
		want    recorded
		wantOut any
	}{{
		name:   "trigger",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return nil, c.TriggerSync(ctx) },
		status: 202, resp: `{"triggered":true}`,
		want: recorded{Method: "POST", URI: "/v1/admin/sync/trigger?wait=false", Headers: map[string]string{"Authorization": bearerSession}},
	}, {
		name:   "trigger and wait",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.TriggerSyncWait(ctx) },
		status: 200, resp: report,
		want:    recorded{Method: "POST", URI: "/v1/admin/sync/trigger?wait=true", Headers: map[string]string{"Accept": jsonType}},
		wantOut: reportV,
	}, {
		name:   "status",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.SyncStatus(ctx) },
		status: 200, resp: `{"enabled":true,"upstream":"https://up","upstream-tier":"stable","tier":"edge","running":false,"last-run":` + report + `,"last-success":"2024-05-01T12:00:00Z","next-run":"2024-05-01T12:00:00Z","warnings":["w"]}`,
		want: recorded{Method: "GET", URI: "/v1/admin/sync/status"},
		wantOut: server.SyncStatus{Enabled: true, Upstream: "https://up", UpstreamTier: "stable", Tier: "edge",
			LastRun: &reportV, LastSuccess: &t0, NextRun: &t0, Warnings: []string{"w"}},
	}, {
		name:   "reports",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.SyncReports(ctx, 5) },
		status: 200, resp: `{"reports":[` + report + `]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/sync/reports?limit=5"},
		wantOut: []server.SyncReport{reportV},
	}, {
		name:   "reports default limit",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.SyncReports(ctx, 0) },
		status: 200, resp: `{"reports":[]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/sync/reports"},
		wantOut: []server.SyncReport{},
	}, {
		name:   "tokens",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.SyncTokens(ctx) },
		status: 200, resp: `{"tokens":[{"name":"region-1","tier":"stable","created-at":"2024-05-01T12:00:00Z","revoked":true}]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/sync-tokens"},
		wantOut: []server.SyncToken{{Name: "region-1", Tier: "stable", CreatedAt: t0, Revoked: true}},
	}, {
		name: "create token",
		call: func(ctx context.Context, c *client.Client) (any, error) {
			return c.CreateSyncToken(ctx, server.SyncTokenRequest{Name: "region-1", Tier: "stable", ValidUntil: &t0})
		},
		status: 201, resp: `{"name":"region-1","tier":"stable","token":"tok","created-at":"2024-05-01T12:00:00Z","valid-until":"2024-05-01T12:00:00Z","revoked":false}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/sync-tokens", Headers: map[string]string{"Content-Type": jsonType}, Body: `{"name":"region-1","tier":"stable","valid-until":"2024-05-01T12:00:00Z"}`},
		wantOut: tokenV,
	}, {
		name: "create token without expiry",
		call: func(ctx context.Context, c *client.Client) (any, error) {
			return c.CreateSyncToken(ctx, server.SyncTokenRequest{Name: "n", Tier: "edge"})
		},
		status: 201, resp: `{"name":"n","tier":"edge","token":"tok","created-at":"2024-05-01T12:00:00Z","revoked":false}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/sync-tokens", Body: `{"name":"n","tier":"edge"}`},
		wantOut: server.SyncToken{Name: "n", Tier: "edge", Token: "tok", CreatedAt: t0},
	}, {
		name:   "revoke token",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return nil, c.RevokeSyncToken(ctx, "a b") },
		status: 204,
		want:   recorded{Method: "DELETE", URI: "/v1/admin/sync-tokens/a%20b", Headers: map[string]string{"Authorization": bearerSession}},
	}, {
		name:   "downstreams",
		call:   func(ctx context.Context, c *client.Client) (any, error) { return c.Downstreams(ctx) },
		status: 200, resp: `{"deployments":[{"id":"model-1","first-seen":"2024-05-01T12:00:00Z","last-sync":"2024-05-01T12:00:00Z","via":"sync-token","sync-token":"region-1","tier":"stable","machine-count":50,"reported-machines":2,"patch-states":{"applied":2},"last-report":"2024-05-01T12:00:00Z"},{"id":"model-2","reported-machines":0,"patch-states":{}}]}`,
		want: recorded{Method: "GET", URI: "/v1/admin/reports/downstream", Headers: map[string]string{"Authorization": bearerSession}},
		wantOut: []server.Downstream{{ID: "model-1", FirstSeen: t0, LastSync: t0, Via: server.ViaSyncToken, SyncToken: "region-1", Tier: "stable",
			MachineCount: new(50), ReportedMachines: 2, PatchStates: map[string]int{"applied": 2}, LastReport: t0}, {ID: "model-2", PatchStates: map[string]int{}}},
	}, {
		name: "downstream machines",
		call: func(ctx context.Context, c *client.Client) (any, error) {
			ms, next, err := c.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "model 1", Tier: "stable", PatchState: "applied", After: "aa", Limit: 1})
			return []any{ms, next}, err
		},
		status: 200, resp: `{"machines":[{"id":"bb","tier":"stable","last-seen":"2024-05-01T12:00:00Z","kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","reported-at":"2024-05-01T12:00:00Z"}],"next":"bb"}`,
		want: recorded{Method: "GET", URI: "/v1/admin/reports/downstream/model%201/machines?after=aa&limit=1&state=applied&tier=stable"},
		wantOut: []any{[]server.DownstreamMachine{{SyncMachine: server.SyncMachine{ID: "bb", Tier: "stable", LastSeen: t0,
			Status: server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: "applied"}}, ReportedAt: t0}}, "bb"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := apiServer(t, tt.status, tt.resp)
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tt.call(t.Context(), c.WithToken("sess-token"))
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if diff := cmp.Diff(tt.wantOut, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			gotHeaders := map[string]string{}
			for k := range tt.want.Headers {
				gotHeaders[k] = rec.Headers[k]
			}
			gotRec := recorded{Method: rec.Method, URI: rec.URI, Body: rec.Body, Headers: gotHeaders}
			want := tt.want
			if want.Headers == nil {
				want.Headers = map[string]string{}
			}
			if diff := cmp.Diff(want, gotRec); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTriggerSyncConflict(t *testing.T) {
	srv, _ := apiServer(t, 409, `{"code":"conflict","message":"upstream sync is not enabled on this server (patch-sync.enabled)"}`)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WithToken("x").TriggerSyncWait(t.Context())
	if server.ErrorCode(err) != server.CodeConflict || err.Error() != "upstream sync is not enabled on this server (patch-sync.enabled)" {
		t.Errorf("TriggerSyncWait = %v, want the conflict", err)
	}
}
