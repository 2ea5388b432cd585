package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livepatch-onprem/livepatch/server"
)

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

type metrics struct {
	requests    *prometheus.HistogramVec
	checkins    *prometheus.CounterVec
	downloads   prometheus.Counter
	dbErrors    prometheus.Counter
	overload    prometheus.Counter
	authFails   *prometheus.CounterVec
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "livepatch_server_http_request_duration_seconds",
			Help:    "HTTP request durations by route pattern, method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"handler", "method", "code"}),
		checkins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepatch_server_checkins_total",
			Help: "Machine check-ins by outcome (patch offered or not).",
		}, []string{"outcome"}),
		downloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepatch_server_patch_downloads_total",
			Help: "Patch file downloads started.",
		}),
		dbErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepatch_server_database_errors_total",
			Help: "Requests that failed because the database was unavailable.",
		}),
		overload: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livepatch_server_httpgovernor_request_overload_total",
			Help: "Requests refused because the concurrency and burst limits were full.",
		}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepatch_server_http_auth_failures_total",
			Help: "Failed authentications by token type.",
		}, []string{"token_type"}),
	}
	m.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepatch_server_patch_cache_hits_total",
		Help: "Patch downloads served from the in-memory patch cache.",
	})
	m.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "livepatch_server_patch_cache_misses_total",
		Help: "Patch downloads that had to read patch storage.",
	})
	// Every label value exists from the start, so rates and alerts see zeros rather than
	// absent series.
	for _, o := range []string{"patch", "none"} {
		m.checkins.WithLabelValues(o)
	}
	for _, t := range []string{"auth", "basic", "session", "machine", "sync", "resource"} {
		m.authFails.WithLabelValues(t)
	}
	reg.MustRegister(m.requests, m.checkins, m.downloads, m.dbErrors, m.overload, m.authFails, m.cacheHits, m.cacheMisses,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// healthCollector reports, at each scrape, what /debug/status checks: whether the
// database answers and how many schema migrations are pending. Each scrape costs one
// ping and one schema query, within a deadline shorter than a scrape timeout.
type healthCollector struct {
	store   server.Store
	dbUp    *prometheus.Desc
	pending *prometheus.Desc
}

func newHealthCollector(store server.Store) *healthCollector {
	return &healthCollector{
		store: store,
		dbUp: prometheus.NewDesc("livepatch_server_database_up",
			"1 when this unit's database answered a ping at the scrape, else 0.", nil, nil),
		pending: prometheus.NewDesc("livepatch_server_schema_migrations_pending",
			"Schema migrations this unit's server knows that the database lacks (run the schema-upgrade action); absent when the database does not answer.", nil, nil),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dbUp
	ch <- c.pending
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), healthScrapeTimeout)
	defer cancel()
	up := 0.0
	if c.store.Ping(ctx) == nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.dbUp, prometheus.GaugeValue, up)
	if current, latest, err := c.store.SchemaVersion(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(max(latest-current, 0)))
	}
}

// healthScrapeTimeout bounds the database checks of one scrape (Prometheus's default
// scrape timeout is 10 s).
const healthScrapeTimeout = 3 * time.Second

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}
