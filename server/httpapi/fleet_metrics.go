package httpapi

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepatch-onprem/livepatch/server"
)

// Fleet metrics: machine counts by tier, patch state and kernel. Counting needs a scan of
// the machines table, so a scrape never runs it: it answers the last counts, and when they
// are older than FleetMetricsInterval asks Run to count again. A unit nobody scrapes never
// counts; one scraped every 15s counts once per interval.
const (
	// fleetTopKernels bounds the kernel label: the most used kernels by name, every other
	// kernel under "other", so a fleet of many kernels cannot blow up the series count.
	fleetTopKernels = 20
	// fleetCountTimeout bounds one count.
	fleetCountTimeout = 30 * time.Second
)

// fleetSnapshot is one count of the fleet and when it was taken.
type fleetSnapshot struct {
	counts server.FleetCounts
	at     time.Time
}

// fleetCollector exposes the last fleet count to Prometheus.
type fleetCollector struct {
	interval time.Duration
	now      func() time.Time
	last     atomic.Pointer[fleetSnapshot]
	wanted   chan struct{} // a scrape found the count old: Run counts again

	byTier, byState, byKernel, age *prometheus.Desc
}

func newFleetCollector(interval time.Duration, now func() time.Time) *fleetCollector {
	return &fleetCollector{
		interval: interval,
		now:      now,
		wanted:   make(chan struct{}, 1),
		byTier: prometheus.NewDesc("livepatch_server_machines_by_tier",
			"Enrolled machines per tier (counted at most every fleet metrics interval).", []string{"tier"}, nil),
		byState: prometheus.NewDesc("livepatch_server_machines_by_patch_state",
			"Enrolled machines per patch state; not-reported: no check-in yet.", []string{"state"}, nil),
		byKernel: prometheus.NewDesc("livepatch_server_machines_by_kernel",
			"Enrolled machines per kernel: the 20 most used, and other.", []string{"kernel"}, nil),
		age: prometheus.NewDesc("livepatch_server_machines_count_age_seconds",
			"Age of the machine counts.", nil, nil),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.byTier
	ch <- c.byState
	ch <- c.byKernel
	ch <- c.age
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.last.Load()
	if snap == nil || c.now().Sub(snap.at) >= c.interval {
		select {
		case c.wanted <- struct{}{}:
		default:
		}
	}
	if snap == nil {
		return
	}
	for _, s := range []struct {
		desc   *prometheus.Desc
		counts map[string]int
	}{{c.byTier, snap.counts.ByTier}, {c.byState, snap.counts.ByState}, {c.byKernel, snap.counts.ByKernel}} {
		for label, n := range s.counts {
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), label)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, c.now().Sub(snap.at).Seconds())
}

// refresh counts the fleet when the last count is old.
func (c *fleetCollector) refresh(ctx context.Context, store server.Store) error {
	if snap := c.last.Load(); snap != nil && c.now().Sub(snap.at) < c.interval {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, fleetCountTimeout)
	defer cancel()
	counts, err := store.FleetCounts(ctx, fleetTopKernels)
	if err != nil {
		return err
	}
	c.last.Store(&fleetSnapshot{counts: counts, at: c.now()})
	return nil
}
