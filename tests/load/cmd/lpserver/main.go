// Command lpserver is livepatch-server serve with net/http/pprof on a second address, for
// profiling under load only (lpbench -profile starts it where a target is missed). It runs
// the very server livepatch-server serve runs (server/app, with its background jobs) from
// the same config file. Never deploy it: the pprof address has no authentication.
//
//	lpserver --config FILE --pprof 127.0.0.1:6060
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/config"
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
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", pprofAddr)
	if err != nil {
		return err
	}
	profiles := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go profiles.Serve(ln)
	defer profiles.Close()
	m := &app.Main{Config: cfg, Logger: app.NewLogger(os.Stderr, cfg.Server.LogLevel), Version: "lpserver"}
	return m.Run(ctx)
}
