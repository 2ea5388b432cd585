package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// p99Limit is the latency a sustained check-in rate must stay under.
const p99Limit = 100 * time.Millisecond

// targetCheckIns is the check-in rate the issue asks for.
const targetCheckIns = 3000

// catalog is what setupCatalog prepared in the livepatch database.
type catalog struct {
	dsn        string
	authTokens map[string]string // tier -> auth token
	patchDir   string            // every patch file, for the filesystem store and nginx
	download   patchFile         // the 2 MB patch of the download measurements
}

type patchFile struct {
	name string
	data []byte
}

// machine is one simulated machine.
type machine struct {
	id    string
	tier  string
	token string // machine token, after enable
	body  []byte // its Status as JSON
	st    server.Status
}

// setupCatalog migrates the livepatch database and, through a unit, creates an auth token
// per tier and uploads a patch for every kernel of the fleet (a realistic 2 MB one for the
// most common), promoted to every tier.
func (b *bench) setupCatalog(ctx context.Context) (*catalog, error) {
	c := &catalog{dsn: b.pg.DSN("livepatch"), authTokens: map[string]string{}, patchDir: filepath.Join(b.work, "patches")}
	if err := os.MkdirAll(c.patchDir, 0o755); err != nil {
		return nil, err
	}
	base := load.Unit{DSN: c.dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}"}
	if err := b.schemaUpgrade(ctx, "setup", base); err != nil {
		return nil, err
	}
	un, err := b.startUnit(ctx, "setup", unit1Host, base)
	if err != nil {
		return nil, err
	}
	defer b.stop(un.proc)
	admin, err := b.adminClient(ctx, "http://"+un.addr)
	if err != nil {
		return nil, err
	}
	for _, t := range load.FleetTiers {
		tok, err := admin.CreateAuthToken(ctx, server.AuthTokenRequest{ID: "bench-" + t.Value, Tier: t.Value})
		if err != nil {
			return nil, fmt.Errorf("cannot create auth token: %w", err)
		}
		c.authTokens[t.Value] = tok.Token
	}
	b.logf("Generating and uploading patches")
	seen := map[string]bool{}
	for i, k := range load.FleetKernels {
		abi, flavour, err := server.SplitKernelRelease(k.Release)
		if err != nil {
			return nil, err
		}
		name := server.PatchName{Kernel: abi, Flavour: flavour, Version: k.PatchVersion, Architecture: k.Architecture}
		if seen[name.Filename()] {
			continue
		}
		seen[name.Filename()] = true
		moduleSize := 64 << 10
		if i == 0 {
			moduleSize = 2 << 20 // the download patch: a realistic 2 MB module
		}
		var buf bytes.Buffer
		meta := patchfile.Metadata(abi, flavour, k.PatchVersion, k.Architecture)
		if err := patchfile.Generate(&buf, meta, moduleSize); err != nil {
			return nil, err
		}
		data := buf.Bytes()
		if err := os.WriteFile(filepath.Join(c.patchDir, name.Filename()), data, 0o644); err != nil {
			return nil, err
		}
		if _, _, err := admin.UploadPatch(ctx, name.Filename(), bytes.NewReader(data), int64(len(data))); err != nil {
			return nil, fmt.Errorf("cannot upload %s: %w", name.Filename(), err)
		}
		if _, err := admin.PromotePatch(ctx, k.PatchVersion, "stable"); err != nil {
			return nil, fmt.Errorf("cannot promote %s: %w", k.PatchVersion, err)
		}
		if i == 0 {
			c.download = patchFile{name.Filename(), data}
		}
	}
	return c, nil
}

// pick chooses among weighted choices with r in [0, 1).
func pick(r float64, weights []float64) int {
	var total float64
	for _, w := range weights {
		total += w
	}
	r *= total
	for i, w := range weights {
		if r < w {
			return i
		}
		r -= w
	}
	return len(weights) - 1
}

