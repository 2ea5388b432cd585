// Package app is the running livepatch server, wired once: from a configuration it opens
// the database and the patch storage, builds the HTTP API, the upstream syncer and the
// background jobs (report retention, stale machines), and serves until its context ends.
// livepatch-server serve runs it; so do the tests of cmd/livepatch-server and the load
// harness's profiling build (tests/load/cmd/lpserver), which adds pprof beside it.
package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/postgres"
	"github.com/livepatch-onprem/livepatch/server/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Main is the running server: it owns the database pool, the patch storage, the HTTP
// listener and the background jobs. Tests start it on 127.0.0.1:0 and read Addr.
type Main struct {
	Config config.Config
	Logger *slog.Logger
	// Listening, when set, receives the bound address once the server accepts connections.
	Listening chan<- net.Addr
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Version is the server's version, in /debug/info, the banner and the log.
	Version string
}

// Run serves until ctx ends, then drains in-flight requests and returns nil.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	log := m.Logger
	if log == nil {
		log = slog.Default()
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	db, err := postgres.Open(ctx, cfg.Database.ConnectionString, postgres.Options{
		MaxConns:            cfg.Database.ConnectionPoolMax,
		ConnMaxLifetime:     cfg.Database.ConnectionLifetimeMax.D(),
		SynchronousCheckIns: cfg.MachineReports.SynchronousCommit,
	})
	if err != nil {
		return err
	}
	defer db.Close()
	current, latest, err := db.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("cannot read schema version: %w", err)
	}
	if current < latest {
		if current == 0 {
			return fmt.Errorf("database not initialized: run livepatch-server schema upgrade --config FILE")
		}
		return fmt.Errorf("database schema is at version %d but this server needs %d: run livepatch-server schema upgrade --config FILE", current, latest)
	}

	files, err := OpenPatchFiles(cfg.PatchStorage, db.SQL())
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	syncer := upstream.New(db, files, cfg.PatchSync, upstream.Options{Now: m.Now, Logger: log, Registry: reg})
	signingKey, contracts := m.syncServer(log)
	var resourceTokens func(context.Context, string) error
	var contractsHealth func() server.ContractsHealth
	if contracts != nil {
		resourceTokens, contractsHealth = contracts.CheckResourceToken, contracts.Health
	}

	proxies, err := config.ParseTrustedProxies(cfg.Server.TrustedProxies)
	if err != nil {
		return fmt.Errorf("cannot use server.trusted-proxies: %w", err)
	}
	api, err := httpapi.New(db, files, httpapi.Options{
		TrustedProxies:   proxies,
		Version:          m.Version,
		URLTemplate:      cfg.Server.URLTemplate,
		BasicUsers:       cfg.Auth.BasicUsers,
		SessionTTL:       cfg.Auth.SessionTTL.D(),
		ConcurrencyLimit: cfg.Server.ConcurrencyLimit,
		BurstLimit:       cfg.Server.BurstLimit,
		Now:              m.Now,
		Logger:           log,
		PatchCacheSize:   patchCacheSize(cfg.PatchCache),
		PatchCacheTTL:    cfg.PatchCache.CacheTTL.D(),
		Registry:         reg,
		Sync:             syncer,
		SyncTiers:        cfg.PatchSync.SyncTiers, // synced and imported lists alike
		SigningKey:       signingKey,
		ResourceTokens:   resourceTokens,
		RequestTimeout:   cfg.Server.RequestTimeout.D(),
		UploadTimeout:    cfg.Server.UploadTimeout.D(),
		StallTimeout:     cfg.Server.StallTimeout.D(),
		DownloadLimit:    cfg.Server.DownloadLimit,
		DownloadRedirect: downloadRedirect(cfg.PatchStorage, files),
		ContractsHealth:  contractsHealth,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Server.Address)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Server.Address, err)
	}
	// Every read and write of a connection has a deadline: the API moves them per route
	// (longer for uploads, by progress for downloads); these bound everything else.
	timeout := cfg.Server.RequestTimeout.D()
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: min(10*time.Second, timeout),
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	jobs, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	done := make(chan struct{}, 3)
	go func() { api.Run(jobs); done <- struct{}{} }()
	go func() { m.cleanupReports(jobs, db, log); done <- struct{}{} }()
	go func() { syncer.Run(jobs); done <- struct{}{} }()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("Server started", "address", ln.Addr().String(), "version", m.Version, "schema", current, "patch-storage", cfg.PatchStorage.Type)
	if m.Listening != nil {
		m.Listening <- ln.Addr()
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("cannot serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("Server stopping: draining requests")
	drain(srv, cfg.Server.ShutdownTimeout.D(), log)
	stopJobs()
	<-done
	<-done
	<-done
	log.Info("Server stopped")
	return nil
}

// drain stops srv: it closes the idle connections at once, lets running requests finish
// for up to timeout, then closes the connections of those still running (a slow or stalled
// client must not hold up a restart).
func drain(srv *http.Server, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return
	}
	log.Warn("Requests still running at the end of the drain: closing their connections", "shutdown-timeout", timeout.String())
	if err := srv.Close(); err != nil {
		log.Warn("Cannot close connections", "error", err)
	}
}

