// Command lpbench is the load and benchmark harness of make bench: it starts the whole
// stack on this machine, all on loopback (PostgreSQL, livepatch-server units, haproxy, a
// no-work handler and nginx for the ceilings), drives it with the load generator of
// package load, and writes docs/benchmarks.md.
//
//	lpbench -size quick|full -bin build/bench/bin -work build/bench -out docs/benchmarks.md
//
// Phases (-only to pick some): checkins, downloads, rollout, fleet, hooks, and soak (only
// when named: it runs for -soak-duration, 30 minutes by default). Every process it starts
// is stopped when it ends, fails or is interrupted; every request loop is bounded in count
// and time.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// Loopback addresses: each component has its own, as units on separate machines would.
const (
	haproxyHost = "127.0.0.10"
	unit1Host   = "127.0.0.11"
	unit2Host   = "127.0.0.12"
	trivialHost = "127.0.0.13"
	nginxHost   = "127.0.0.14"
	unit3Host   = "127.0.0.15"
	unit4Host   = "127.0.0.16"
	unit5Host   = "127.0.0.17"
	unit6Host   = "127.0.0.18"
)

// serverMaxConn is haproxy's per-server connection cap: the server's default
// concurrency-limit (50) plus a little, so haproxy queues bursts instead of the server
// answering 429.
const serverMaxConn = 64

const adminUser = "admin"

// size is what -size selects.
type size struct {
	name        string
	machines    int           // simulated machines that check in
	rates       []float64     // open-loop check-in rates tried, in order
	warmup      time.Duration // per step, not measured
	step        time.Duration // measured per step
	openConc    int           // open loop: most requests in flight
	maxConc     int           // closed loop: workers
	maxDur      time.Duration
	dlConc      int
	dlDur       time.Duration
	fleet       int
	exportMax   time.Duration
	cleanupMax  time.Duration
	profileSecs int
}

var sizes = map[string]size{
	"quick": {
		name: "quick", machines: 4000,
		rates:  []float64{500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000},
		warmup: time.Second, step: 4 * time.Second, openConc: 512, maxConc: 64, maxDur: 4 * time.Second,
		dlConc: 8, dlDur: 5 * time.Second,
		fleet: 100_000, exportMax: 3 * time.Minute, cleanupMax: 20 * time.Second, profileSecs: 8,
	},
	"full": {
		name: "full", machines: 20000,
		rates:  []float64{500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 15000},
		warmup: 3 * time.Second, step: 15 * time.Second, openConc: 1024, maxConc: 64, maxDur: 15 * time.Second,
		dlConc: 8, dlDur: 15 * time.Second,
		fleet: 1_000_000, exportMax: 15 * time.Minute, cleanupMax: 2 * time.Minute, profileSecs: 15,
	},
}

