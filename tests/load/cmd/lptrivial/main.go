// Command lptrivial is the ceiling of the check-in benchmark: an HTTP server that reads
// each request body and answers a fixed small JSON document, doing no other work. lpbench
// puts it behind the same haproxy as the livepatch-server units, so that the difference is
// what the server's work costs.
//
//	lptrivial --address 127.0.0.13:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// answer is about the size of a check-in's answer without a patch offer.
var answer = []byte(`{"tier":"stable","check":{"interval-minutes":60}}` + "\n")

func main() {
	addr := flag.String("address", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *addr); err != nil {
		fmt.Fprintf(os.Stderr, "lptrivial: %v\n", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, addr string) error {
	srv := &http.Server{
		Addr: addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(answer)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