// syncServer loads what this server needs to serve downstream servers: the signing key
// (sync-server.signing-key) and the contracts server that checks resource tokens (nil
// when none is used). A bad key is logged and leaves the server serving everything else.
func (m *Main) syncServer(log *slog.Logger) (ed25519.PrivateKey, *upstream.Contracts) {
	cfg := m.Config
	if cfg.SyncServer.SigningKey == "" {
		return nil, nil
	}
	key, err := LoadSigningKey(cfg.SyncServer.SigningKey)
	if err != nil {
		log.Error("Cannot load the sync signing key: downstream servers cannot sync from this one", "error", err)
		return nil, nil
	}
	log.Info("Serving downstream servers", "key-id", server.KeyID(key.Public().(ed25519.PublicKey)))
	if cfg.Contracts.URL == "" {
		return key, nil
	}
	contracts, err := upstream.NewContracts(cfg.Contracts.URL, upstream.NewHTTPClient(cfg.PatchSync.Proxy), m.Now)
	if err != nil {
		log.Error("Cannot check resource tokens: only sync tokens are accepted", "error", err)
		return key, nil
	}
	return key, contracts
}

func patchCacheSize(c config.PatchCache) int {
	if !c.Enabled {
		return 0
	}
	return c.CacheSize
}

// cleanupReports prunes machine report history older than the retention period, the
// downstream deployments and their reported machines not seen for 30 days, and with
// stale-after-days the machines not seen for that long, at start and then every cleanup
// interval, on one unit at a time.
func (m *Main) cleanupReports(ctx context.Context, db *postgres.DB, log *slog.Logger) {
	cfg := m.Config.MachineReports
	t := time.NewTicker(cfg.CleanupInterval.D())
	defer t.Stop()
	for {
		before := m.Now().AddDate(0, 0, -cfg.RetentionDays)
		ran, err := db.RunExclusive(ctx, "report-cleanup", func(ctx context.Context) error {
			n, err := pruneReports(ctx, db, before, cfg.CleanupRowLimit, maxCleanupBatches)
			if n > 0 {
				log.Info("Pruned machine reports", "rows", n, "before", before.Format(time.RFC3339))
			}
			if err != nil {
				return err
			}
			n, err = db.ForgetDownstreams(ctx, m.Now())
			if n > 0 {
				log.Info("Forgot downstream deployments and machines not seen for 30 days", "rows", n)
			}
			if err != nil || cfg.StaleAfterDays == 0 {
				return err
			}
			stale := m.Now().AddDate(0, 0, -cfg.StaleAfterDays)
			n, err = removeStaleMachines(ctx, db, stale, staleBatch, maxCleanupBatches)
			if n > 0 {
				log.Info("Removed stale machines", "machines", n, "not-seen-since", stale.Format(time.RFC3339))
			}
			return err
		})
		if err != nil && ctx.Err() == nil {
			log.Warn("Cannot prune machine reports", "error", err)
		} else if !ran {
			log.Debug("Report cleanup runs on another unit")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxCleanupBatches bounds one cleanup run; what is left waits for the next run.
const maxCleanupBatches = 10_000

// staleBatch bounds the machines one transaction of the stale machine cleanup removes.
const staleBatch = 5000

// removeStaleMachines removes the machines not seen since before in batches of at most
// limit (each its own transaction) until a pass over the fleet is done, ctx ends or
// maxBatches batches ran.
func removeStaleMachines(ctx context.Context, db *postgres.DB, before time.Time, limit, maxBatches int) (int, error) {
	total, cursor := 0, ""
	for range maxBatches {
		n, next, err := db.RemoveStaleMachines(ctx, before, cursor, limit)
		total += n
		if err != nil || next == "" || ctx.Err() != nil {
			return total, err
		}
		cursor = next
	}
	return total, nil
}

// pruneReports deletes history rows older than before in batches of limit rows (each its
// own short transaction, so check-ins never wait long on it) until none is left or
// maxBatches batches ran.
func pruneReports(ctx context.Context, db *postgres.DB, before time.Time, limit, maxBatches int) (int, error) {
	return inBatches(ctx, limit, maxBatches, func(ctx context.Context) (int, error) {
		return db.CleanupReports(ctx, before, limit)
	})
}

// inBatches runs batch, which deletes at most limit rows, until it deletes fewer, fails,
// ctx ends or maxBatches batches ran, and returns how many rows they deleted.
func inBatches(ctx context.Context, limit, maxBatches int, batch func(context.Context) (int, error)) (int, error) {
	total := 0
	for range maxBatches {
		n, err := batch(ctx)
		total += n
		if err != nil || n < limit || ctx.Err() != nil {
			return total, err
		}
	}
	return total, nil
}
