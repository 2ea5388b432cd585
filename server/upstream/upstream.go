// Package upstream keeps a livepatch on-prem server current with an upstream livepatch
// server: Canonical's, or another on-prem server (chaining). A Syncer runs on every unit;
// on its interval, or when an administrator triggers it, it takes a cluster-wide lock so
// one unit syncs at a time, fetches the upstream's signed patch list for a tier, verifies
// the signature with the trusted key, applies the configured filters, downloads what is
// missing, verifies size and SHA-256 and the archive itself, stores the file and only then
// records the patch in the landing tier. With patch-sync.sync-tiers the local tiers
// mirror the upstream's instead: each patch sits in its upstream tier, and synced patches
// the upstream stops listing are blocked. Every run leaves a server.SyncReport; failures
// are retried with exponential backoff and never stop the server serving what it has.
//
// The package also holds the upstream side's check of Ubuntu Pro resource tokens with the
// contracts server (Contracts).
package upstream

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// LockName is the cluster-wide lock (server.Store.RunExclusive) a sync runs under.
const LockName = "patch-sync"

// Options are what a Syncer needs besides the store, the patch files and the config.
type Options struct {
	// Unit names this unit in sync reports (default: the host name).
	Unit string
	// HTTPClient talks to the upstream (default: a client using the proxies of
	// patch-sync.proxy, or the environment's when those are empty).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the sync log (default slog.Default()).
	Logger *slog.Logger
	// Registry receives the sync metrics (default: a private registry).
	Registry *prometheus.Registry
	// TempDir holds downloads until they are verified (default os.TempDir()).
	TempDir string
	// MinBackoff is the first retry delay after a failed run; it doubles on each failure
	// up to the interval (default 1m).
	MinBackoff time.Duration
}

// Syncer syncs patches from the upstream. Create it with New; Run runs the schedule,
// Trigger asks for a run now, SyncOnce runs one directly.
type Syncer struct {
	store   Store
	files   server.PatchFiles
	cfg     config.PatchSync
	opts    Options
	log     *slog.Logger
	http    *http.Client
	base    *url.URL            // the upstream URL
	trusted []ed25519.PublicKey // none: signatures are not checked
	// problem is a configuration problem that fails every run; warnings weaken sync.
	problem  error
	warnings []string
	// importProblem is a configuration problem that refuses every offline bundle.
	importProblem error
	metrics       *metrics

	kick chan struct{} // wakes Run for a trigger

	mu      sync.Mutex
	pending []chan server.SyncReport // triggers waiting for the next run
	stopped bool                     // Run has returned
	running bool                     // a run is in progress on this unit
	nextRun time.Time
}

// New returns a Syncer for cfg. Configuration problems do not stop the server: they are
// reported in Status and fail every run with a message saying what to fix.
func New(store Store, files server.PatchFiles, cfg config.PatchSync, opts Options) *Syncer {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Minute
	}
	if opts.Unit == "" {
		opts.Unit, _ = os.Hostname()
	}
	s := &Syncer{
		store:   store,
		files:   files,
		cfg:     cfg,
		opts:    opts,
		log:     opts.Logger,
		http:    opts.HTTPClient,
		metrics: newMetrics(opts.Registry),
		kick:    make(chan struct{}, 1),
	}
	if cfg.Enabled {
		s.metrics.interval.Set(cfg.Interval.D().Seconds())
	}
	s.checkConfig()
	if s.http == nil {
		s.http = NewHTTPClient(cfg.Proxy)
	}
	return s
}

