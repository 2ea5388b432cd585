package deploy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// Witness is a stream of machine check-ins through haproxy for a test to run a failure or
// an upgrade under (the reliability drills, the PostgreSQL switchover). Each
// machine checks in one check-in after the other, so what it reported last is well
// defined, and every attempt carries a marker of its own in client-version
// ("w<seq>.<attempt>"): the markers of the attempts the servers acknowledged must all be
// rows of machine_reports at the end, and each machine's row must hold its last one.
type Witness struct {
	c        *client.Client
	machines []*witnessMachine
	retries  int
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	stats   WitnessStats
	changed chan struct{} // closed and replaced whenever a check-in ends
}

type witnessMachine struct {
	id, token string
	seq       int
	acked     []ack // reports acknowledged, in order (written under Witness.mu)
}

// ack is an acknowledged report: its marker, and when the attempt that was acknowledged
// started and ended.
type ack struct {
	marker     string
	start, end time.Time
}

// WitnessStats counts check-ins. A check-in is one report of a machine; it is retried
// (another attempt, at once) after a transport error or a 5xx, at most retries times.
type WitnessStats struct {
	Sent, Succeeded, Failed, Retried int64
	// LastFailure is when the last failed attempt ended (zero: none).
	LastFailure time.Time
	// Errors are the first failed attempts' errors.
	Errors []string
}

// Sub returns the counts of s since base. Sent is then the check-ins that ended in between
// (a check-in started before base may end after it).
func (s WitnessStats) Sub(base WitnessStats) WitnessStats {
	ok, failed := s.Succeeded-base.Succeeded, s.Failed-base.Failed
	return WitnessStats{
		Sent: ok + failed, Succeeded: ok,
		Failed: failed, Retried: s.Retried - base.Retried,
		LastFailure: s.LastFailure, Errors: s.Errors[min(len(base.Errors), len(s.Errors)):],
	}
}

func (s WitnessStats) String() string {
	return fmt.Sprintf("sent %d, succeeded %d, failed %d, retried %d", s.Sent, s.Succeeded, s.Failed, s.Retried)
}

