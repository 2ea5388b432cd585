package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is how a run paces its requests.
type Mode int

const (
	// OpenLoop sends at a constant rate whatever the answers take (as a fleet of machines
	// with timers does). Latency counts from the moment a request was due, so a server
	// that falls behind shows its queueing (no coordinated omission).
	OpenLoop Mode = iota
	// ClosedLoop keeps Concurrency requests in flight back to back: the highest rate the
	// system reaches, at whatever latency that costs.
	ClosedLoop
)

func (m Mode) String() string {
	if m == ClosedLoop {
		return "closed"
	}
	return "open"
}

// Plan bounds and paces one run.
type Plan struct {
	Mode Mode
	// Rate is the open-loop rate in requests per second.
	Rate float64
	// Concurrency caps requests in flight (open loop: a request due while every slot is
	// busy is dropped and counted as an error) or is the number of workers (closed loop).
	Concurrency int
	// Warmup runs before Duration; its requests are sent but not measured.
	Warmup time.Duration
	// Duration is the measured period.
	Duration time.Duration
	// MaxRequests bounds the requests sent, warmup included (0: no bound beyond time).
	MaxRequests int
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
}

// DoFunc sends request number i and returns how many response body bytes it read. It must
// read and close the body so that the connection is reused.
type DoFunc func(ctx context.Context, i int) (int64, error)

// Result is what a run measured. Counts are of the measured period except TotalOK.
type Result struct {
	Plan    Plan
	Sent    int
	OK      int
	Errors  map[string]int // by kind: "HTTP 503", "timeout", "dropped", ...
	Bytes   int64
	Elapsed time.Duration // from the start of the measured period to its last answer
	Latency Histogram     // of the successful requests
	TotalOK int           // successful requests, warmup included
}

// ErrorCount returns the number of failed requests of the measured period.
func (r *Result) ErrorCount() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Throughput returns successful requests per second over the measured period.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// BytesPerSecond returns the response body bytes per second over the measured period.
func (r *Result) BytesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Elapsed.Seconds()
}

// ErrorSummary lists the error kinds, most frequent first ("" when none).
func (r *Result) ErrorSummary() string {
	kinds := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if r.Errors[kinds[i]] != r.Errors[kinds[j]] {
			return r.Errors[kinds[i]] > r.Errors[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", r.Errors[k], k)
	}
	return strings.Join(parts, ", ")
}

// recorder collects the outcomes of a run's requests.
type recorder struct {
	mu          sync.Mutex
	res         *Result
	measureFrom time.Time
	lastDone    time.Time
}

func (rc *recorder) record(measured bool, latency time.Duration, n int64, err error) {
	done := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err == nil {
		rc.res.TotalOK++
	}
	if !measured {
		return
	}
	rc.res.Sent++
	if done.After(rc.lastDone) {
		rc.lastDone = done
	}
	if err != nil {
		rc.res.Errors[ErrorKind(err)]++
		return
	}
	rc.res.OK++
	rc.res.Bytes += n
	rc.res.Latency.Record(latency)
}

func (rc *recorder) drop() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.res.Sent++
	rc.res.Errors["dropped (all slots busy)"]++
}

// Run sends requests with do as plan says and returns what it measured. It stops by
// itself: after Warmup+Duration (plus the Timeout of the requests still in flight), after
// MaxRequests, or when ctx ends.
func Run(ctx context.Context, plan Plan, do DoFunc) (*Result, error) {
	if plan.Concurrency <= 0 {
		return nil, errors.New("cannot run load: concurrency must be positive")
	}
	if plan.Duration <= 0 {
		return nil, errors.New("cannot run load: duration must be positive")
	}
	if plan.Mode == OpenLoop && plan.Rate <= 0 {
		return nil, errors.New("cannot run load: an open-loop run needs a positive rate")
	}
	if plan.Timeout <= 0 {
		plan.Timeout = 10 * time.Second
	}
	// Hard bound: nothing outlives the plan by more than one request timeout.
	ctx, cancel := context.WithTimeout(ctx, plan.Warmup+plan.Duration+plan.Timeout+time.Second)
	defer cancel()
	res := &Result{Plan: plan, Errors: map[string]int{}}
	start := time.Now()
	rc := &recorder{res: res, measureFrom: start.Add(plan.Warmup)}
	rc.lastDone = rc.measureFrom
	send := func(i int, due time.Time, measured bool) {
		rctx, cancel := context.WithTimeout(ctx, plan.Timeout)
		n, err := do(rctx, i)
		cancel()
		rc.record(measured, time.Since(due), n, err)
	}
	if plan.Mode == ClosedLoop {
		runClosed(ctx, plan, start, rc.measureFrom, send)
	} else {
		runOpen(ctx, plan, start, rc.measureFrom, send, rc.drop)
	}
	res.Elapsed = max(rc.lastDone.Sub(rc.measureFrom), 0)
	return res, nil
}

type job struct {
	i        int
	due      time.Time
	measured bool
}

func runOpen(ctx context.Context, plan Plan, start, measureFrom time.Time, send func(int, time.Time, bool), drop func()) {
	total := int(plan.Rate * (plan.Warmup + plan.Duration).Seconds())
	if plan.MaxRequests > 0 {
		total = min(total, plan.MaxRequests)
	}
	jobs := make(chan job, plan.Concurrency)
	var wg sync.WaitGroup
	for range plan.Concurrency {
		wg.Go(func() {
			for j := range jobs {
				send(j.i, j.due, j.measured)
			}
		})
	}
	due := func(i int) time.Time {
		return start.Add(time.Duration(float64(i) * float64(time.Second) / plan.Rate))
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < total; {
		// Hand out every request due by now, then sleep until the next one is due.
		now := time.Now()
		for ; i < total && !due(i).After(now); i++ {
			d := due(i)
			j := job{i: i, due: d, measured: !d.Before(measureFrom)}
			select {
			case jobs <- j:
			default:
				if j.measured {
					drop()
				}
			}
		}
		if i >= total {
			break
		}
		timer.Reset(time.Until(due(i)))
		select {
		case <-ctx.Done():
			i = total
		case <-timer.C:
		}
	}
	close(jobs)
	wg.Wait()
}

func runClosed(ctx context.Context, plan Plan, start, measureFrom time.Time, send func(int, time.Time, bool)) {
	end := start.Add(plan.Warmup + plan.Duration)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range plan.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				now := time.Now()
				if !now.Before(end) || (plan.MaxRequests > 0 && i >= plan.MaxRequests) {
					return
				}
				send(i, now, !now.Before(measureFrom))
			}
		})
	}
	wg.Wait()
}

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d", e.Code) }

// ErrorKind names the kind of a request error, for counting.
func ErrorKind(err error) string {
	if se, ok := errors.AsType[*StatusError](err); ok {
		return se.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timeout"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "transport: " + msg
}

// NewHTTPClient returns a client that keeps up to conns connections alive to each host,
// never more, with compression and HTTP/2 off (as the livepatch client talks).
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only: never through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
}

// Send sends req with c, reads the whole answer and returns its size; a status other
// than want is a *StatusError.
func Send(c *http.Client, req *http.Request, want int) (int64, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != want {
		return n, &StatusError{Code: resp.StatusCode}
	}
	if err != nil {
		return n, err
	}
	return n, nil
}
