package agent

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

func mustRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Request{URL: u}
}

// countCheckIns returns the number of check-ins the fake server has had.
func (f *fakeAPI) countCheckIns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.checkIns)
}

func TestRunChecksPeriodicallyAndOnHUP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEnv(t)
		e.agent.now = time.Now // the bubble's fake clock
		e.configure(t, "check-interval", "30")
		e.enable(t)
		checkIns := e.api.countCheckIns()

		ctx, cancel := context.WithCancel(t.Context())
		hup := make(chan os.Signal, 1)
		done := make(chan error, 1)
		go func() { done <- e.agent.Run(ctx, hup) }()

		synctest.Wait() // the first check, at once
		if got := e.api.countCheckIns(); got != checkIns+1 {
			t.Fatalf("check-ins after start = %d, want %d", got, checkIns+1)
		}
		// In a synctest bubble, sleeping advances the fake clock at once.
		time.Sleep(29 * time.Minute)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != checkIns+1 {
			t.Fatalf("check-ins before the interval = %d, want %d", got, checkIns+1)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != checkIns+2 {
			t.Fatalf("check-ins after the interval = %d, want %d", got, checkIns+2)
		}
		hup <- syscall.SIGHUP
		synctest.Wait()
		if got := e.api.countCheckIns(); got != checkIns+3 {
			t.Fatalf("check-ins after SIGHUP = %d, want %d", got, checkIns+3)
		}
		// The interval restarts after a SIGHUP check.
		time.Sleep(29 * time.Minute)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != checkIns+3 {
			t.Fatalf("check-ins 29 minutes after SIGHUP = %d, want %d", got, checkIns+3)
		}

		// Config changes apply without restart: check-interval=0 turns periodic checks off.
		e.configure(t, "check-interval", "0")
		time.Sleep(time.Minute) // the pending 30-minute tick fires once more
		synctest.Wait()
		after := e.api.countCheckIns()
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != after {
			t.Fatalf("check-ins with check-interval=0: %d, want %d", got, after)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v on stop, want nil", err)
		}
	})
}

func TestRunFollowsServerAdvice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEnv(t)
		e.agent.now = time.Now
		e.api.advice = 5
		e.enable(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.agent.Run(ctx, nil) }()
		synctest.Wait()
		start := e.api.countCheckIns()
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != start+1 {
			t.Errorf("check-ins 5 minutes later = %d, want %d", got, start+1)
		}
		cancel()
		<-done
	})
}

func TestRunModes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEnv(t)
		e.agent.now = time.Now
		// Not enabled: the daemon waits and checks again later.
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.agent.Run(ctx, nil) }()
		synctest.Wait()
		if got := e.api.countCheckIns(); got != 0 {
			t.Fatalf("check-ins of a machine not enabled = %d", got)
		}
		e.configure(t, "mode", ModeStop)
		e.enable(t) // no check in mode stop
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if got := e.api.countCheckIns(); got != 0 {
			t.Fatalf("check-ins in mode stop = %d", got)
		}
		e.configure(t, "mode", ModeNormal)
		time.Sleep(time.Hour)
		synctest.Wait()
		st, err := e.agent.State()
		if err != nil || st.PatchState != server.StateNothingToApply {
			t.Fatalf("state after mode normal: %v %+v", err, st)
		}
		cancel()
		<-done
	})
}
