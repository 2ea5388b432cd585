package livepatch_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

func TestUpdateStatus(t *testing.T) {
	degraded := `{"version":"v1.0.0","status":"degraded","database":{"status":"dial tcp 10.0.0.9:5432: connection refused"},
		"schema":{"current":3,"latest":3},"patch-storage":{"status":"OK"},"sync":{"enabled":true,"status":"OK"},
		"contracts":{"status":"OK"}}`
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
		peer    map[string]string
		want    hooks.Status
	}{{
		name: "healthy",
		handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/debug/status" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(`{"status":"OK"}`))
		},
		want: hooks.Active(lpt.MessageActive),
	}, {
		name: "degraded",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(degraded))
		},
		want: hooks.Blocked("livepatch-server degraded: database: dial tcp 10.0.0.9:5432: connection refused"),
	}, {
		name: "error without JSON",
		handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "oops", http.StatusInternalServerError)
		},
		want: hooks.Blocked("livepatch-server on 127.0.0.1:PORT answered /debug/status with HTTP 500"),
	}, {
		name: "not answering",
		want: hooks.Blocked("livepatch-server is not answering on 127.0.0.1:PORT: see journalctl -u livepatch-server"),
	}, {
		name: "healthy but the last sync failed",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"OK","sync":{"enabled":true,"status":"last sync failed: the upstream at http://10.0.0.5 refused patch-sync.token: 401 sync token \"region-eu\" has been revoked",` +
				`"last-error":"the upstream at http://10.0.0.5 refused patch-sync.token: 401 sync token \"region-eu\" has been revoked"}}`))
		},
		want: hooks.Blocked(livepatch.MessageSyncFailedPrefix + `the upstream at http://10.0.0.5 refused patch-sync.token: 401 sync token "region-eu" has been revoked`),
	}, {
		name: "healthy, the last sync failed long ago, sync now off",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"OK","sync":{"enabled":false,"status":"disabled","last-error":"stale"}}`))
		},
		want: hooks.Active(lpt.MessageActive),
	}, {
		name: "healthy, a long sync error is cut",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"OK","sync":{"enabled":true,"last-error":"` + strings.Repeat("é", 200) + `"}}`))
		},
		want: hooks.Blocked(livepatch.MessageSyncFailedPrefix + strings.Repeat("é", 150) + "..."),
	}, {
		name: "healthy but no sync token",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"OK"}`))
		},
		peer: map[string]string{},
		want: hooks.Blocked(livepatch.MessageSyncTokenNotSet),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server answers healthy when the unit starts it, then as the case says
			// (nil: it stops listening).
			var started atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !started.Load() {
					w.Write([]byte(`{"status":"OK"}`))
					return
				}
				tt.handler(w, r)
			}))
			t.Cleanup(srv.Close)
			port := srv.Listener.Addr().(*net.TCPAddr).Port
			e := lpt.New(t)
			st := lpt.Ready(true)
			st.Address = "127.0.0.1"
			st.Config["port"] = port
			if tt.peer != nil {
				st.Relations[0] = lpt.PeerRelation(tt.peer)
			}
			e.Install(t, st)
			first := e.H.Run(t, "config-changed", st)
			if first.Err != nil || lpt.Restarts(first) != 1 {
				t.Fatalf("config-changed: %v, %d restarts", first.Err, lpt.Restarts(first))
			}
			started.Store(true)
			if tt.handler == nil {
				srv.Close()
			}
			res := e.H.Run(t, "update-status", first.State)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if lpt.Restarts(res) != 0 {
				t.Errorf("update-status restarted the server")
			}
			want := tt.want
			want.Message = strings.ReplaceAll(want.Message, "PORT", strconv.Itoa(port))
			if diff := cmp.Diff(want, res.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUpdateStatusStopsAtGuards(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	delete(st.Config, "url_template")
	res := e.H.Run(t, "update-status", st)
	if diff := cmp.Diff(hooks.Blocked(livepatch.MessageURLTemplateNotSet), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

// TestSyncFailureKeepsServerHealthy checks that a failed last sync does not make the server
// unhealthy to the charm: its restart completes (haproxy and rolling restarts go by
// health), and update-status alone reports the sync.
func TestSyncFailureKeepsServerHealthy(t *testing.T) {
	const reason = `the upstream at http://10.0.0.5 refused patch-sync.token: 401 sync token "region-eu" has been revoked`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"OK","sync":{"enabled":true,"status":"last sync failed: x","last-error":` + strconv.Quote(reason) + `}}`))
	}))
	t.Cleanup(srv.Close)
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Address = "127.0.0.1"
	st.Config["port"] = srv.Listener.Addr().(*net.TCPAddr).Port
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil || lpt.Restarts(res) != 1 {
		t.Fatalf("config-changed: %v, %d restarts", res.Err, lpt.Restarts(res))
	}
	if diff := cmp.Diff(hooks.Active(lpt.MessageActive), res.Status); diff != "" {
		t.Errorf("status after the restart (-want +got):\n%s", diff)
	}
	res = e.H.Run(t, "update-status", res.State)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if diff := cmp.Diff(hooks.Blocked(livepatch.MessageSyncFailedPrefix+reason), res.Status); diff != "" {
		t.Errorf("status after update-status (-want +got):\n%s", diff)
	}
}