// bench is one run of the harness.
type bench struct {
	size        size
	bin         string // livepatch-server, lptrivial, lpserver
	work        string // configs and logs
	haproxy     string
	nginx       string
	g           *load.Group
	pg          *load.Postgres
	fsync       bool
	profile     bool // profile the server where a target is missed
	pprofUnits  bool // run units as the lpserver build (while profiling)
	adminPass   string
	basicUser   string
	report      *load.Report
	profiles    []string // summaries of profiles taken
	pool        int      // units' connection-pool-max (0: the default)
	dsnOptions  string   // PostgreSQL options for the units' connections (experiments)
	experiments bool     // measure the proposed fixes beside the defaults

	soakDuration time.Duration // the soak phase (soak.go)
	soakMachines int
	soakRate     float64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "lpbench: error: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lpbench", flag.ContinueOnError)
	sizeName := fs.String("size", "quick", "quick (a few minutes) or full")
	bin := fs.String("bin", "build/bench/bin", "directory holding livepatch-server, lptrivial and lpserver")
	work := fs.String("work", "build/bench", "directory for configs and logs (emptied first)")
	out := fs.String("out", "docs/benchmarks.md", "the report to write (empty: none)")
	only := fs.String("only", "checkins,downloads,rollout,fleet,hooks", "phases to run, comma-separated")
	fsync := fs.Bool("fsync", true, "keep PostgreSQL durability on (fsync, synchronous_commit)")
	profile := fs.Bool("profile", true, "where a target is missed, profile the server (pprof) under the same load")
	rates := fs.String("rates", "", "override the check-in rates of the size, e.g. 500,1000,2000")
	note := fs.String("note", "", "a caveat to print at the top of the report")
	exps := fs.Bool("experiments", true, "also measure one unit under the configurations the findings propose (tests/load/cmd/lpbench/experiments.go)")
	pool := fs.Int("pool", 0, "experiment: the units' database.connection-pool-max (0: the default)")
	dsnOptions := fs.String("pg-options", "", "experiment: PostgreSQL options for the units' connections, e.g. '-c synchronous_commit=off'")
	soakDuration := fs.Duration("soak-duration", 30*time.Minute, "soak phase: how long the machines check in")
	soakMachines := fs.Int("soak-machines", 1_000_000, "soak phase: distinct machines checking in")
	soakRate := fs.Float64("soak-rate", 3000, "soak phase: check-ins per second")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sz, ok := sizes[*sizeName]
	if !ok {
		return fmt.Errorf("unknown size %q: want quick or full", *sizeName)
	}
	if *rates != "" {
		r, err := load.ParseRates(*rates)
		if err != nil {
			return err
		}
		sz.rates = r
	}
	phases := strings.Split(*only, ",")
	for _, p := range phases {
		if !slices.Contains([]string{"checkins", "downloads", "rollout", "fleet", "hooks", "soak"}, p) {
			return fmt.Errorf("unknown phase %q: want checkins, downloads, rollout, fleet, hooks or soak", p)
		}
	}
	if *soakDuration < time.Minute || *soakMachines < 1 || *soakRate <= 0 {
		return fmt.Errorf("invalid soak: want -soak-duration of a minute or more, -soak-machines and -soak-rate above 0")
	}

	b := &bench{size: sz, fsync: *fsync, profile: *profile, pool: *pool, dsnOptions: *dsnOptions, experiments: *exps,
		soakDuration: *soakDuration, soakMachines: *soakMachines, soakRate: *soakRate}
	var err error
	if b.bin, err = filepath.Abs(*bin); err != nil {
		return err
	}
	if b.work, err = filepath.Abs(*work); err != nil {
		return err
	}
	for _, name := range []string{"livepatch-server", "lptrivial", "lpserver"} {
		if _, err := os.Stat(filepath.Join(b.bin, name)); err != nil {
			return fmt.Errorf("%s not built in %s: run make bench (or go build -o %s ./cmd/livepatch-server ./tests/load/cmd/...)", name, b.bin, b.bin)
		}
	}
	if b.haproxy, err = findTool("haproxy"); err != nil {
		return err
	}
	if slices.Contains(phases, "downloads") {
		if b.nginx, err = findTool("nginx"); err != nil {
			return err
		}
	}
	pgBin, err := pgtest.FindBinaries()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		return err
	}

	start := time.Now()
	b.report = &load.Report{Size: sz.name, Started: start, Machine: load.ReadMachineInfo()}
	if *note != "" {
		b.report.Notes = append(b.report.Notes, *note)
	}
	b.report.Versions = versions(b, pgBin)
	b.report.Commands = commands(args)

	b.g = load.NewGroup(b.work)
	defer b.g.StopAll(15 * time.Second)

	pass := make([]byte, 18)
	rand.Read(pass)
	b.adminPass = hex.EncodeToString(pass)
	hash, err := bcrypt.GenerateFromPassword([]byte(b.adminPass), 10)
	if err != nil {
		return err
	}
	b.basicUser = adminUser + ":" + string(hash)

	settings := load.DefaultPostgresSettings()
	settings.Fsync = b.fsync
	b.logf("Starting PostgreSQL (%s, fsync %v)", pgBin, b.fsync)
	load.RemoveStale("/tmp")
	b.pg, err = load.StartPostgres(ctx, b.g, pgBin, "/tmp", settings)
	if err != nil {
		return err
	}
	defer func() {
		b.g.Stop(b.pg.Process(), 30*time.Second)
		b.pg.Remove()
	}()
	b.report.Settings = b.settings()

	var failures []error
	if slices.Contains(phases, "checkins") || slices.Contains(phases, "downloads") || slices.Contains(phases, "rollout") {
		if err := b.pg.CreateDatabase(ctx, "livepatch"); err != nil {
			return err
		}
		fx, err := b.setupCatalog(ctx)
		if err != nil {
			return err
		}
		if slices.Contains(phases, "checkins") {
			if err := b.checkIns(ctx, fx); err != nil {
				failures = append(failures, fmt.Errorf("check-ins: %w", err))
			}
		}
		if slices.Contains(phases, "downloads") && ctx.Err() == nil {
			if err := b.downloads(ctx, fx); err != nil {
				failures = append(failures, fmt.Errorf("downloads: %w", err))
			}
		}
		if slices.Contains(phases, "rollout") && ctx.Err() == nil {
			if err := b.rollout(ctx, fx); err != nil { // rollout.go
				failures = append(failures, fmt.Errorf("rollout: %w", err))
			}
		}
	}
	if slices.Contains(phases, "fleet") && ctx.Err() == nil {
		if err := b.fleet(ctx); err != nil {
			failures = append(failures, fmt.Errorf("fleet: %w", err))
		}
	}
	if slices.Contains(phases, "soak") && ctx.Err() == nil {
		if err := b.soak(ctx); err != nil {
			failures = append(failures, fmt.Errorf("soak: %w", err))
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if slices.Contains(phases, "hooks") && ctx.Err() == nil {
		if err := b.hooks(ctx); err != nil {
			failures = append(failures, fmt.Errorf("charm hooks: %w", err))
			b.report.Summary = append(b.report.Summary, load.HooksNotRun("failed: see the notes")...)
		}
	} else {
		b.report.Summary = append(b.report.Summary, load.HooksNotRun("not run (lpbench -only)")...)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	b.report.Took = time.Since(start)
	b.report.LoadEnd = load.LoadAvg()
	for _, err := range failures {
		b.report.Notes = append(b.report.Notes, "**This phase failed:** "+strings.ReplaceAll(err.Error(), "\n", " "))
	}
	if len(b.profiles) > 0 {
		b.report.Sections = append(b.report.Sections, load.Section{
			Title: "Profiles",
			Text:  strings.Join(b.profiles, "\n\n"),
		})
	}

	fmt.Println()
	b.report.WriteTable(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		if err := b.report.WriteMarkdown(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Printf("\nWrote %s; configs and logs in %s\n", *out, b.work)
	}
	return errors.Join(failures...)
}

// logf prints progress.
func (b *bench) logf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if msg != "" {
		fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), msg)
	}
}

