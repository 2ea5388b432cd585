package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/load"
)

// experiment is a change to the unit's configuration that a finding proposes, measured
// beside the default in the same run: the "after" of a before/after.
type experiment struct {
	name      string
	pool      int    // connection-pool-max
	pgOptions string // options of the unit's database connections
	why       string
}

var experiments = []experiment{
	{name: "defaults", why: "the configuration measured above, again, for comparison"},
	{name: "connection-pool-max 40", pool: 40,
		why: "more connections, so more commits share each WAL flush"},
	{name: "asynchronous commit of check-ins", pgOptions: "-c synchronous_commit=off",
		why: "the check-in's commit does not wait for its WAL flush (the proposed fix sets it for the check-in statement only; here the whole connection has it)"},
}

// experimentRounds is how often each configuration is measured, in turn: the best round
// counts, so that a burst of other work on a shared machine does not decide the comparison.
const experimentRounds = 2

type experimentResult struct {
	exp   experiment
	max   *step
	open  *step
	waits []waitCount
}

// runExperiments measures one unit under each experiment's configuration: the closed-loop
// maximum and the target rate in open loop.
func (b *bench) runExperiments(ctx context.Context, c *catalog, machines []*machine) ([]*experimentResult, error) {
	best := make([]*experimentResult, len(experiments))
	for round := range experimentRounds {
		for i, e := range experiments {
			b.logf("Experiment %d/%d: %s", round+1, experimentRounds, e.name)
			u := load.Unit{DSN: c.dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}", PoolMax: e.pool}
			if e.pgOptions != "" {
				u.DSN += "&options=" + url.QueryEscape(e.pgOptions)
			}
			name := fmt.Sprintf("exp%d-%d", i+1, round+1)
			un, err := b.startUnit(ctx, name, unit3Host, u)
			if err != nil {
				return nil, err
			}
			px, err := b.startHAProxy(ctx, "haproxy-"+name, []load.Frontend{{Name: "exp", Servers: []string{un.addr}}})
			if err != nil {
				b.stop(un.proc)
				return nil, err
			}
			r, err := b.runExperiment(ctx, e, px, un, machines)
			b.stop(px.proc, un.proc)
			if err != nil {
				return nil, err
			}
			if best[i] == nil {
				best[i] = r
				continue
			}
			if r.max.res.Throughput() > best[i].max.res.Throughput() {
				best[i].max, best[i].waits = r.max, r.waits
			}
			if better(r.open, best[i].open) {
				best[i].open = r.open
			}
		}
	}
	return best, nil
}

// better reports whether open-loop step a beats b: sustained first, then fewer errors,
// then lower p99.
func better(a, b *step) bool {
	if a.sustained != b.sustained {
		return a.sustained
	}
	if a.res.ErrorCount() != b.res.ErrorCount() {
		return a.res.ErrorCount() < b.res.ErrorCount()
	}
	return a.res.Latency.Quantile(0.99) < b.res.Latency.Quantile(0.99)
}

func (b *bench) runExperiment(ctx context.Context, e experiment, px *proxy, un *unit, machines []*machine) (*experimentResult, error) {
	hc := load.NewHTTPClient(b.size.openConc)
	defer hc.CloseIdleConnections()
	do := checkInFunc(hc, px.urls["exp"], machines)
	r := &experimentResult{exp: e}
	waits := b.sampleWaits(ctx, "livepatch")
	st, err := b.measure(ctx, load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.maxConc, Warmup: b.size.warmup, Duration: b.size.maxDur},
		[]*load.Process{un.proc}, px.proc, do)
	r.waits = waits.stop()
	if err != nil {
		return nil, err
	}
	r.max = st
	if err := pause(ctx, time.Second); err != nil {
		return nil, err
	}
	offset := st.res.Sent + 1000
	st, err = b.measure(ctx, load.Plan{Mode: load.OpenLoop, Rate: targetCheckIns, Concurrency: b.size.openConc, Warmup: b.size.warmup, Duration: b.size.step},
		[]*load.Process{un.proc}, px.proc, func(ctx context.Context, i int) (int64, error) { return do(ctx, offset+i) })
	if err != nil {
		return nil, err
	}
	st.rate = targetCheckIns
	res := st.res
	st.sustained = res.ErrorCount() == 0 && res.Latency.Quantile(0.99) < p99Limit && res.Throughput() >= 0.97*targetCheckIns
	r.open = st
	b.logf("Experiment %s: max %.0f/s (p99 %s); %d/s open loop: achieved %.0f/s, p99 %s, errors %d", e.name, r.max.res.Throughput(),
		load.Millis(r.max.res.Latency.Quantile(0.99)), targetCheckIns, res.Throughput(), load.Millis(res.Latency.Quantile(0.99)), res.ErrorCount())
	return r, pause(ctx, time.Second)
}

// experimentSection reports the experiments.
func experimentSection(results []*experimentResult, maxConc int) load.Section {
	sec := load.Section{
		Title: "1. Check-ins: the proposed fixes, measured (experiments)",
		Text: fmt.Sprintf(`One unit under the configurations that the findings propose, beside the defaults, in the
same run (same database, same machines): the closed loop (%d workers) and the target rate of
%d/s in open loop. Each configuration is measured %d times in turn and the best round is shown, so
that a burst of other work on a shared machine does not decide the comparison. "Connections" is
what the unit's database connections were doing during the closed loop (pg_stat_activity,
sampled every 10 ms).`, maxConc, targetCheckIns, experimentRounds),
		Header: []string{"unit configuration", "max/s", "max p50 / p99", fmt.Sprintf("%d/s: achieved, p99, errors", targetCheckIns), "sustained", "connections"},
	}
	for _, r := range results {
		var w []string
		for _, c := range r.waits {
			if c.share >= 0.02 {
				w = append(w, fmt.Sprintf("%s %.0f%%", c.what, 100*c.share))
			}
		}
		open := r.open.res
		sec.Rows = append(sec.Rows, []string{
			r.exp.name + ": " + r.exp.why,
			fmt.Sprintf("%.0f", r.max.res.Throughput()),
			load.Millis(r.max.res.Latency.Quantile(0.5)) + " / " + load.Millis(r.max.res.Latency.Quantile(0.99)),
			fmt.Sprintf("%.0f/s, %s, %d", open.Throughput(), load.Millis(open.Latency.Quantile(0.99)), open.ErrorCount()),
			load.Verdict(r.open.sustained),
			strings.Join(w, ", "),
		})
	}
	return sec
}