// checkConfig sets problem and warnings from the configuration.
func (s *Syncer) checkConfig() {
	var problems []string
	cfg := s.cfg
	u, err := url.Parse(strings.TrimRight(cfg.UpstreamURL, "/"))
	if cfg.UpstreamURL == "" {
		problems = append(problems, "patch-sync.upstream-url is empty: give the URL of a livepatch on-prem server to sync from (this server speaks only the on-prem sync protocol), or turn patch-sync.enabled off and import offline bundles")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		problems = append(problems, fmt.Sprintf("patch-sync.upstream-url %q is not an http(s) URL", cfg.UpstreamURL))
	} else {
		s.base = u
	}
	if cfg.Token == "" {
		problems = append(problems, "patch-sync.token is empty: set a resource token (action get-resource-token) or a sync token from the upstream server (livepatch-admin sync-tokens add)")
	}
	if cfg.UpstreamTier == "" {
		problems = append(problems, "patch-sync.upstream-tier is empty: name the upstream tier to follow")
	}
	if err := checkProxy(cfg.Proxy); err != nil {
		problems = append(problems, err.Error())
	}
	var importProblems []string
	if cfg.UpstreamTier == "" {
		importProblems = append(importProblems, "patch-sync.upstream-tier is empty: name the tier the bundles hold")
	}
	if cfg.TrustedKey == "" {
		s.warnings = append(s.warnings, "patch-sync.trusted-key is empty: the signatures of upstream patch lists are not verified")
		importProblems = append(importProblems, "patch-sync.trusted-key is empty: a bundle is imported only when its list verifies with a trusted key; set it to the signing.pub of the server that exports the bundles")
	} else if keys, err := LoadTrustedKeys(cfg.TrustedKey); err != nil {
		problems = append(problems, err.Error())
		importProblems = append(importProblems, err.Error())
	} else {
		s.trusted = keys
	}
	if len(importProblems) > 0 {
		s.importProblem = server.Errorf(server.CodeConflict, "this server cannot verify offline bundles: %s", strings.Join(importProblems, "; "))
	}
	if cfg.SendMachineReports && server.CheckDeploymentID(cfg.ID) != nil {
		s.warnings = append(s.warnings, "patch-sync.send-machine-reports is on but patch-sync.id is not a valid deployment id: machine reports are not sent")
	}
	if len(problems) > 0 {
		s.problem = server.Errorf(server.CodeInvalid, "invalid sync configuration: %s", config.Redact(strings.Join(problems, "; ")))
	}
	if cfg.Enabled {
		if cfg.SyncTiers {
			s.log.Info("Sync mirrors the upstream's tiers (patch-sync.sync-tiers): local tier changes and promotions are refused")
		}
		for _, w := range s.warnings {
			s.log.Warn("Sync configuration: " + w)
		}
		if s.problem != nil {
			s.log.Error("Sync cannot run", "error", s.problem)
		}
	}
}

// Run syncs on the schedule until ctx ends, and whenever Trigger asks. A scheduled run
// happens when the last successful run of any unit is an interval old; after a failure,
// runs are retried after MinBackoff, doubling up to the interval. A disabled Syncer
// returns at once.
func (s *Syncer) Run(ctx context.Context) error {
	if !s.cfg.Enabled {
		return nil
	}
	defer func() {
		s.mu.Lock()
		pending := s.pending
		s.stopped, s.pending, s.nextRun = true, nil, time.Time{}
		s.mu.Unlock()
		for _, ch := range pending {
			close(ch)
		}
	}()
	var wait time.Duration // the first scheduled check is at once
	failures := 0
	for {
		s.mu.Lock()
		s.nextRun = s.opts.Now().Add(wait)
		s.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-s.kick:
			timer.Stop()
		}
		waiters := s.takePending()
		res := s.run(ctx, len(waiters) > 0)
		for _, ch := range waiters {
			ch <- res.report
		}
		if ctx.Err() != nil {
			return nil
		}
		s.readLastSuccess(ctx)
		wait, failures = s.next(res, failures)
	}
}

// readLastSuccess sets the last-success gauge from the recorded reports, so that it tells
// the deployment's last success (whichever unit ran it, before this server started too)
// rather than this process's: a restarted or idle unit does not look as if sync never
// worked.
func (s *Syncer) readLastSuccess(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	success, err := s.store.SyncReports(rctx, server.SyncReportFilter{Outcome: server.SyncSuccess, Limit: 1})
	if err != nil || len(success) == 0 {
		return
	}
	s.metrics.lastSuccess.Set(float64(success[0].EndedAt.UnixNano()) / 1e9)
}

// takePending returns the triggers waiting for a run, and clears the wake-up.
func (s *Syncer) takePending() []chan server.SyncReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.kick:
	default:
	}
	waiters := s.pending
	s.pending = nil
	return waiters
}

// next returns the delay before the next scheduled run and the count of consecutive
// failures.
func (s *Syncer) next(res result, failures int) (time.Duration, int) {
	interval := s.cfg.Interval.D()
	switch {
	case res.locked:
		// Another unit is syncing: look again soon, by then its run is recorded.
		return min(s.opts.MinBackoff, interval), failures
	case res.notDue > 0:
		return min(res.notDue, interval), 0
	case res.report.Outcome == server.SyncSuccess:
		return interval, 0
	case res.report.Outcome == server.SyncSkipped:
		return min(s.opts.MinBackoff, interval), failures
	}
	failures++
	backoff := s.opts.MinBackoff
	for i := 1; i < failures && backoff < interval; i++ {
		backoff *= 2
	}
	return min(backoff, interval), failures
}