func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found: run make bench (it installs it), or apt-get install %s", name, name)
}

func versions(b *bench, pgBin string) [][2]string {
	goVersion := load.CommandVersion("go", "version")
	return [][2]string{
		{"go", goVersion},
		{"livepatch-server", load.CommandVersion(filepath.Join(b.bin, "livepatch-server"), "version")},
		{"haproxy", load.CommandVersion(b.haproxy, "-v")},
		{"postgres", load.CommandVersion(filepath.Join(pgBin, "postgres"), "--version")},
		{"nginx", nginxVersion(b.nginx)},
	}
}

func nginxVersion(path string) string {
	if path == "" {
		return "not used"
	}
	return load.CommandVersion(path, "-v")
}

// commands returns the command lines that reproduce the run.
func commands(args []string) []string {
	size := "quick"
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "-size="); ok {
			size = v
		} else if a == "-size" && i+1 < len(args) {
			size = args[i+1]
		}
	}
	return []string{
		"make bench BENCH_SIZE=" + size + "   # runs the following",
		"./tests/load/deps                    # nginx (make deps: PostgreSQL, haproxy)",
		"CGO_ENABLED=0 go build -o build/bench/bin/ ./cmd/livepatch-server ./tests/load/cmd/...",
		"build/bench/bin/lpbench " + shellJoin(args),
		"go " + shellJoin(hookBenchArgs) + "   # the hooks phase, run by lpbench",
	}
}

// shellJoin joins args as a shell command line, quoting those that need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// settings lists what the stack ran with, for the report.
func (b *bench) settings() []string {
	durability := "fsync, synchronous_commit and full_page_writes **on** (every check-in's commit waits for its WAL flush)"
	if !b.fsync {
		durability = "fsync, synchronous_commit and full_page_writes **off** (numbers are an upper bound)"
	}
	var experiments []string
	if b.pool > 0 {
		experiments = append(experiments, fmt.Sprintf("**Experiment:** the units ran with database.connection-pool-max %d (not the default).", b.pool))
	}
	if b.dsnOptions != "" {
		experiments = append(experiments, fmt.Sprintf("**Experiment:** the units' database connections ran with options %q.", b.dsnOptions))
	}
	return append(experiments,
		fmt.Sprintf("PostgreSQL: a throwaway cluster on 127.0.0.1, data on the root filesystem, %s; max_connections %d, shared_buffers %s, effective_cache_size 12GB, max_wal_size 8GB (see tests/load/render.go).",
			durability, b.pg.Settings.MaxConns, b.pg.Settings.SharedBuffers),
		fmt.Sprintf("livepatch-server: the defaults an operator gets (concurrency-limit 50, burst-limit 500, connection-pool-max 15, log-level info), each unit on its own address (%s, %s).", unit1Host, unit2Host),
		fmt.Sprintf("haproxy: http mode, keep-alive both sides, balance roundrobin, option httpchk GET /debug/info, global maxconn 8192, maxconn %d per server (requests beyond wait in haproxy's queue); frontends on %s.", serverMaxConn, haproxyHost),
		fmt.Sprintf("Load generator: Go net/http with keep-alive, in the lpbench process. Check-in steps: %s warm-up then %s measured at each rate, open loop (latency from the moment a request was due, at most %d in flight); a step is sustained when every request succeeded, p99 < 100 ms and the achieved rate is at least 97%% of the target. Max mode: closed loop, %d workers, %s.",
			b.size.warmup, b.size.step, b.size.openConc, b.size.maxConc, b.size.maxDur),
		fmt.Sprintf("Simulated machines: %d, distinct ids, spread over the four default tiers, %d kernels and the patch states of tests/load/fixture.go; enabled once through the client API with per-tier auth tokens created through the admin API.", b.size.machines, len(load.FleetKernels)),
		"CPU columns: cores used by each component during the measured period (from /proc: user+system time of the process and its descendants / wall time): gen = the load generator (lpbench), px = haproxy, srv = livepatch-server unit(s) or the trivial handler, pg = PostgreSQL (all backends).",
	)
}
