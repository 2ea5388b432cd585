package agent

import (
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiHandler answers enable and check-in as the server does.
func apiHandler(seen func(r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen(r)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/updates") {
			w.Write([]byte(`{"tier":"stable","check":{"interval-minutes":60}}`))
			return
		}
		w.Write([]byte(`{"machine-token":"machine-token","tier":"stable"}`))
	})
}

// newHTTPAgent returns an agent that talks HTTP with the real API client.
func newHTTPAgent(t *testing.T) *Agent {
	t.Helper()
	e := newTestEnv(t)
	return New(Options{
		StateDir: e.dir,
		System:   e.agent.sys,
		Runner:   e.kernel.run,
		Now:      func() time.Time { return e.now },
	})
}

func configure(t *testing.T, a *Agent, kv ...string) {
	t.Helper()
	c, err := a.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(kv); i += 2 {
		if err := c.Set(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.SaveConfig(c); err != nil {
		t.Fatal(err)
	}
}

func TestCACerts(t *testing.T) {
	srv := httptest.NewUnstartedServer(apiHandler(func(*http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	a := newHTTPAgent(t)
	configure(t, a, "remote-server", srv.URL)
	_, err := a.Enable(t.Context(), "auth-token")
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("Enable without ca-certs: %v", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	configure(t, a, "ca-certs", string(caPEM))
	res, err := a.Enable(t.Context(), "auth-token")
	if err != nil || res.CheckErr != nil || res.Tier != "stable" {
		t.Fatalf("Enable with ca-certs: %v %+v", err, res)
	}
}

func TestHTTPProxy(t *testing.T) {
	var (
		mu    sync.Mutex
		hosts []string
	)
	proxy := httptest.NewServer(apiHandler(func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hosts = append(hosts, r.URL.Host) // a proxy gets absolute URLs
	}))
	defer proxy.Close()
	a := newHTTPAgent(t)
	// The server's name resolves nowhere: only the proxy can reach it.
	configure(t, a, "remote-server", "http://livepatch.example.test", "http-proxy", proxy.URL)
	res, err := a.Enable(t.Context(), "auth-token")
	if err != nil || res.CheckErr != nil {
		t.Fatalf("Enable through the proxy: %v %+v", err, res)
	}
	mu.Lock()
	defer mu.Unlock()
	// Enable, check-in, and the report of the new patch state.
	want := []string{"livepatch.example.test", "livepatch.example.test", "livepatch.example.test"}
	if strings.Join(hosts, " ") != strings.Join(want, " ") {
		t.Errorf("proxy saw %q, want %q", hosts, want)
	}
}
