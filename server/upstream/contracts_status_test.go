package upstream_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

// TestContractsDebugStatus checks the status reports the last check as it went: none
// yet, accepted, refused, then the server gone.
func TestContractsDebugStatus(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer good" {
			io.WriteString(w, `{"valid":true}`)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	c, err := upstream.NewContracts(srv.URL, nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	want := server.ContractsHealth{Status: "OK", Enabled: true, URL: srv.URL, LastResult: "no resource token checked yet"}
	if diff := cmp.Diff(want, c.Health()); diff != "" {
		t.Errorf("before any check (-want +got):\n%s", diff)
	}
	c.CheckResourceToken(t.Context(), "good")
	reachable, at := true, now
	want = server.ContractsHealth{Status: "OK", Enabled: true, URL: srv.URL, LastCheck: &at, Reachable: &reachable, LastResult: "accepted"}
	if diff := cmp.Diff(want, c.Health()); diff != "" {
		t.Errorf("after an acceptance (-want +got):\n%s", diff)
	}
	now = now.Add(time.Minute)
	c.CheckResourceToken(t.Context(), "bad")
	at, want.LastResult = now, "refused"
	if diff := cmp.Diff(want, c.Health()); diff != "" {
		t.Errorf("after a refusal (-want +got):\n%s", diff)
	}
	srv.Close()
	now = now.Add(time.Minute)
	c.CheckResourceToken(t.Context(), "other")
	got := c.Health()
	if got.Reachable == nil || *got.Reachable || got.LastResult != "unreachable" || got.LastCheck == nil || !got.LastCheck.Equal(now) ||
		!strings.HasPrefix(got.Status, "cannot check the resource token: cannot reach the contracts server at "+srv.URL) {
		t.Errorf("after the server went away: %+v", got)
	}
}
