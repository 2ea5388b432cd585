// Command lpload is the load generator of package load on the command line: it sends one
// request over and over to a URL, at a constant rate (open loop) or as fast as a number
// of workers can (closed loop), with HTTP keep-alive, and prints throughput and latency
// percentiles. It stops by itself after -d (plus one request timeout) or -n requests. Only
// loopback targets are accepted. lpbench uses the same generator in-process.
//
//	lpload -url http://127.0.0.10:8080/debug/info -rate 2000 -d 10s
//	lpload -url http://127.0.0.10:8080/patches/F -mode closed -c 8 -d 10s
//	lpload -url http://127.0.0.10:8080/v1/client/ID/updates -method POST \
//	    -body status.json -H 'Authorization: Bearer TOKEN' -rate 1000 -d 10s
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/load"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "lpload: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lpload", flag.ContinueOnError)
	target := fs.String("url", "", "the URL to request (loopback only)")
	method := fs.String("method", http.MethodGet, "HTTP method")
	bodyFile := fs.String("body", "", "file holding the request body")
	mode := fs.String("mode", "open", "open (constant -rate) or closed (-c workers back to back)")
	rate := fs.Float64("rate", 1000, "open loop: requests per second")
	conc := fs.Int("c", 256, "closed loop: workers; open loop: most requests in flight")
	dur := fs.Duration("d", 10*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before -d")
	n := fs.Int("n", 0, "stop after this many requests (0: no limit but time)")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout")
	status := fs.Int("status", http.StatusOK, "the status that counts as success")
	var hdrs headers
	fs.Var(&hdrs, "H", "request header 'Name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-url %q: want http://host:port/path", *target)
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-url %q: only loopback targets (127.0.0.0/8, ::1, localhost)", *target)
	}
	var body []byte
	if *bodyFile != "" {
		if body, err = os.ReadFile(*bodyFile); err != nil {
			return err
		}
	}
	plan := load.Plan{Rate: *rate, Concurrency: *conc, Warmup: *warmup, Duration: *dur, MaxRequests: *n, Timeout: *timeout}
	switch *mode {
	case "open":
		plan.Mode = load.OpenLoop
	case "closed":
		plan.Mode = load.ClosedLoop
	default:
		return fmt.Errorf("-mode %q: want open or closed", *mode)
	}
	hc := load.NewHTTPClient(*conc)
	res, err := load.Run(ctx, plan, func(ctx context.Context, i int) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, *method, *target, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		if body == nil {
			req.Body = http.NoBody
		}
		for _, h := range hdrs {
			k, v, _ := strings.Cut(h, ":")
			req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		return load.Send(hc, req, *status)
	})
	if err != nil {
		return err
	}
	h := &res.Latency
	fmt.Fprintf(stdout, "mode %s, %d sent, %d ok, %d errors in %s: %.1f req/s, %.2f MB/s\n", plan.Mode, res.Sent, res.OK, res.ErrorCount(),
		res.Elapsed.Round(time.Millisecond), res.Throughput(), res.BytesPerSecond()/1e6)
	fmt.Fprintf(stdout, "latency: min %s, p50 %s, p90 %s, p99 %s, p99.9 %s, max %s\n", load.Millis(h.Min()), load.Millis(h.Quantile(0.5)),
		load.Millis(h.Quantile(0.9)), load.Millis(h.Quantile(0.99)), load.Millis(h.Quantile(0.999)), load.Millis(h.Max()))
	if res.ErrorCount() > 0 {
		fmt.Fprintf(stdout, "errors: %s\n", res.ErrorSummary())
	}
	return nil
}