// StartWitness enrols n machines through haproxy and checks each in every n/rate seconds
// (rate check-ins per second in all), a failed attempt retried at most retries times, until
// Stop or the end of the test.
func (d *Deployment) StartWitness(t testing.TB, n int, rate float64, retries int) *Witness {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: n,
		IdleConnTimeout:     30 * time.Second,
	}}
	c, err := client.New(d.URL, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	w := &Witness{c: c, retries: retries, changed: make(chan struct{})}
	token := d.AuthToken(t, UpstreamTier)
	for i := range n {
		m := &witnessMachine{id: fmt.Sprintf("witness%03d%s", i, randomHex(6))}
		st := w.status(m, 0)
		if m.token, _, err = c.Enable(t.Context(), m.id, token, &st); err != nil {
			t.Fatalf("cannot enrol %s: %v", m.id, err)
		}
		w.machines = append(w.machines, m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	every := time.Duration(float64(n) / rate * float64(time.Second))
	for i, m := range w.machines {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			// Spread the machines over the period.
			select {
			case <-ctx.Done():
				return
			case <-time.After(every * time.Duration(i) / time.Duration(n)):
			}
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				w.checkIn(m)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	t.Cleanup(w.Stop)
	return w
}

func (w *Witness) status(m *witnessMachine, attempt int) server.Status {
	return server.Status{
		Kernel: DemoKernel, Architecture: "amd64", PatchState: server.StateNothingToApply,
		ClientVersion: fmt.Sprintf("w%d.%d", m.seq, attempt),
	}
}

// checkIn sends one check-in of m, with its retries.
func (w *Witness) checkIn(m *witnessMachine) {
	m.seq++
	w.mu.Lock()
	w.stats.Sent++
	w.mu.Unlock()
	var err error
	for attempt := 0; attempt <= w.retries; attempt++ {
		if attempt > 0 {
			w.mu.Lock()
			w.stats.Retried++
			w.mu.Unlock()
		}
		st := w.status(m, attempt)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err = w.c.CheckIn(ctx, m.id, m.token, st)
		cancel()
		if err == nil {
			w.mu.Lock()
			m.acked = append(m.acked, ack{marker: st.ClientVersion, start: start, end: time.Now()})
			w.mu.Unlock()
			break
		}
		w.mu.Lock()
		w.stats.LastFailure = time.Now()
		if len(w.stats.Errors) < 50 {
			w.stats.Errors = append(w.stats.Errors, time.Now().Format("15:04:05.000")+" "+m.id+" "+st.ClientVersion+": "+err.Error())
		}
		w.mu.Unlock()
		if !retryable(err) {
			break
		}
	}
	w.mu.Lock()
	if err == nil {
		w.stats.Succeeded++
	} else {
		w.stats.Failed++
	}
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// retryable reports whether a check-in failed on the way or in the servers (a transport
// error, a 5xx) rather than being refused.
func retryable(err error) bool {
	ae, ok := errors.AsType[*client.APIError](err)
	return !ok || ae.Status >= 500
}

// Stats returns the counts so far.
func (w *Witness) Stats() WitnessStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats
	st.Errors = slices.Clone(w.stats.Errors)
	return st
}

// WaitEnded waits until n more check-ins ended than in base.
func (w *Witness) WaitEnded(ctx context.Context, base WitnessStats, n int64) error {
	for {
		w.mu.Lock()
		ended := w.stats.Succeeded + w.stats.Failed - base.Succeeded - base.Failed
		ch := w.changed
		w.mu.Unlock()
		if ended >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d check-ins ended, want %d: %w", ended, n, ctx.Err())
		}
	}
}

// WaitSucceeded waits until a check-in succeeded after base, and returns when it saw it.
func (w *Witness) WaitSucceeded(ctx context.Context, base WitnessStats) (time.Time, error) {
	for {
		w.mu.Lock()
		ok := w.stats.Succeeded > base.Succeeded
		ch := w.changed
		w.mu.Unlock()
		if ok {
			return time.Now(), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no check-in succeeded: %w", ctx.Err())
		}
	}
}

// Stop stops the stream and waits for the check-ins in flight.
func (w *Witness) Stop() {
	w.cancel()
	w.wg.Wait()
}

// Verify stops the stream and checks the database: every acknowledged attempt is a row of
// machine_reports, and each machine's row holds its last acknowledged report. It returns
// the number of acknowledged reports missing.
func (w *Witness) Verify(t testing.TB, db *sql.DB) int {
	t.Helper()
	w.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stored := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT machine_id, client_version FROM machine_reports WHERE machine_id LIKE 'witness%'`)
	if err != nil {
		t.Fatalf("cannot read machine_reports: %v", err)
	}
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		stored[id+" "+v] = true
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	var examples []string
	for _, m := range w.machines {
		for _, a := range m.acked {
			if !stored[m.id+" "+a.marker] {
				lost++
				if len(examples) < 10 {
					examples = append(examples, m.id+" "+a.marker)
				}
			}
		}
		if len(m.acked) == 0 {
			continue
		}
		var last string
		if err := db.QueryRowContext(ctx, `SELECT client_version FROM machines WHERE id = $1`, m.id).Scan(&last); err != nil {
			t.Fatalf("cannot read machine %s: %v", m.id, err)
		}
		if want := m.acked[len(m.acked)-1].marker; last != want {
			t.Errorf("machine %s holds report %s, want its last acknowledged %s", m.id, last, want)
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged reports are not in the database, such as %s", lost, strings.Join(examples, ", "))
	}
	return lost
}

// Acked returns the number of acknowledged reports.
func (w *Witness) Acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.machines {
		n += len(m.acked)
	}
	return n
}

// FirstAckedAfter returns when the first acknowledged check-in that started after since
// ended; ok is false when none has yet.
func (w *Witness) FirstAckedAfter(since time.Time) (end time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.machines {
		for _, a := range m.acked {
			if a.start.After(since) && (!ok || a.end.Before(end)) {
				end, ok = a.end, true
			}
		}
	}
	return end, ok
}

// Tokens returns the machine tokens of the witness's machines (secrets that must show
// nowhere).
func (w *Witness) Tokens() []string {
	var out []string
	for _, m := range w.machines {
		out = append(out, m.token)
	}
	return out
}