// newMachines makes n machines with distinct ids, spread over tiers, kernels and states
// as the fleet fixture is. The same n gives the same machines.
func newMachines(n int) []*machine {
	rng := rand.New(rand.NewPCG(42, 8))
	tierW := weights(load.FleetTiers)
	stateW := weights(load.FleetStates)
	kernelW := make([]float64, len(load.FleetKernels))
	for i, k := range load.FleetKernels {
		kernelW[i] = k.Weight
	}
	now := time.Now().UTC().Truncate(time.Second)
	ms := make([]*machine, n)
	for i := range ms {
		k := load.FleetKernels[pick(rng.Float64(), kernelW)]
		st := server.Status{
			Kernel:        k.Release,
			Architecture:  k.Architecture,
			CPUModel:      "AMD EPYC 7B13",
			Uptime:        rng.Int64N(60 * 86400),
			ClientVersion: "10.8.3",
			PatchState:    load.FleetStates[pick(rng.Float64(), stateW)].Value,
		}
		st.BootTime = now.Add(-time.Duration(st.Uptime) * time.Second)
		if slices.Contains([]string{"applied", "unapplied", "needs-check", "apply-failed"}, st.PatchState) {
			st.PatchVersion = k.PatchVersion
		}
		body, _ := json.Marshal(st)
		ms[i] = &machine{
			id:   fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64()), // as /etc/machine-id
			tier: load.FleetTiers[pick(rng.Float64(), tierW)].Value,
			body: body,
			st:   st,
		}
	}
	return ms
}

func weights(ws []load.Weighted) []float64 {
	out := make([]float64, len(ws))
	for i, w := range ws {
		out[i] = w.Weight
	}
	return out
}

// series is one stack measured at increasing rates.
type series struct {
	name    string
	label   string
	url     string
	servers []*load.Process
	steps   []*step
	best    *step // highest sustained rate, nil if none
	max     *step // closed loop
	waits   []waitCount
}

// step is one measured run and the cores each component used meanwhile.
type step struct {
	res       *load.Result
	rate      float64 // target (open loop)
	retry     bool    // the second attempt at this rate
	sustained bool
	cpu       cpuUse
}

