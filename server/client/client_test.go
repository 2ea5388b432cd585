package client_test

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// recorded is what the test server saw of one request.
type recorded struct {
	Method  string
	URI     string
	Headers map[string]string // only the headers a case names
	Body    string
}

// apiServer answers every request with status and body and records the request.
func apiServer(t *testing.T, status int, body string) (*httptest.Server, *recorded) {
	t.Helper()
	rec := &recorded{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("cannot read request body: %v", err)
		}
		rec.Method, rec.URI, rec.Body = r.Method, r.RequestURI, string(data)
		rec.Headers = map[string]string{}
		for name := range r.Header {
			rec.Headers[name] = r.Header.Get(name)
		}
		if status != http.StatusNoContent {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

var (
	t0      = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	patch1  = `{"filename":"livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2","version":"107.1","kernel":"5.15.0-107.117","flavour":"generic","architecture":"amd64","sha256":"abc","size":10,"module":"lkp_107_1","tier":"edge","blocked":false,"source":"upload","created-at":"2024-05-01T12:00:00Z"}`
	patch1V = server.Patch{
		Filename: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", Version: "107.1",
		Kernel: "5.15.0-107.117", Flavour: "generic", Architecture: "amd64", SHA256: "abc",
		Size: 10, Module: "lkp_107_1", Tier: "edge", Source: "upload", CreatedAt: t0,
	}
)

const (
	bearerSession = "Bearer sess-token"
	jsonType      = "application/json"
)

func TestRoutes(t *testing.T) {
	type result struct {
		Value any
		Extra any
	}
	tests := []struct {
		name    string
		call    func(ctx context.Context, c *client.Client) (result, error)
		status  int
		resp    string
		want    recorded
		wantOut result
	}{{
		name: "login",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Login(ctx, "admin", "s3cret")
			return result{Value: r}, err
		},
		status: 200, resp: `{"token":"tok","user":"admin","expires-at":"2024-05-01T12:00:00Z"}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/login", Headers: map[string]string{"Authorization": "Basic YWRtaW46czNjcmV0"}},
		wantOut: result{Value: server.LoginResponse{Token: "tok", User: "admin", ExpiresAt: t0}},
	}, {
		name: "logout",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			return result{}, c.Logout(ctx)
		},
		status: 204,
		want:   recorded{Method: "POST", URI: "/v1/admin/logout", Headers: map[string]string{"Authorization": bearerSession}},
	}, {
		name: "tiers",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Tiers(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"tiers":[{"name":"edge","position":1},{"name":"stable","position":2}]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/tiers", Headers: map[string]string{"Authorization": bearerSession, "Accept": jsonType}},
		wantOut: result{Value: []server.Tier{{Name: "edge", Position: 1}, {Name: "stable", Position: 2}}},
	}, {
		name: "add tier after",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.AddTier(ctx, "qa", server.TierPlacement{After: "edge"})
			return result{Value: r}, err
		},
		status: 201, resp: `{"name":"qa","position":2}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/tiers", Headers: map[string]string{"Content-Type": jsonType}, Body: `{"name":"qa","after":"edge"}`},
		wantOut: result{Value: server.Tier{Name: "qa", Position: 2}},
	}, {
		name: "add tier first",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.AddTier(ctx, "qa", server.TierPlacement{First: true})
			return result{Value: r}, err
		},
		status: 201, resp: `{"name":"qa","position":1}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/tiers", Body: `{"name":"qa","first":true}`},
		wantOut: result{Value: server.Tier{Name: "qa", Position: 1}},
	}, {
		name: "add tier last",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.AddTier(ctx, "qa", server.TierPlacement{})
			return result{Value: r}, err
		},
		status: 201, resp: `{"name":"qa","position":5}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/tiers", Body: `{"name":"qa"}`},
		wantOut: result{Value: server.Tier{Name: "qa", Position: 5}},
	}, {
		name: "delete tier",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			return result{}, c.DeleteTier(ctx, "q a")
		},
		status: 204,
		want:   recorded{Method: "DELETE", URI: "/v1/admin/tiers/q%20a", Headers: map[string]string{"Authorization": bearerSession}},
	}, {
		name: "tier patches",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.TierPatches(ctx, "edge")
			return result{Value: r}, err
		},
		status: 200, resp: `{"patches":[` + patch1 + `]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/tiers/edge/patches"},
		wantOut: result{Value: []server.Patch{patch1V}},
	}, {
		name: "promote all",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.PromoteAll(ctx, "edge", "beta")
			return result{Value: r}, err
		},
		status: 200, resp: `{"promoted":3}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/tiers/edge/promote-all", Body: `{"to":"beta"}`},
		wantOut: result{Value: 3},
	}, {
		name: "patches unfiltered",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Patches(ctx, server.PatchFilter{})
			return result{Value: r}, err
		},
		status: 200, resp: `{"patches":[]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/patches"},
		wantOut: result{Value: []server.Patch{}},
	}, {
		name: "patches filtered",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Patches(ctx, server.PatchFilter{Tier: "beta", Kernel: "5.15.0-107", Version: "107.1"})
			return result{Value: r}, err
		},
		status: 200, resp: `{"patches":[` + patch1 + `]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/patches?kernel=5.15.0-107&tier=beta&version=107.1"},
		wantOut: result{Value: []server.Patch{patch1V}},
	}, {
		name: "patch version",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.PatchVersion(ctx, "107.1")
			return result{Value: r}, err
		},
		status: 200, resp: `{"patches":[` + patch1 + `]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/patches/107.1"},
		wantOut: result{Value: []server.Patch{patch1V}},
	}, {
		name: "upload new",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			p, created, err := c.UploadPatch(ctx, "livepatch-x.tar.bz2", strings.NewReader("archive"), 7)
			return result{Value: p, Extra: created}, err
		},
		status: 201, resp: patch1,
		want: recorded{Method: "PUT", URI: "/v1/admin/patches/files/livepatch-x.tar.bz2", Body: "archive",
			Headers: map[string]string{"Content-Length": "7", "Content-Type": "application/x-bzip2", "Authorization": bearerSession}},
		wantOut: result{Value: patch1V, Extra: true},
	}, {
		name: "upload known",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			p, created, err := c.UploadPatch(ctx, "livepatch-x.tar.bz2", strings.NewReader("archive"), 7)
			return result{Value: p, Extra: created}, err
		},
		status: 200, resp: patch1,
		want:    recorded{Method: "PUT", URI: "/v1/admin/patches/files/livepatch-x.tar.bz2", Body: "archive"},
		wantOut: result{Value: patch1V, Extra: false},
	}, {
		name: "promote patch",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.PromotePatch(ctx, "107.1", "stable")
			return result{Value: r}, err
		},
		status: 200, resp: `{"promoted":2}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/patches/107.1/promote", Body: `{"tier":"stable"}`},
		wantOut: result{Value: 2},
	}, {
		name: "block patch",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.BlockPatch(ctx, "107.1", "breaks nfs")
			return result{Value: r}, err
		},
		status: 200, resp: `{"blocked":2}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/patches/107.1/block", Body: `{"reason":"breaks nfs"}`},
		wantOut: result{Value: 2},
	}, {
		name: "block patch without reason",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.BlockPatch(ctx, "107.1", "")
			return result{Value: r}, err
		},
		status: 200, resp: `{"blocked":1}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/patches/107.1/block", Body: `{}`},
		wantOut: result{Value: 1},
	}, {
		name: "unblock patch",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.UnblockPatch(ctx, "107.1")
			return result{Value: r}, err
		},
		status: 200, resp: `{"unblocked":2}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/patches/107.1/unblock", Headers: map[string]string{"Content-Length": "0"}},
		wantOut: result{Value: 2},
	}, {
		name: "storage patches",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.StoragePatches(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"files":[{"filename":"a.tar.bz2","size":5,"mod-time":"2024-05-01T12:00:00Z","recorded":true}]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/storage/patches"},
		wantOut: result{Value: []server.StorageFile{{StoredFile: server.StoredFile{Filename: "a.tar.bz2", Size: 5, ModTime: t0}, Recorded: true}}},
	}, {
		name: "storage refresh",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.StorageRefresh(ctx, true)
			return result{Value: r}, err
		},
		status: 200, resp: `{"added":["a"],"removed":["b"],"missing":["d"],"mismatched":[{"filename":"e","recorded-sha256":"aa","stored-sha256":"bb"}],"invalid":[{"filename":"c","error":"bad"}]}`,
		want: recorded{Method: "POST", URI: "/v1/admin/storage/refresh", Body: `{"prune":true}`},
		wantOut: result{Value: server.RefreshResult{Added: []string{"a"}, Removed: []string{"b"}, Missing: []string{"d"},
			Mismatched: []server.MismatchedFile{{Filename: "e", RecordedSHA256: "aa", StoredSHA256: "bb"}},
			Invalid:    []server.InvalidFile{{Filename: "c", Error: "bad"}}}},
	}, {
		name: "auth tokens",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.AuthTokens(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"tokens":[{"id":"web","tier":"stable","created-at":"2024-05-01T12:00:00Z","expires-at":"2024-05-01T12:00:00Z","max-machines":5,"machines":2,"revoked":false}]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/auth-tokens"},
		wantOut: result{Value: []server.AuthToken{{ID: "web", Tier: "stable", CreatedAt: t0, ExpiresAt: &t0, MaxMachines: 5, Machines: 2}}},
	}, {
		name: "create auth token",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.CreateAuthToken(ctx, server.AuthTokenRequest{ID: "web", Tier: "stable", ExpiresAt: &t0, MaxMachines: 5})
			return result{Value: r}, err
		},
		status: 201, resp: `{"id":"web","tier":"stable","token":"uuid","created-at":"2024-05-01T12:00:00Z","machines":0,"revoked":false}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/auth-tokens", Body: `{"id":"web","tier":"stable","expires-at":"2024-05-01T12:00:00Z","max-machines":5}`},
		wantOut: result{Value: server.AuthToken{ID: "web", Tier: "stable", Token: "uuid", CreatedAt: t0}},
	}, {
		name: "create auth token minimal",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.CreateAuthToken(ctx, server.AuthTokenRequest{ID: "web", Tier: "stable"})
			return result{Value: r}, err
		},
		status: 201, resp: `{"id":"web","tier":"stable","token":"uuid","created-at":"2024-05-01T12:00:00Z","machines":0,"revoked":false}`,
		want:    recorded{Method: "POST", URI: "/v1/admin/auth-tokens", Body: `{"id":"web","tier":"stable"}`},
		wantOut: result{Value: server.AuthToken{ID: "web", Tier: "stable", Token: "uuid", CreatedAt: t0}},
	}, {
		name: "revoke auth token",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			return result{}, c.RevokeAuthToken(ctx, "web")
		},
		status: 204,
		want:   recorded{Method: "DELETE", URI: "/v1/admin/auth-tokens/web"},
	}, {
		name: "report machines",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, next, err := c.ReportMachines(ctx, server.MachineFilter{Tier: "stable", PatchVersion: "107.1", PatchState: "applied", After: "m1", Limit: 2})
			return result{Value: r, Extra: next}, err
		},
		status: 200, resp: `{"machines":[{"id":"m2","tier":"stable","token-id":"web","enabled-at":"2024-05-01T12:00:00Z","kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1"}],"next":"m2"}`,
		want: recorded{Method: "GET", URI: "/v1/admin/reports/machines?after=m1&limit=2&state=applied&tier=stable&version=107.1"},
		wantOut: result{Value: []server.Machine{{ID: "m2", Tier: "stable", TokenID: "web", EnabledAt: t0,
			Status: server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: "applied", PatchVersion: "107.1"}}}, Extra: "m2"},
	}, {
		name: "patch health",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.PatchHealth(ctx, "stable", "107.1")
			return result{Value: r}, err
		},
		status: 200, resp: `{"tier":"stable","version":"107.1","total":3,"states":{"applied":2,"apply-failed":1}}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/reports/patch-health?tier=stable&version=107.1"},
		wantOut: result{Value: server.PatchHealth{Tier: "stable", Version: "107.1", Total: 3, States: map[string]int{"applied": 2, "apply-failed": 1}}},
	}, {
		name: "kernels",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Kernels(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"kernels":[{"kernel":"5.15.0-107-generic","architecture":"amd64","machines":4}]}`,
		want:    recorded{Method: "GET", URI: "/v1/admin/reports/kernels"},
		wantOut: result{Value: []server.KernelCount{{Kernel: "5.15.0-107-generic", Architecture: "amd64", Machines: 4}}},
	}, {
		name: "enable without status",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			tok, tier, err := c.Enable(ctx, "m1", "auth-uuid", nil)
			return result{Value: tok, Extra: tier}, err
		},
		status: 200, resp: `{"machine-token":"mtok","tier":"stable"}`,
		want:    recorded{Method: "POST", URI: "/v1/client/m1", Headers: map[string]string{"Authorization": "Bearer auth-uuid", "Content-Type": jsonType}, Body: `{}`},
		wantOut: result{Value: "mtok", Extra: "stable"},
	}, {
		name: "enable with status",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			tok, tier, err := c.Enable(ctx, "m1", "auth-uuid", &server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: "nothing-to-apply"})
			return result{Value: tok, Extra: tier}, err
		},
		status: 200, resp: `{"machine-token":"mtok","tier":"stable"}`,
		want:    recorded{Method: "POST", URI: "/v1/client/m1", Body: `{"kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"nothing-to-apply"}`},
		wantOut: result{Value: "mtok", Extra: "stable"},
	}, {
		name: "check in",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.CheckIn(ctx, "m1", "mtok", server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: "applied", PatchVersion: "107.1"})
			return result{Value: r}, err
		},
		status: 200, resp: `{"tier":"stable","patch":{"version":"107.2","filename":"f","url":"http://h/patches/f","sha256":"abc","size":10,"module":"lkp"},"check":{"interval-minutes":60}}`,
		want: recorded{Method: "POST", URI: "/v1/client/m1/updates", Headers: map[string]string{"Authorization": "Bearer mtok"},
			Body: `{"kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1"}`},
		wantOut: result{Value: server.Update{Tier: "stable", Check: server.CheckAdvice{IntervalMinutes: 60},
			Patch: &server.PatchOffer{Version: "107.2", Filename: "f", URL: "http://h/patches/f", SHA256: "abc", Size: 10, Module: "lkp"}}},
	}, {
		name: "disable",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			return result{}, c.Disable(ctx, "m1", "mtok")
		},
		status: 204,
		want:   recorded{Method: "DELETE", URI: "/v1/client/m1", Headers: map[string]string{"Authorization": "Bearer mtok"}},
	}, {
		name: "info",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Info(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"version":"v1.2.3"}`,
		want:    recorded{Method: "GET", URI: "/debug/info"},
		wantOut: result{Value: client.Info{Version: "v1.2.3"}},
	}, {
		name: "debug status healthy",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.DebugStatus(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: `{"version":"v1","status":"OK","database":{"status":"OK"},"schema":{"current":3,"latest":3},"patch-storage":{"status":"OK"},"sync":{"enabled":false,"status":"disabled"},"contracts":{"status":"OK"}}`,
		want: recorded{Method: "GET", URI: "/debug/status"},
		wantOut: result{Value: server.Health{Version: "v1", Status: "OK", Database: server.ComponentHealth{Status: "OK"},
			Schema: server.SchemaHealth{Current: 3, Latest: 3}, PatchStorage: server.ComponentHealth{Status: "OK"},
			Sync: server.SyncHealth{Status: "disabled"}, Contracts: server.ContractsHealth{Status: "OK"}}},
	}, {
		name: "debug status degraded",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.DebugStatus(ctx)
			return result{Value: r}, err
		},
		status: 503, resp: `{"version":"v1","status":"degraded","database":{"status":"connection refused"},"schema":{"current":0,"latest":3}}`,
		want: recorded{Method: "GET", URI: "/debug/status"},
		wantOut: result{Value: server.Health{Version: "v1", Status: "degraded", Database: server.ComponentHealth{Status: "connection refused"},
			Schema: server.SchemaHealth{Latest: 3}}},
	}, {
		name: "banner",
		call: func(ctx context.Context, c *client.Client) (result, error) {
			r, err := c.Banner(ctx)
			return result{Value: r}, err
		},
		status: 200, resp: "Canonical Livepatch on-prem server, version v1.2.3\n",
		want:    recorded{Method: "GET", URI: "/"},
		wantOut: result{Value: "Canonical Livepatch on-prem server, version v1.2.3"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := apiServer(t, tt.status, tt.resp)
			c, err := client.New(srv.URL+"/", client.WithUserAgent("test-agent/1"))
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
			// Every request names the client; every request the case names a header for
			// must carry it exactly.
			wantHeaders := map[string]string{"User-Agent": "test-agent/1"}
			for k, v := range tt.want.Headers {
				wantHeaders[k] = v
			}
			gotHeaders := map[string]string{}
			for k := range wantHeaders {
				gotHeaders[k] = rec.Headers[k]
			}
			gotRec := recorded{Method: rec.Method, URI: rec.URI, Body: rec.Body, Headers: gotHeaders}
			wantRec := tt.want
			wantRec.Headers = wantHeaders
			if diff := cmp.Diff(wantRec, gotRec); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			// Machine routes never leak the admin session.
			if strings.HasPrefix(rec.URI, "/v1/client/") && rec.Headers["Authorization"] == bearerSession {
				t.Errorf("machine route sent the admin session token")
			}
			if !strings.HasPrefix(rec.URI, "/v1/") && rec.Headers["Authorization"] != "" {
				t.Errorf("ops route sent credentials %q", rec.Headers["Authorization"])
			}
		})
	}
}

func TestWithoutCredentials(t *testing.T) {
	srv, rec := apiServer(t, 200, `{"tiers":[]}`)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tiers(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rec.Headers["Authorization"]; got != "" {
		t.Errorf("Authorization = %q, want none", got)
	}
	if got := rec.Headers["User-Agent"]; got != client.DefaultUserAgent {
		t.Errorf("User-Agent = %q, want %q", got, client.DefaultUserAgent)
	}
	if _, err := c.WithBasicAuth("admin", "pw").Tiers(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.Headers["Authorization"], "Basic YWRtaW46cHc="; got != want {
		t.Errorf("Authorization = %q, want %q", got, want)
	}
}

func TestPathPrefix(t *testing.T) {
	srv, rec := apiServer(t, 200, `{"tiers":[]}`)
	c, err := client.New(srv.URL + "/livepatch/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tiers(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rec.URI != "/livepatch/v1/admin/tiers" {
		t.Errorf("request URI = %q, want /livepatch/v1/admin/tiers", rec.URI)
	}
	if got, want := c.URL(), srv.URL+"/livepatch"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   client.APIError
	}{{
		name:   "server error body",
		status: 404, body: `{"code":"not-found","message":"tier \"qa\" not found"}`,
		want: client.APIError{Status: 404, Code: server.CodeNotFound, Message: `tier "qa" not found`},
	}, {
		name:   "unauthorized",
		status: 401, body: `{"code":"unauthorized","message":"session expired"}`,
		want: client.APIError{Status: 401, Code: server.CodeUnauthorized, Message: "session expired"},
	}, {
		name:   "proxy page",
		status: 503, body: `<html><body>No server is available</body></html>`,
		want: client.APIError{Status: 503, Code: server.CodeUnavailable, Message: "server returned 503 Service Unavailable"},
	}, {
		name:   "unknown status",
		status: 418, body: ``,
		want: client.APIError{Status: 418, Code: server.CodeInternal, Message: "server returned 418 I'm a teapot"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := apiServer(t, tt.status, tt.body)
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Tiers(t.Context())
			apiErr, ok := errors.AsType[*client.APIError](err)
			if !ok {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if diff := cmp.Diff(tt.want, *apiErr); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if err.Error() != tt.want.Message {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.want.Message)
			}
			if got := server.ErrorCode(err); got != tt.want.Code {
				t.Errorf("server.ErrorCode = %q, want %q", got, tt.want.Code)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Tiers(t.Context())
	if err == nil {
		t.Fatal("no error from a closed server")
	}
	if _, ok := errors.AsType[*client.APIError](err); ok {
		t.Errorf("connection failure is an *APIError: %v", err)
	}
	prefix := "cannot reach livepatch server at " + url + ": "
	if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error = %q, want %q followed by the cause", err, prefix)
	}
	if strings.Contains(err.Error(), "/v1/admin") {
		t.Errorf("error = %q repeats the request URL", err)
	}
}

func TestCancelled(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = c.Tiers(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
}

func TestInvalidURL(t *testing.T) {
	for _, u := range []string{"", "example.com", "ftp://example.com", "http://", "http://h?x=1", "://"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestCACert(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version":"v1"}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshake below is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	plain, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Info(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: error = %v, want a certificate error", err)
	}

	hc := &http.Client{Timeout: time.Minute}
	trusted, err := client.New(srv.URL, client.WithHTTPClient(hc), client.WithCACert(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	info, err := trusted.Info(t.Context())
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if info.Version != "v1" {
		t.Errorf("version = %q, want v1", info.Version)
	}
	if hc.Transport != nil {
		t.Errorf("WithCACert modified the caller's http.Client")
	}

	if _, err := client.New(srv.URL, client.WithCACert([]byte("not a certificate"))); err == nil {
		t.Errorf("New accepted a CA without certificates")
	}
}

func TestUploadProgress(t *testing.T) {
	srv, rec := apiServer(t, 201, patch1)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	data := strings.Repeat("x", 100_000)
	var last, calls int64
	_, _, err = c.UploadPatch(t.Context(), "f.tar.bz2", strings.NewReader(data), int64(len(data)),
		client.OnProgress(func(sent, total int64) {
			if total != int64(len(data)) || sent < last {
				t.Errorf("progress(%d, %d) after %d", sent, total, last)
			}
			last = sent
			calls++
		}))
	if err != nil {
		t.Fatal(err)
	}
	if last != int64(len(data)) || calls == 0 {
		t.Errorf("progress ended at %d after %d calls, want %d", last, calls, len(data))
	}
	if len(rec.Body) != len(data) {
		t.Errorf("server received %d bytes, want %d", len(rec.Body), len(data))
	}
}

func TestDownload(t *testing.T) {
	var gotURI, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURI, gotAuth = r.RequestURI, r.Header.Get("Authorization")
		if r.URL.Path == "/lp/patches/missing.tar.bz2" {
			w.WriteHeader(404)
			io.WriteString(w, `{"code":"not-found","message":"patch file \"missing.tar.bz2\" not found"}`)
			return
		}
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL + "/lp")
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithToken("sess")
	for _, target := range []string{srv.URL + "/lp/patches/f.tar.bz2", "/patches/f.tar.bz2", "patches/f.tar.bz2"} {
		body, size, err := c.Download(t.Context(), target)
		if err != nil {
			t.Fatalf("Download(%q): %v", target, err)
		}
		data, err := io.ReadAll(body)
		body.Close()
		if err != nil || string(data) != "hello" || size != 5 {
			t.Errorf("Download(%q) = %q, %d, %v; want hello, 5", target, data, size, err)
		}
		if gotURI != "/lp/patches/f.tar.bz2" || gotAuth != "" {
			t.Errorf("Download(%q) requested %q with auth %q", target, gotURI, gotAuth)
		}
	}
	_, _, err = c.Download(t.Context(), "/patches/missing.tar.bz2")
	if apiErr, ok := errors.AsType[*client.APIError](err); !ok || apiErr.Status != 404 || apiErr.Message != `patch file "missing.tar.bz2" not found` {
		t.Errorf("missing file: error = %#v", err)
	}
}

// TestCheckInSurvivesClosedIdleConnection: a proxy that closes a kept-alive connection as
// the next check-in goes out on it (haproxy reloading) costs no failed check-in: the
// request goes again on a new connection. Other writes are not replayed.
func TestCheckInSurvivesClosedIdleConnection(t *testing.T) {
	var mu sync.Mutex
	served := map[net.Conn]int{} // requests seen per connection
	var closed int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn := r.Context().Value(connKey{}).(net.Conn)
		mu.Lock()
		served[conn]++
		n := served[conn]
		mu.Unlock()
		if n == 2 {
			// The second request on a connection: close it without an answer.
			c, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, r.Body)
			c.Close()
			mu.Lock()
			closed++
			mu.Unlock()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"tier":"stable","check":{}}`)
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.Start()
	defer srv.Close()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateNeedsCheck}
	for i := range 3 {
		if _, err := c.CheckIn(t.Context(), "m1", "token", st); err != nil {
			t.Fatalf("check-in %d: %v", i+1, err)
		}
	}
	mu.Lock()
	if closed == 0 {
		t.Errorf("no connection was closed under a check-in: the test proves nothing (served %v)", served)
	}
	mu.Unlock()
	// A request that is not safe to repeat fails instead.
	if err := c.Disable(t.Context(), "m1", "token"); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("disable on a connection closed under it: %v, want the EOF", err)
	}
}

type connKey struct{}
