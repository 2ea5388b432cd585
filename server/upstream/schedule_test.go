package upstream_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

// memStore is the upstream.Store of a Syncer with an empty patch list, in memory.
// Other methods are not implemented (the embedded nil interface panics).
type memStore struct {
	upstream.Store
	mu      sync.Mutex
	reports []server.SyncReport // oldest first
	locked  bool                // another unit holds the sync lock
}

func (m *memStore) RunExclusive(ctx context.Context, job string, fn func(context.Context) error) (bool, error) {
	m.mu.Lock()
	locked := m.locked
	m.mu.Unlock()
	if locked {
		return false, nil
	}
	return true, fn(ctx)
}

func (m *memStore) AddSyncReport(ctx context.Context, r server.SyncReport) (server.SyncReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.ID = int64(len(m.reports) + 1)
	m.reports = append(m.reports, r)
	return r, nil
}

func (m *memStore) SyncReports(ctx context.Context, f server.SyncReportFilter) ([]server.SyncReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []server.SyncReport
	for _, r := range slices.Backward(m.reports) {
		if (f.Outcome == "" || r.Outcome == f.Outcome) && (f.Limit == 0 || len(out) < f.Limit) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *memStore) Tiers(ctx context.Context) ([]server.Tier, error) {
	return []server.Tier{{Name: "edge", Position: 1}}, nil
}

func (m *memStore) Patches(ctx context.Context, f server.PatchFilter) ([]server.Patch, error) {
	return nil, nil
}

func (m *memStore) Kernels(ctx context.Context) ([]server.KernelCount, error) { return nil, nil }

func (m *memStore) RecordSyncList(ctx context.Context, tier string, at time.Time) error { return nil }

// outcomes returns each report as its start, relative to t0, and outcome.
func (m *memStore) outcomes(t0 time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.reports {
		out = append(out, r.StartedAt.Sub(t0).String()+" "+r.Outcome)
	}
	return out
}

// fakeUpstream answers the patch list request in memory: an empty signed list, or a
// connection failure while down.
type fakeUpstream struct {
	key  ed25519.PrivateKey
	mu   sync.Mutex
	down bool
}

func (f *fakeUpstream) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return nil, errors.New("connect: connection refused")
	}
	signed, err := server.SignSyncList(server.SyncList{Tier: "stable", GeneratedAt: time.Now(), Patches: []server.SyncPatch{}}, f.key)
	if err != nil {
		return nil, err
	}
	data, _ := json.Marshal(signed)
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(data)), Request: r}, nil
}

// scheduled starts a Syncer with a 1h interval on store, against up, in the bubble.
func scheduled(t *testing.T, store *memStore, up *fakeUpstream, reg *prometheus.Registry) (*upstream.Syncer, func()) {
	_, key, _ := ed25519.GenerateKey(nil)
	up.key = key
	cfg := config.Default().PatchSync
	cfg.Enabled = true
	cfg.UpstreamURL = "https://upstream.example"
	cfg.Token = "tok"
	cfg.TrustedKey = server.MarshalPublicKey(key.Public().(ed25519.PublicKey))
	s := upstream.New(store, nil, cfg, upstream.Options{
		Unit: "u", HTTPClient: &http.Client{Transport: up}, Logger: slog.New(slog.DiscardHandler), TempDir: t.TempDir(), Registry: reg,
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	return s, func() { cancel(); <-done }
}

func TestScheduleBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		store := &memStore{}
		up := &fakeUpstream{down: true}
		s, stop := scheduled(t, store, up, nil)
		defer stop()
		// Failures are retried after 1m, doubling up to the interval (1h).
		time.Sleep(2*time.Hour + 30*time.Minute)
		synctest.Wait()
		want := []string{"0s failed", "1m0s failed", "3m0s failed", "7m0s failed", "15m0s failed",
			"31m0s failed", "1h3m0s failed", "2h3m0s failed"}
		if diff := cmp.Diff(want, store.outcomes(t0)); diff != "" {
			t.Fatalf("runs while the upstream is down (-want +got):\n%s", diff)
		}
		st, err := s.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.NextRun == nil || !st.NextRun.Equal(t0.Add(3*time.Hour+3*time.Minute).UTC()) || st.LastSuccess != nil {
			t.Errorf("status while down: next run %v, last success %v", st.NextRun, st.LastSuccess)
		}

		// The upstream is back: the next retry succeeds, then runs come every interval.
		up.setDown(false)
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		want = append(want, "3h3m0s success", "4h3m0s success", "5h3m0s success")
		if diff := cmp.Diff(want, store.outcomes(t0)); diff != "" {
			t.Fatalf("runs after recovery (-want +got):\n%s", diff)
		}

		// A trigger runs at once, and the schedule counts from it.
		now := time.Now()
		ch, err := s.Trigger(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.Outcome != server.SyncSuccess || !r.StartedAt.Equal(now) || r.ID != int64(len(want)+1) {
			t.Errorf("triggered run = %+v", r)
		}
		synctest.Wait()
		st, _ = s.Status(t.Context())
		if st.NextRun == nil || !st.NextRun.Equal(now.Add(time.Hour).UTC()) {
			t.Errorf("next run after a trigger = %v, want %v", st.NextRun, now.Add(time.Hour))
		}
	})
}

func TestScheduleSharedWithOtherUnits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		// Another unit synced 40 minutes ago: this one waits until an interval after that.
		store := &memStore{reports: []server.SyncReport{{
			ID: 1, StartedAt: t0.Add(-41 * time.Minute), EndedAt: t0.Add(-40 * time.Minute), Outcome: server.SyncSuccess, Unit: "other",
		}}}
		up := &fakeUpstream{}
		reg := prometheus.NewRegistry()
		_, stop := scheduled(t, store, up, reg)
		defer stop()
		time.Sleep(19 * time.Minute)
		synctest.Wait()
		if n := len(store.outcomes(t0)); n != 1 {
			t.Fatalf("%d reports before the run is due, want only the other unit's", n)
		}
		// The other unit's success is the deployment's: this unit's gauge tells it.
		wantMetric(t, reg, "livepatch_server_sync_last_success_timestamp_seconds", "", float64(t0.Add(-40*time.Minute).UnixNano())/1e9)
		time.Sleep(time.Minute)
		synctest.Wait()
		if diff := cmp.Diff([]string{"-41m0s success", "20m0s success"}, store.outcomes(t0)); diff != "" {
			t.Fatalf("runs (-want +got):\n%s", diff)
		}
		// While another unit holds the lock, scheduled runs record nothing and look again
		// a minute later.
		store.mu.Lock()
		store.locked = true
		store.mu.Unlock()
		time.Sleep(time.Hour + 30*time.Second)
		synctest.Wait()
		store.mu.Lock()
		store.locked = false
		store.mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		if diff := cmp.Diff([]string{"-41m0s success", "20m0s success", "1h21m0s success"}, store.outcomes(t0)); diff != "" {
			t.Fatalf("runs around a held lock (-want +got):\n%s", diff)
		}
	})
}
