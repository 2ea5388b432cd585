package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
)

// daemon is the controller: it owns the model and answers CLI calls.
type daemon struct {
	dir       string
	model     *jujusim.Model
	contracts *contracts.Server
	mu        sync.Mutex // one mutating command at a time, as a controller serialises API calls
}

func runDaemon(dir string, args []string) error {
	fs := pflag.NewFlagSet("bootstrap", pflag.ContinueOnError)
	maps := fs.StringArray("map-charm", nil, "charm URL=local path, for bundles naming charms by URL")
	tokens := fs.StringArray("contracts-token", nil, "start a contracts server stand-in accepting this contract token")
	interval := fs.Duration("update-status-interval", 5*time.Minute, "update-status interval (0 disables)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	charms := map[string]string{}
	for _, m := range *maps {
		url, path, ok := strings.Cut(m, "=")
		if !ok {
			return fmt.Errorf("invalid --map-charm %q: want URL=PATH", m)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		charms[url] = abs
	}
	log.SetFlags(log.LstdFlags)
	model, err := jujusim.New(jujusim.Options{
		Dir:                  filepath.Join(dir, "model"),
		UpdateStatusInterval: *interval,
		Charms:               charms,
		Logf: func(format string, args ...any) {
			log.Printf(format, args...)
		},
	})
	if err != nil {
		return err
	}
	d := &daemon{dir: dir, model: model}
	if len(*tokens) > 0 {
		d.contracts = contracts.New(*tokens...)
		if err := d.contracts.Start("127.0.0.1:0"); err != nil {
			model.Close()
			return err
		}
		os.WriteFile(filepath.Join(dir, "contracts-url"), []byte(d.contracts.URL+"\n"), 0o644)
	}
	sock := socketPath(dir)
	os.Remove(sock)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		model.Close()
		return err
	}
	done := make(chan struct{})
	var once sync.Once
	shutdown := func() { once.Do(func() { close(done) }) }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST /call", func(w http.ResponseWriter, r *http.Request) {
		var req callRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp := d.execute(r.Context(), req)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		d.stop()
		fmt.Fprintln(w, "stopped")
		shutdown()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(lis)
	log.Printf("Controller listening on %s", sock)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigs:
		d.stop()
	case <-done:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	os.Remove(sock)
	return nil
}

func (d *daemon) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.contracts != nil {
		d.contracts.Close()
	}
	if err := d.model.Close(); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Printf("Cannot close model: %v", err)
	}
}
