package deploy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer answers enable and check-ins; the first failFirst check-ins get a 503, as
// haproxy answers with no server left.
func fakeServer(t *testing.T, failFirst int64) *httptest.Server {
	var checkIns atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/client/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"machine-token": "mt-" + r.PathValue("id"), "tier": "stable"})
	})
	mux.HandleFunc("POST /v1/client/{id}/updates", func(w http.ResponseWriter, r *http.Request) {
		if checkIns.Add(1) <= failFirst {
			http.Error(w, "<html>503 Service Unavailable</html>", http.StatusServiceUnavailable)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "SRVNAME", Value: "S1"})
		json.NewEncoder(w).Encode(map[string]string{"tier": "stable"})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestCheckInsCount(t *testing.T) {
	for _, tt := range []struct {
		name        string
		failFirst   int64
		maxRetries  int
		wantFailed  int64
		wantRetried bool
	}{
		{"all succeed", 0, 0, 0, false},
		{"failures are failures", 3, 0, 3, false},
		{"retried at once", 3, 5, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeServer(t, tt.failFirst)
			d := &Deployment{URL: srv.URL, tokens: map[string]string{UpstreamTier: "tok"}}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			s := d.StartCheckInsWith(t, ctx, 3, 200, CheckInOptions{MaxRetries: tt.maxRetries, MaxInFlight: 1})
			if err := s.WaitEnded(ctx, 10); err != nil {
				t.Fatal(err)
			}
			st := s.Stop()
			if st.Failed != tt.wantFailed || st.Succeeded+st.Failed != st.Sent || (st.Retried > 0) != tt.wantRetried {
				t.Errorf("stats %v, want %d failed, retried %v, every check-in ended", st, tt.wantFailed, tt.wantRetried)
			}
			if st.Backends["S1"] != st.Succeeded {
				t.Errorf("backends %v, want every success on S1 (%d)", st.Backends, st.Succeeded)
			}
			if tt.wantFailed > 0 && len(st.Errors) != int(tt.wantFailed) {
				t.Errorf("errors %q, want %d", st.Errors, tt.wantFailed)
			}
		})
	}
}