// Trigger asks Run for a run that starts after the call (runs asked for while one is in
// progress share the next run; asked for before Run starts, its first). The channel
// receives the run's report, or is closed if Run stops first.
func (s *Syncer) Trigger(ctx context.Context) (<-chan server.SyncReport, error) {
	if !s.cfg.Enabled {
		return nil, server.Errorf(server.CodeConflict, "upstream sync is not enabled on this server (patch-sync.enabled)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, server.Errorf(server.CodeUnavailable, "the sync scheduler has stopped on this unit: the server is shutting down")
	}
	ch := make(chan server.SyncReport, 1)
	s.pending = append(s.pending, ch)
	select {
	case s.kick <- struct{}{}:
	default: // a wake-up is already pending
	}
	return ch, nil
}

// SyncOnce runs one sync now on this unit and returns its report, which is recorded: a
// skipped report when another unit holds the sync lock.
func (s *Syncer) SyncOnce(ctx context.Context) server.SyncReport {
	return s.run(ctx, true).report
}

// Status returns the sync configuration and state as this unit sees it.
func (s *Syncer) Status(ctx context.Context) (server.SyncStatus, error) {
	st := server.SyncStatus{
		Enabled:      s.cfg.Enabled,
		Upstream:     s.upstreamName(),
		UpstreamTier: s.cfg.UpstreamTier,
		Tier:         s.cfg.Tier,
		SyncTiers:    s.cfg.SyncTiers,
	}
	if st.SyncTiers {
		st.Tier = "" // every patch goes to its upstream tier, synced or imported
	}
	if s.cfg.Enabled {
		st.Warnings = slices.Clone(s.warnings)
		if s.problem != nil {
			st.Warnings = append(st.Warnings, server.ErrorMessage(s.problem))
		}
	}
	s.mu.Lock()
	st.Running = s.running
	if !s.nextRun.IsZero() {
		next := s.nextRun.UTC()
		st.NextRun = &next
	}
	s.mu.Unlock()
	if st.Tier == "" && !st.SyncTiers {
		tiers, err := s.store.Tiers(ctx)
		if err != nil {
			return server.SyncStatus{}, err
		}
		if len(tiers) > 0 {
			st.Tier = tiers[0].Name
		}
	}
	last, err := s.store.SyncReports(ctx, server.SyncReportFilter{Limit: 1})
	if err != nil {
		return server.SyncStatus{}, err
	}
	if len(last) > 0 {
		st.LastRun = &last[0]
	}
	success, err := s.store.SyncReports(ctx, server.SyncReportFilter{Outcome: server.SyncSuccess, Limit: 1})
	if err != nil {
		return server.SyncStatus{}, err
	}
	if len(success) > 0 {
		st.LastSuccess = &success[0].EndedAt
	}
	return st, nil
}

// Health is the "sync" section of /debug/status: whether sync is enabled and, in one
// line, how it goes. It costs one query, as health checks call it often. Sync problems
// never make the server unhealthy.
func (s *Syncer) Health(ctx context.Context) server.SyncHealth {
	out := server.SyncHealth{Enabled: s.cfg.Enabled}
	if !s.cfg.Enabled {
		out.Status = "disabled"
		return out
	}
	out.Upstream = s.upstreamName()
	out.Warnings = s.warnings
	if s.problem != nil {
		out.Status = server.ErrorMessage(s.problem)
		return out
	}
	last, err := s.store.SyncReports(ctx, server.SyncReportFilter{Limit: 1})
	switch {
	case err != nil:
		out.Status = "cannot read sync reports: " + server.ErrorMessage(err)
	case len(last) == 0:
		out.Status = "not run yet"
	case last[0].Outcome == server.SyncFailed:
		out.Status = "last sync failed: " + last[0].Error
		out.LastError = last[0].Error
		out.LastRun = &last[0].EndedAt
	default:
		out.Status = server.HealthOK
		out.LastRun = &last[0].EndedAt
	}
	return out
}

// upstreamName is the upstream URL without credentials, for status and messages.
func (s *Syncer) upstreamName() string {
	if s.base == nil {
		return config.Redact(s.cfg.UpstreamURL)
	}
	return s.base.Redacted()
}

func (s *Syncer) setRunning(running bool) {
	s.mu.Lock()
	s.running = running
	s.mu.Unlock()
}

type metrics struct {
	runs        *prometheus.CounterVec
	added       prometheus.Counter
	bytes       prometheus.Counter
	lastSuccess prometheus.Gauge
	interval    prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepatch_server_sync_runs_total",
			Help: "Upstream sync runs of this unit by outcome (success, failed, skipped).",
		}, []string{"outcome"}),
		added: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepatch_server_sync_patches_added_total",
			Help: "Patch files added by upstream sync on this unit.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepatch_server_sync_bytes_total",
			Help: "Bytes of the patch files added by upstream sync on this unit.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livepatch_server_sync_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last successful sync run of the deployment (of any unit), as this unit last read it; 0 before any.",
		}),
		interval: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livepatch_server_sync_interval_seconds",
			Help: "The configured time between upstream sync runs; 0 when sync is off. Alerts compare the age of the last success with it.",
		}),
	}
	for _, o := range []string{server.SyncSuccess, server.SyncFailed, server.SyncSkipped} {
		m.runs.WithLabelValues(o)
	}
	reg.MustRegister(m.runs, m.added, m.bytes, m.lastSuccess, m.interval)
	return m
}
