package load

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestOpenLoopSendsTheScheduleAndCountsErrors(t *testing.T) {
	// 2,000/s for 10 ms of warm-up and 40 ms measured: 100 requests are due, the first
	// 20 unmeasured. Every fourth measured request fails.
	var calls atomic.Int64
	res, err := Run(t.Context(), Plan{Mode: OpenLoop, Rate: 2000, Concurrency: 200, Warmup: 10 * time.Millisecond, Duration: 40 * time.Millisecond},
		func(ctx context.Context, i int) (int64, error) {
			calls.Add(1)
			if i >= 20 && i%4 == 0 {
				return 0, &StatusError{Code: 503}
			}
			return 10, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 100 {
		t.Errorf("sent %d requests, want 100", got)
	}
	if res.Sent != 80 {
		t.Errorf("measured %d requests, want 80", res.Sent)
	}
	if res.Errors["HTTP 503"] != 20 || res.ErrorCount() != 20 {
		t.Errorf("errors %v, want 20 HTTP 503", res.Errors)
	}
	if res.OK != 60 || res.Bytes != 600 || res.Latency.Count() != 60 {
		t.Errorf("OK %d, bytes %d, latencies %d; want 60, 600, 60", res.OK, res.Bytes, res.Latency.Count())
	}
	if res.TotalOK != 80 {
		t.Errorf("TotalOK %d, want 80 (the warm-up's 20 included)", res.TotalOK)
	}
	if got := res.ErrorSummary(); got != "20 HTTP 503" {
		t.Errorf("ErrorSummary = %q", got)
	}
}

func TestOpenLoopDropsWhatFindsNoSlot(t *testing.T) {
	// One slot, and the first request holds it until every other is due: the rest are dropped.
	release := make(chan struct{})
	var calls atomic.Int64
	done := make(chan *Result)
	go func() {
		res, _ := Run(t.Context(), Plan{Mode: OpenLoop, Rate: 1000, Concurrency: 1, Duration: 20 * time.Millisecond},
			func(ctx context.Context, i int) (int64, error) {
				if calls.Add(1) == 1 {
					<-release
				}
				return 0, nil
			})
		done <- res
	}()
	// The schedule ends 20 ms in; the job queue holds one more request. Release the slot
	// well after that.
	time.AfterFunc(500*time.Millisecond, func() { close(release) })
	res := <-done
	if res.Sent != 20 {
		t.Errorf("measured %d, want 20", res.Sent)
	}
	if got := res.Errors["dropped (all slots busy)"]; got != 18 || calls.Load() != 2 {
		t.Errorf("dropped %d, sent %d; want 18 dropped, 2 sent", got, calls.Load())
	}
}

func TestClosedLoopStopsAtMaxRequests(t *testing.T) {
	var calls atomic.Int64
	res, err := Run(t.Context(), Plan{Mode: ClosedLoop, Concurrency: 8, Duration: time.Minute, MaxRequests: 500},
		func(ctx context.Context, i int) (int64, error) {
			calls.Add(1)
			return 1, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 500 || res.Sent != 500 || res.OK != 500 || res.Bytes != 500 {
		t.Errorf("calls %d, sent %d, ok %d, bytes %d: want 500 each", calls.Load(), res.Sent, res.OK, res.Bytes)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var calls atomic.Int64
	res, err := Run(ctx, Plan{Mode: ClosedLoop, Concurrency: 4, Duration: time.Hour},
		func(ctx context.Context, i int) (int64, error) {
			if calls.Add(1) == 100 {
				cancel()
			}
			return 0, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n < 100 || n > 104 {
		t.Errorf("%d calls after cancelling at the 100th, want at most one more per worker", n)
	}
	if res.OK != int(calls.Load()) {
		t.Errorf("OK %d, calls %d", res.OK, calls.Load())
	}
}

func TestPlanChecks(t *testing.T) {
	do := func(context.Context, int) (int64, error) { return 0, nil }
	for _, p := range []Plan{
		{Mode: OpenLoop, Concurrency: 1, Duration: time.Second},
		{Mode: ClosedLoop, Duration: time.Second},
		{Mode: ClosedLoop, Concurrency: 1},
	} {
		if _, err := Run(t.Context(), p, do); err == nil {
			t.Errorf("Run(%+v) succeeded, want an error", p)
		}
	}
}

func TestErrorKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&StatusError{Code: 429}, "HTTP 429"},
		{fmt.Errorf("wrapped: %w", &StatusError{Code: 503}), "HTTP 503"},
		{context.DeadlineExceeded, "timeout"},
		{os.ErrDeadlineExceeded, "timeout"},
		{context.Canceled, "cancelled"},
		{fmt.Errorf("dial tcp 127.0.0.1:1: connect: %w", syscall.ECONNREFUSED), "transport: connection refused"},
		{errors.New("short body"), "transport: short body"},
	} {
		if got := ErrorKind(tc.err); got != tc.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestSendReadsTheBodyAndChecksTheStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write(make([]byte, 1234))
	}))
	defer srv.Close()
	hc := NewHTTPClient(2)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/file", nil)
	if n, err := Send(hc, req, http.StatusOK); n != 1234 || err != nil {
		t.Errorf("Send = %d, %v; want 1234, nil", n, err)
	}
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/missing", nil)
	if _, err := Send(hc, req, http.StatusOK); ErrorKind(err) != "HTTP 404" {
		t.Errorf("Send of a missing file: %v, want HTTP 404", err)
	}
}