// checkIns measures check-ins through haproxy against the trivial handler (the ceiling),
// one unit and two units.
func (b *bench) checkIns(ctx context.Context, c *catalog) error {
	b.logf("Check-ins: starting two units, the trivial handler and haproxy")
	base := load.Unit{DSN: c.dsn}
	units := make([]*unit, 2)
	for i, host := range []string{unit1Host, unit2Host} {
		u := base
		u.URLTemplate = "http://" + haproxyHost + "/patches/{filename}"
		un, err := b.startUnit(ctx, fmt.Sprintf("unit%d", i+1), host, u)
		if err != nil {
			return err
		}
		defer b.stop(un.proc)
		units[i] = un
	}
	triv, err := b.startTrivial(ctx, trivialHost)
	if err != nil {
		return err
	}
	defer b.stop(triv.proc)
	px, err := b.startHAProxy(ctx, "haproxy-checkins", []load.Frontend{
		{Name: "trivial", Servers: []string{triv.addr}},
		{Name: "one", Servers: []string{units[0].addr}},
		{Name: "two", Servers: []string{units[0].addr, units[1].addr}},
	})
	if err != nil {
		return err
	}
	defer b.stop(px.proc)

	machines := newMachines(b.size.machines)
	b.logf("Enabling %d machines through haproxy", len(machines))
	enable, err := b.enable(ctx, px.urls["two"], c, machines)
	if err != nil {
		return err
	}

	db, err := sql.Open("postgres", c.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	before, err := countReports(ctx, db)
	if err != nil {
		return err
	}
	walBefore, err := readWAL(ctx, db)
	if err != nil {
		return err
	}
	hc := load.NewHTTPClient(b.size.openConc)
	all := []*series{
		{name: "trivial", label: "trivial handler (ceiling)", url: px.urls["trivial"], servers: []*load.Process{triv.proc}},
		{name: "one", label: "1 unit", url: px.urls["one"], servers: []*load.Process{units[0].proc}},
		{name: "two", label: "2 units", url: px.urls["two"], servers: []*load.Process{units[0].proc, units[1].proc}},
	}
	var persisted int
	for _, s := range all {
		if err := b.runSeries(ctx, s, hc, px.proc, machines); err != nil {
			return err
		}
		if s.name != "trivial" {
			for _, st := range append(slices.Clone(s.steps), s.max) {
				if st != nil {
					persisted += st.res.TotalOK
				}
			}
		}
		hc.CloseIdleConnections()
	}
	after, err := countReports(ctx, db)
	if err != nil {
		return err
	}
	walAfter, err := readWAL(ctx, db)
	if err != nil {
		return err
	}
	pool := b.pool
	if pool == 0 {
		pool = base.Config().Database.ConnectionPoolMax
	}
	b.checkInReport(all, enable, after-before, persisted, databaseEvidence(walBefore, walAfter, after-before, all[1].waits, pool))
	if b.experiments {
		results, err := b.runExperiments(ctx, c, machines)
		if err != nil {
			return fmt.Errorf("experiments: %w", err)
		}
		b.report.Sections = append(b.report.Sections, experimentSection(results, b.size.maxConc))
	}
	if b.profile {
		for _, s := range all[1:] {
			if s.best == nil || s.best.rate < targetCheckIns || s.best.res.Throughput() < 0.5*rateOf(all[0].best) {
				b.profileCheckIns(ctx, c, machines)
				break
			}
		}
	}
	return nil
}

func rateOf(s *step) float64 {
	if s == nil {
		return 0
	}
	return s.res.Throughput()
}

func countReports(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM machine_reports`).Scan(&n); err != nil {
		return 0, fmt.Errorf("cannot count machine reports: %w", err)
	}
	return n, nil
}

// enable enrols every machine through the client API, 16 at a time.
func (b *bench) enable(ctx context.Context, url string, c *catalog, machines []*machine) (*load.Result, error) {
	cl, err := client.New(url, client.WithHTTPClient(load.NewHTTPClient(16)))
	if err != nil {
		return nil, err
	}
	res, err := load.Run(ctx, load.Plan{
		Mode: load.ClosedLoop, Concurrency: 16, Duration: 10 * time.Minute, MaxRequests: len(machines), Timeout: 30 * time.Second,
	}, func(ctx context.Context, i int) (int64, error) {
		m := machines[i]
		st := m.st
		token, _, err := cl.Enable(ctx, m.id, c.authTokens[m.tier], &st)
		m.token = token
		return 0, err
	})
	if err != nil {
		return nil, err
	}
	if res.OK != len(machines) {
		return nil, fmt.Errorf("cannot enable machines: %d of %d enabled (%s)", res.OK, len(machines), res.ErrorSummary())
	}
	b.logf("Enabled %d machines in %s (%.0f/s, p99 %s)", res.OK, res.Elapsed.Round(time.Millisecond), res.Throughput(), load.Millis(res.Latency.Quantile(0.99)))
	return res, nil
}

// checkInFunc returns the request of a check-in of machine i mod len(machines) to url.
func checkInFunc(hc *http.Client, url string, machines []*machine) load.DoFunc {
	return func(ctx context.Context, i int) (int64, error) {
		m := machines[i%len(machines)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/client/"+m.id+"/updates", bytes.NewReader(m.body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+m.token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "lpbench")
		return load.Send(hc, req, http.StatusOK)
	}
}

// runSeries steps through the rates until one is not sustained, then runs the closed loop.
func (b *bench) runSeries(ctx context.Context, s *series, hc *http.Client, haproxy *load.Process, machines []*machine) error {
	do := checkInFunc(hc, s.url, machines)
	offset := 0 // each step starts where the last stopped, so machines take turns
	for _, rate := range b.size.rates {
		plan := load.Plan{Mode: load.OpenLoop, Rate: rate, Concurrency: b.size.openConc, Warmup: b.size.warmup, Duration: b.size.step}
		var st *step
		// A step that fails is tried once more after a pause, so that one stall of a shared
		// machine does not end the series; both attempts are reported.
		for attempt := range 2 {
			var err error
			st, err = b.measure(ctx, plan, s.servers, haproxy, func(ctx context.Context, i int) (int64, error) { return do(ctx, offset+i) })
			if err != nil {
				return err
			}
			offset += st.res.Sent
			st.rate, st.retry = rate, attempt > 0
			r := st.res
			st.sustained = r.ErrorCount() == 0 && r.Latency.Quantile(0.99) < p99Limit && r.Throughput() >= 0.97*rate
			s.steps = append(s.steps, st)
			b.logf("Check-ins %-8s %6.0f/s: achieved %7.0f/s, p50 %s, p99 %s, errors %d %s", s.name, rate, r.Throughput(),
				load.Millis(r.Latency.Quantile(0.5)), load.Millis(r.Latency.Quantile(0.99)), r.ErrorCount(), r.ErrorSummary())
			if st.sustained {
				break
			}
			if err := pause(ctx, 2*time.Second); err != nil {
				return err
			}
		}
		if !st.sustained {
			break
		}
		s.best = st
		if err := pause(ctx, time.Second); err != nil {
			return err
		}
	}
	if err := pause(ctx, time.Second); err != nil {
		return err
	}
	plan := load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.maxConc, Warmup: b.size.warmup, Duration: b.size.maxDur}
	var waits *waitSampler
	if s.name == "one" {
		waits = b.sampleWaits(ctx, "livepatch")
	}
	st, err := b.measure(ctx, plan, s.servers, haproxy, do)
	if waits != nil {
		s.waits = waits.stop()
	}
	if err != nil {
		return err
	}
	s.max = st
	b.logf("Check-ins %-8s max (closed loop, %d workers): %7.0f/s, p50 %s, p99 %s, errors %d %s", s.name, b.size.maxConc, st.res.Throughput(),
		load.Millis(st.res.Latency.Quantile(0.5)), load.Millis(st.res.Latency.Quantile(0.99)), st.res.ErrorCount(), st.res.ErrorSummary())
	return pause(ctx, time.Second)
}

// pause waits d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// cpuUse is the cores each component used during a measured period.
type cpuUse struct{ gen, proxy, server, pg float64 }

func (c cpuUse) String() string {
	return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f", c.gen, c.proxy, c.server, c.pg)
}

type cpuSnap struct {
	at                     time.Time
	gen, proxy, server, pg int64
}

func (b *bench) snap(servers []*load.Process, haproxy *load.Process) cpuSnap {
	s := cpuSnap{at: time.Now(), gen: load.ProcessCPU(os.Getpid()), pg: load.TreeCPU(b.pg.Process().Pid())}
	if haproxy != nil {
		s.proxy = load.TreeCPU(haproxy.Pid())
	}
	for _, p := range servers {
		s.server += load.TreeCPU(p.Pid())
	}
	return s
}

func (a cpuSnap) cores(z cpuSnap) cpuUse {
	secs := z.at.Sub(a.at).Seconds() * load.ClockTicks
	if secs <= 0 {
		return cpuUse{}
	}
	return cpuUse{float64(z.gen-a.gen) / secs, float64(z.proxy-a.proxy) / secs, float64(z.server-a.server) / secs, float64(z.pg-a.pg) / secs}
}

// measure runs plan with do and the CPU used by each component during the measured
// period (the warm-up is measured separately and left out).
func (b *bench) measure(ctx context.Context, plan load.Plan, servers []*load.Process, haproxy *load.Process, do load.DoFunc) (*step, error) {
	type out struct {
		res *load.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := load.Run(ctx, plan, do)
		done <- out{res, err}
	}()
	var first, last cpuSnap
	if err := pause(ctx, plan.Warmup); err != nil {
		o := <-done
		return nil, errorsJoin(err, o.err)
	}
	first = b.snap(servers, haproxy)
	o := <-done
	last = b.snap(servers, haproxy)
	if o.err != nil {
		return nil, o.err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return &step{res: o.res, cpu: first.cores(last)}, nil
}

func errorsJoin(a, b error) error {
	if b == nil {
		return a
	}
	return fmt.Errorf("%w (%v)", a, b)
}

// checkInReport adds the check-in rows and details to the report.
func (b *bench) checkInReport(all []*series, enable *load.Result, rows, persisted int, evidence string) {
	ceiling := all[0]
	ceilRate := rateOf(ceiling.best)
	ceilText := "none sustained"
	if ceiling.best != nil {
		ceilText = fmt.Sprintf("%.0f/s (%.0f/s target)", ceilRate, ceiling.best.rate)
	}
	for i, s := range all[1:] {
		id := []string{"1a", "1b"}[i]
		result := "none sustained"
		met := false
		if s.best != nil {
			r := s.best.res
			result = fmt.Sprintf("%.0f/s (%.0f/s target), p50 %s, p99 %s, 0 errors", r.Throughput(), s.best.rate,
				load.Millis(r.Latency.Quantile(0.5)), load.Millis(r.Latency.Quantile(0.99)))
			met = s.best.rate >= targetCheckIns && r.Throughput() >= 0.5*ceilRate
		}
		b.report.Summary = append(b.report.Summary, load.Row{
			ID: id, Measurement: "check-ins, " + s.label + ": highest sustained rate",
			Result: result, Ceiling: ceilText + ", trivial handler", Ratio: load.Ratio(rateOf(s.best), ceilRate),
			Target: "≥ 3,000/s at p99 < 100 ms, ≥ 0.5 of ceiling", Met: load.Verdict(met),
		})
	}
	for i, s := range all[1:] {
		id := []string{"1c", "1d"}[i]
		b.report.Summary = append(b.report.Summary, load.Row{
			ID: id, Measurement: fmt.Sprintf("check-ins, %s: max mode (closed loop, %d workers)", s.label, b.size.maxConc),
			Result:  maxText(s.max),
			Ceiling: maxText(ceiling.max) + ", trivial handler", Ratio: load.Ratio(rateOf(s.max), rateOf(ceiling.max)),
			Target: "-", Met: "-",
		})
	}
	b.report.Summary = append(b.report.Summary, load.Row{
		ID: "1e", Measurement: "check-ins persisted: new rows in machine_reports vs successful check-ins",
		Result: fmt.Sprintf("%d rows, %d check-ins", rows, persisted), Ceiling: "-", Ratio: "-",
		Target: "equal", Met: load.Verdict(rows == persisted),
	})

	sec := load.Section{
		Title: "1. Check-ins: every step",
		Text: fmt.Sprintf(`Each row is one step: the target rate, what was achieved, latency from the moment each
request was due, errors, and the cores each component used (gen / px / srv / pg). The steps stop at
the first rate not sustained; "max" is the closed loop. Enabling the %d machines beforehand
(through haproxy to both units, 16 at a time): %.0f/s, p99 %s.`,
			enable.OK, enable.Throughput(), load.Millis(enable.Latency.Quantile(0.99))) + "\n\n" + evidence,
		Header: []string{"stack", "target/s", "achieved/s", "p50", "p99", "max", "errors", "cores gen / px / srv / pg", "sustained"},
	}
	for _, s := range all {
		for _, st := range s.steps {
			target := fmt.Sprintf("%.0f", st.rate)
			if st.retry {
				target += " (again)"
			}
			sec.Rows = append(sec.Rows, stepRow(s.label, target, st, load.Verdict(st.sustained)))
		}
		if s.max != nil {
			sec.Rows = append(sec.Rows, stepRow(s.label, "max", s.max, "-"))
		}
	}
	b.report.Sections = append(b.report.Sections, sec)
}

func maxText(s *step) string {
	if s == nil {
		return "-"
	}
	r := s.res
	t := fmt.Sprintf("%.0f/s, p50 %s, p99 %s", r.Throughput(), load.Millis(r.Latency.Quantile(0.5)), load.Millis(r.Latency.Quantile(0.99)))
	if n := r.ErrorCount(); n > 0 {
		t += fmt.Sprintf(", %d errors", n)
	}
	return t
}

func stepRow(label, target string, st *step, verdict string) []string {
	r := st.res
	errs := "0"
	if n := r.ErrorCount(); n > 0 {
		errs = strings.ReplaceAll(r.ErrorSummary(), "|", "/")
	}
	return []string{label, target, fmt.Sprintf("%.0f", r.Throughput()), load.Millis(r.Latency.Quantile(0.5)),
		load.Millis(r.Latency.Quantile(0.99)), load.Millis(r.Latency.Max()), errs, st.cpu.String(), verdict}
}
