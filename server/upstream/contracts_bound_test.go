package upstream_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

// TestContractsOneCallPerToken checks that callers presenting the same token at once share
// one check, and that a refusal is remembered.
func TestContractsOneCallPerToken(t *testing.T) {
	var calls atomic.Int32
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusForbidden)
	}))
	defer srv.Close()
	c, err := upstream.NewContracts(srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { errs[i] = c.CheckResourceToken(t.Context(), "refused") })
	}
	<-arrived
	close(release)
	wg.Wait()
	for i := range 3 {
		if err := c.CheckResourceToken(t.Context(), "refused"); server.ErrorCode(err) != server.CodeUnauthorized {
			t.Errorf("check %d after the refusal: %v", i, err)
		}
	}
	for _, err := range errs {
		if server.ErrorCode(err) != server.CodeUnauthorized {
			t.Errorf("concurrent check: %v, want unauthorized", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("contracts server called %d times, want 1", n)
	}
}

// TestHungContractsServerHoldsNoSlot has an upstream whose contracts server accepts
// connections and never answers: resource token checks fail within the contracts timeout,
// and while they wait, other sync requests still get the one API slot.
func TestHungContractsServerHoldsNoSlot(t *testing.T) {
	t.Parallel()
	arrived, stop := make(chan struct{}, 100), make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-stop
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(stop) })
	contracts, err := upstream.NewContracts(hung.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	contracts.Timeout = 2 * time.Second
	a := newNode(t, "a", func(o *httpapi.Options) {
		o.ResourceTokens = contracts.CheckResourceToken
		o.ConcurrencyLimit, o.BurstLimit = 1, 0
	}).start()
	syncTok := a.syncToken("b", "stable", nil)
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", a.srv.URL+"/v1/sync/patches?tier=stable", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// As many checks as may run at once, each of them waiting for the contracts server.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if code, body := get(fmt.Sprint("resource-token-", i)); code != 503 {
				t.Errorf("resource token with a hung contracts server: %d %s, want 503", code, body)
			}
		})
		select {
		case <-arrived:
		case <-time.After(time.Minute): // a bound for a broken server, not a timing assertion
			t.Fatalf("resource token check %d never reached the contracts server", i)
		}
	}
	if code, body := get(syncTok); code != 200 {
		t.Errorf("sync token while resource token checks wait: %d %s, want 200", code, body)
	}
	wg.Wait()
}
