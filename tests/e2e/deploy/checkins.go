package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// CheckInOptions tunes a stream of check-ins; zero fields take defaults.
type CheckInOptions struct {
	// Tier the machines enrol in; default UpstreamTier.
	Tier string
	// MaxRetries is how many times a check-in is sent again at once after a transport
	// error or a 502/503/504, before it counts as failed; default 0 (a failure is a
	// failure). Retried attempts are counted.
	MaxRetries int
	// MaxInFlight bounds concurrent check-ins; default 32.
	MaxInFlight int
	// Timeout of one attempt; default 10s.
	Timeout time.Duration
}

// CheckInStats counts a stream's check-ins.
type CheckInStats struct {
	// Sent counts check-ins started; Succeeded and Failed those that ended.
	Sent, Succeeded, Failed int64
	// Retried counts extra attempts (CheckInOptions.MaxRetries).
	Retried int64
	// Errors holds the first failures' messages (at most 20), Backends the successful
	// check-ins per haproxy backend (the SRVNAME cookie haproxy inserts: S0, S1, ...).
	Errors   []string
	Backends map[string]int64
}

func (s CheckInStats) String() string {
	return fmt.Sprintf("sent %d, succeeded %d, failed %d, retried %d, per backend %v", s.Sent, s.Succeeded, s.Failed, s.Retried, s.Backends)
}

// CheckIns is a running stream of machine check-ins through haproxy.
type CheckIns struct {
	opts     CheckInOptions
	c        *client.Client
	machines []streamMachine
	cancel   context.CancelFunc
	done     chan struct{}

	mu      sync.Mutex
	stats   CheckInStats
	changed chan struct{} // closed and replaced on every ended check-in
}

type streamMachine struct{ id, token string }

// StartCheckIns enrols n machines through haproxy (with the API, as livepatch-client
// enable does) and starts checking them in, round robin, at rate check-ins per second
// until ctx ends or Stop. It is stopped when the test ends.
func (d *Deployment) StartCheckIns(t testing.TB, ctx context.Context, n int, rate float64) *CheckIns {
	t.Helper()
	return d.StartCheckInsWith(t, ctx, n, rate, CheckInOptions{})
}

// StartCheckInsWith is StartCheckIns with options.
func (d *Deployment) StartCheckInsWith(t testing.TB, ctx context.Context, n int, rate float64, opts CheckInOptions) *CheckIns {
	t.Helper()
	if opts.Tier == "" {
		opts.Tier = UpstreamTier
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 32
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if n <= 0 || rate <= 0 {
		t.Fatalf("StartCheckIns: need machines > 0 and rate > 0, got %d, %v", n, rate)
	}
	s := &CheckIns{opts: opts, done: make(chan struct{}), changed: make(chan struct{})}
	s.stats.Backends = map[string]int64{}
	hc := &http.Client{Transport: &backendCounter{
		next: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: opts.MaxInFlight,
			IdleConnTimeout:     30 * time.Second,
		},
		count: s.countBackend,
	}}
	var err error
	if s.c, err = client.New(d.URL, client.WithHTTPClient(hc)); err != nil {
		t.Fatal(err)
	}
	token := d.AuthToken(t, opts.Tier)
	status := machineStatus()
	for i := range n {
		id := fmt.Sprintf("load%04d%s", i, randomHex(8))
		mt, _, err := s.c.Enable(t.Context(), id, token, &status)
		if err != nil {
			t.Fatalf("cannot enrol machine %s: %v", id, err)
		}
		s.machines = append(s.machines, streamMachine{id: id, token: mt})
	}
	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx, rate)
	t.Cleanup(func() { s.Stop() })
	return s
}

// machineStatus is what the stream's machines report.
func machineStatus() server.Status {
	return server.Status{Kernel: DemoKernel, Architecture: "amd64", PatchState: server.StateNothingToApply, ClientVersion: "e2e-load"}
}

func (s *CheckIns) run(ctx context.Context, rate float64) {
	defer close(s.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.opts.MaxInFlight)
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case <-ctx.Done():
			return
		case slots <- struct{}{}:
		}
		m := s.machines[i%len(s.machines)]
		s.mu.Lock()
		s.stats.Sent++
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.checkIn(m)
		}()
	}
}

// checkIn sends one check-in; a check-in started is always finished, even when the stream
// is stopping, so that Stop reports every check-in as succeeded or failed.
func (s *CheckIns) checkIn(m streamMachine) {
	var err error
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		_, err = s.c.CheckIn(ctx, m.id, m.token, machineStatus())
		cancel()
		if err == nil || !transient(err) || attempt >= s.opts.MaxRetries {
			break
		}
		s.mu.Lock()
		s.stats.Retried++
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.stats.Succeeded++
	} else {
		s.stats.Failed++
		if len(s.stats.Errors) < 20 {
			s.stats.Errors = append(s.stats.Errors, time.Now().Format("15:04:05.000")+" "+m.id+": "+err.Error())
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// transient reports whether a check-in failed on the way (transport, proxy or overload)
// rather than being refused.
func transient(err error) bool {
	ae, ok := errors.AsType[*client.APIError](err)
	if !ok {
		return true
	}
	return ae.Status == http.StatusBadGateway || ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusGatewayTimeout
}

func (s *CheckIns) countBackend(name string) {
	s.mu.Lock()
	s.stats.Backends[name]++
	s.mu.Unlock()
}

// Stats returns the counts so far.
func (s *CheckIns) Stats() CheckInStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Errors = append([]string(nil), s.stats.Errors...)
	st.Backends = map[string]int64{}
	for k, v := range s.stats.Backends {
		st.Backends[k] = v
	}
	return st
}

// Stop stops sending, waits for the check-ins in flight and returns the final counts.
func (s *CheckIns) Stop() CheckInStats {
	s.cancel()
	<-s.done
	return s.Stats()
}

// WaitEnded waits until at least n check-ins ended (succeeded or failed) since the stream
// started, or ctx ends.
func (s *CheckIns) WaitEnded(ctx context.Context, n int64) error {
	for {
		s.mu.Lock()
		ended := s.stats.Succeeded + s.stats.Failed
		ch := s.changed
		s.mu.Unlock()
		if ended >= n {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			return fmt.Errorf("check-in stream stopped after %d check-ins, want %d", ended, n)
		case <-ctx.Done():
			return fmt.Errorf("%d check-ins ended, want %d: %w", ended, n, ctx.Err())
		}
	}
}

// backendCounter counts successful responses per haproxy backend cookie.
type backendCounter struct {
	next  http.RoundTripper
	count func(string)
}

func (b *backendCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err == nil && resp.StatusCode < 300 {
		name := "none"
		for _, c := range resp.Cookies() {
			if c.Name == "SRVNAME" {
				name = strings.TrimSpace(c.Value)
			}
		}
		b.count(name)
	}
	return resp, err
}
