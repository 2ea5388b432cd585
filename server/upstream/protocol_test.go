package upstream_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

// TestForeignUpstream: an upstream that does not answer the sync protocol (a web site, a
// service with another API) fails the run with a report and a status that say so; a 5xx
// page of a proxy in front of a real upstream stays an outage.
func TestForeignUpstream(t *testing.T) {
	t.Parallel()
	const suffix = "; patch-sync.upstream-url (sync_upstream) must be a livepatch on-prem server (Canonical's hosted service uses its own protocol, which is not public)"
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
		want   string
	}{
		{"404 page", 404, "text/html; charset=utf-8", "<html>Not Found</html>", "GET /v1/sync/patches answered 404 Not Found with text/html" + suffix},
		{"HTML page", 200, "text/html", "<html>Welcome</html>", "GET /v1/sync/patches answered 200 OK with text/html, not a signed patch list" + suffix},
		{"no content type", 200, "", "{}", "GET /v1/sync/patches answered 200 OK with no content type, not a signed patch list" + suffix},
		{"other JSON", 200, "application/json", `{"patches":[]}`, "GET /v1/sync/patches answered JSON that is not a signed patch list" + suffix},
		{"not JSON", 200, "application/json", `<html>`, "GET /v1/sync/patches answered JSON that is not a signed patch list" + suffix},
		{"other API's 401", 401, "application/json", `{"error":"unauthorized"}`, "GET /v1/sync/patches answered 401 Unauthorized with application/json" + suffix},
		{"proxy 503", 503, "text/html", "<html>No server is available</html>", "/v1/sync/patches?tier=stable answered 503 Service Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.ctype != "" {
					w.Header().Set("Content-Type", tt.ctype)
				} else {
					w.Header()["Content-Type"] = nil
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			t.Cleanup(up.Close)
			b := newNode(t, "b")
			cfg := follow(b, "token", "stable")
			cfg.UpstreamURL = up.URL
			s := b.syncer(cfg)
			want := tt.want
			if tt.status != 503 {
				want = "the upstream at " + up.URL + " does not speak the livepatch on-prem sync protocol: " + tt.want
			}
			r := s.SyncOnce(t.Context())
			wantReport(t, r, server.SyncFailed, 0, want)
			if st := s.Health(t.Context()); st.Status != "last sync failed: "+r.Error || st.LastError != r.Error {
				t.Errorf("debug status %q (last-error %q), want the report's error", st.Status, st.LastError)
			}
		})
	}
}
