package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/badserver"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// giveUp bounds the waits of these tests: a call still running then has no deadline.
const giveUp = 30 * time.Second

// TestEnableHungServer: enabling against a server that accepts connections and never
// answers fails once request-timeout runs out, saying what to do.
func TestEnableHungServer(t *testing.T) {
	url := badserver.Silent(t)
	a := newHTTPAgent(t)
	configure(t, a, "remote-server", url, "request-timeout", "1")
	done := make(chan error, 1)
	go func() {
		_, err := a.Enable(t.Context(), "auth-token")
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(giveUp):
		t.Fatalf("enable has not returned after %s: it waits without a deadline", giveUp)
	}
	if _, ok := errors.AsType[*client.TimeoutError](err); !ok {
		t.Fatalf("error = %v, want a *client.TimeoutError", err)
	}
	want := "livepatch server at " + url + " did not answer within 1s (a slow server needs a longer request-timeout: livepatch-client config request-timeout=5m)"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// TestDaemonHungServer: a server that stops answering check-ins fails each check once
// request-timeout runs out; the daemon records the failure and checks again on its
// schedule (here SIGHUP), and stops when told to.
func TestDaemonHungServer(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for two request timeouts of a second")
	}
	var hung atomic.Bool
	checkIns := make(chan struct{}, 10)
	srv := httptest.NewServer(apiHandler(func(r *http.Request) {
		if !hung.Load() || !strings.HasSuffix(r.URL.Path, "/updates") {
			return
		}
		checkIns <- struct{}{}
		io.Copy(io.Discard, r.Body) // then the server notices when the client goes
		<-r.Context().Done()        // never answers: the client gives up and closes the connection
	}))
	t.Cleanup(srv.Close)
	a := newHTTPAgent(t)
	configure(t, a, "remote-server", srv.URL, "request-timeout", "1s", "check-interval", "60")
	if _, err := a.Enable(t.Context(), "auth-token"); err != nil {
		t.Fatal(err)
	}
	hung.Store(true)

	ctx, cancel := context.WithCancel(t.Context())
	hup := make(chan os.Signal, 1)
	hup <- syscall.SIGHUP // read once the first check has ended
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, hup) }()
	for i := range 2 {
		select {
		case <-checkIns:
		case err := <-done:
			t.Fatalf("Run returned %v before check-in %d", err, i+1)
		case <-time.After(giveUp):
			t.Fatalf("check-in %d has not come after %s: the daemon is stuck", i+1, giveUp)
		}
	}
	// The second check-in came: the first check ended and saved its failure.
	st, err := a.loadState()
	if err != nil {
		t.Fatal(err)
	}
	want := "livepatch server at " + srv.URL + " did not answer within 1s"
	if st.CheckState != CheckFailed || !strings.HasPrefix(st.CheckError, want) {
		t.Errorf("check state %q, error %q; want %q, %q...", st.CheckState, st.CheckError, CheckFailed, want)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v on stop, want nil", err)
		}
	case <-time.After(giveUp):
		t.Fatal("Run has not returned after its context ended")
	}
}

// TestEndlessDownload: a patch file that does not end where the offer says is read no
// further than the offered size: the check fails verification and keeps nothing.
func TestEndlessDownload(t *testing.T) {
	const filename = "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/patches/"):
			chunk := make([]byte, 32<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case strings.HasSuffix(r.URL.Path, "/updates"):
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"tier":"stable","patch":{"version":"107.1","filename":%q,"module":"lkp_107_1","sha256":"%064x","size":1000,"url":%q}}`,
				filename, 0, srv.URL+"/patches/"+filename)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"machine-token":"machine-token","tier":"stable"}`)
		}
	}))
	t.Cleanup(srv.Close)
	a := newHTTPAgent(t)
	configure(t, a, "remote-server", srv.URL, "mode", ModeNoApply, "request-timeout", "30s")
	done := make(chan *EnableResult, 1)
	go func() {
		res, err := a.Enable(t.Context(), "auth-token")
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	var res *EnableResult
	select {
	case res = <-done:
	case <-time.After(giveUp):
		t.Fatalf("enable has not returned after %s: the download is unbounded", giveUp)
	}
	if res == nil {
		t.FailNow()
	}
	want := "patch 107.1 failed verification: size mismatch: got more than 1000 bytes"
	if res.CheckErr == nil || res.CheckErr.Error() != want {
		t.Errorf("first check: %v, want %q", res.CheckErr, want)
	}
	entries, err := os.ReadDir(a.path(patchesDir))
	if err != nil || len(entries) != 0 {
		t.Errorf("patches directory holds %v (%v), want nothing", entries, err)
	}
}
