// Command lpserver is livepatch-server serve with net/http/pprof on a second address, for
// profiling under load only (lpbench -profile starts it where a target is missed). It wires
// the same packages as cmd/livepatch-server's serve (store, patch storage, HTTP API) from
// the same config file; background jobs other than the catalog refresh (report cleanup,
// sync) are left out. Never deploy it: the pprof address has no authentication.
//
//	lpserver --config FILE --pprof 127.0.0.1:6060
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

func main() {
	configPath := flag.String("config", "", "server config file")
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "address of the pprof endpoints (loopback only)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *configPath, *pprofAddr); err != nil {
		fmt.Fprintf(os.Stderr, "lpserver: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, configPath, pprofAddr string) error {
	if configPath == "" {
		return errors.New("--config is required")
	}
	if host, _, err := net.SplitHostPort(pprofAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("--pprof %q: want a loopback host:port", pprofAddr)
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Server.LogLevel))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	db, err := postgres.Open(ctx, cfg.Database.ConnectionString, postgres.Options{
		MaxConns:        cfg.Database.ConnectionPoolMax,
		ConnMaxLifetime: cfg.Database.ConnectionLifetimeMax.D(),
	})
	if err != nil {
		return err
	}
	defer db.Close()
	var files server.PatchFiles
	if cfg.PatchStorage.Type == config.StorageFilesystem {
		if files, err = patchstore.NewFilesystem(cfg.PatchStorage.FilesystemPath); err != nil {
			return err
		}
	} else {
		files = patchstore.NewPostgres(db.SQL())
	}
	cacheSize := 0
	if cfg.PatchCache.Enabled {
		cacheSize = cfg.PatchCache.CacheSize
	}
	api, err := httpapi.New(db, files, httpapi.Options{
		Version:          "lpserver",
		URLTemplate:      cfg.Server.URLTemplate,
		BasicUsers:       cfg.Auth.BasicUsers,
		SessionTTL:       cfg.Auth.SessionTTL.D(),
		ConcurrencyLimit: cfg.Server.ConcurrencyLimit,
		BurstLimit:       cfg.Server.BurstLimit,
		Logger:           log,
		PatchCacheSize:   cacheSize,
		PatchCacheTTL:    cfg.PatchCache.CacheTTL.D(),
	})
	if err != nil {
		return err
	}
	jobs, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	go api.Run(jobs)

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	servers := []*http.Server{
		{Addr: cfg.Server.Address, Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second},
		{Addr: pprofAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.ListenAndServe() }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(shutdown)
	}
	return nil
}
