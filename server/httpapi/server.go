// Package httpapi serves the livepatch HTTP API: the admin API, the machine-facing client
// API, patch downloads and the operations endpoints. Every route is declared once, in
// routes, with the access level that guards it; every error reaches the caller through
// writeError, the one place that maps server.Error codes to HTTP statuses.
package httpapi

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Options are what the API needs besides the store and the patch files.
type Options struct {
	Version          string
	URLTemplate      string
	BasicUsers       []string // user:bcrypt-hash
	SessionTTL       time.Duration
	ConcurrencyLimit int
	BurstLimit       int
	// TrustedProxies are the peers whose X-Forwarded-For is believed (haproxy); from any
	// other peer the header is ignored.
	TrustedProxies []netip.Prefix
	// FleetMetricsInterval is how old the machine counts of /metrics may get (default
	// 5m): a scrape of older counts has them counted again.
	FleetMetricsInterval time.Duration
	// CatalogRefresh is how often the in-memory catalog checks the database for changes
	// made by other units (default 2s).
	CatalogRefresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives request errors and security events (default slog.Default()).
	Logger *slog.Logger
	// Registry receives the metrics (default a new registry served at /metrics).
	Registry *prometheus.Registry
	// PatchCacheSize, when positive, keeps up to that many patch files in memory for
	// downloads, each for PatchCacheTTL (0: until evicted).
	PatchCacheSize int
	PatchCacheTTL  time.Duration
	// Sync drives this server's upstream sync for the admin sync routes (package
	// upstream); nil: sync status says disabled and triggers are refused.
	Sync Syncer
	// SyncTiers says that this server's tiers mirror its upstream's (patch-sync.enabled
	// and patch-sync.sync-tiers): sync places the patches, so the admin API refuses to
	// create or delete tiers and to promote patches. Blocking stays allowed.
	SyncTiers bool
	// SigningKey signs the patch lists this server serves to downstream servers, and the
	// patches it originates (see server.PatchSignature) in those lists and in the offers
	// of check-ins; nil: this server is not a sync upstream and /v1/sync/ answers 503.
	SigningKey ed25519.PrivateKey
	// ResourceTokens checks an Ubuntu Pro resource token with the contracts server
	// (package upstream); nil: only sync tokens may sync from this server. It runs holding
	// no API slot, so it must bound its own time and concurrency.
	ResourceTokens func(ctx context.Context, token string) error
	// ContractsHealth reports the contracts server that ResourceTokens asks, for
	// /debug/status; nil: none checks resource tokens.
	ContractsHealth func() server.ContractsHealth
	// RequestTimeout bounds reading an API request's body, and writing its answer
	// (server.request-timeout, default 30s).
	RequestTimeout time.Duration
	// UploadTimeout bounds reading a patch upload (server.upload-timeout, default 10m).
	UploadTimeout time.Duration
	// StallTimeout bounds each write of a download (server.stall-timeout, default 30s).
	StallTimeout time.Duration
	// DownloadLimit bounds the downloads served at once (server.download-limit, default
	// 200); beyond it a download gets 503 with Retry-After.
	DownloadLimit int
	// DownloadRedirect, when set, answers a download of a recorded patch with a redirect
	// to the URL it returns (patch-storage.redirect-downloads: a presigned URL of the
	// object store) instead of streaming the file; see redirect.go.
	DownloadRedirect func(ctx context.Context, filename string) (*url.URL, error)
}

// Server is the HTTP API. Create it with New, start its background refresh with Run, and
// serve it as an http.Handler.
type Server struct {
	store   server.Store
	files   server.PatchFiles
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	routes  []Route
	users   map[string]string // user -> bcrypt hash
	basic   *basicCache
	catalog *catalogCache
	limit   *limiter
	metrics *metrics
	fleet   *fleetCollector
	cache   *fileCache // nil when the patch cache is off
	lockout *lockout
	logKey  [32]byte // keys the user-ref of unknown user names in security events

	downloads     semaphore   // download slots (Options.DownloadLimit)
	machineTokens *tokenCache // machine tokens verified recently

	// rollouts holds the rollout state the check-in decides from (rollout.go).
	rollouts *rolloutCache
}

// Route is one entry of the route table.
type Route struct {
	Pattern string // "METHOD /path"
	Access  Access
}

// Access is who may call a route.
type Access int

// Access levels.
const (
	// publicAccess routes answer anyone (operations, patch downloads).
	publicAccess Access = iota
	// basicAccess routes need admin basic auth (login).
	basicAccess
	// adminAccess routes need an admin session token or basic auth.
	adminAccess
	// authTokenAccess routes need a client auth token as bearer (enable).
	authTokenAccess
	// machineAccess routes need the machine token of the machine named in the path.
	machineAccess
	// syncAccess routes need a sync token or a resource token (the sync issue).
	syncAccess
)

func (a Access) String() string {
	return [...]string{"public", "basic", "admin", "auth-token", "machine", "sync"}[a]
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// New returns an API serving store and files.
func New(store server.Store, files server.PatchFiles, opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 240 * time.Hour
	}
	if opts.CatalogRefresh <= 0 {
		opts.CatalogRefresh = 2 * time.Second
	}
	opts.FleetMetricsInterval = cmp.Or(opts.FleetMetricsInterval, 5*time.Minute)
	if opts.ConcurrencyLimit <= 0 {
		opts.ConcurrencyLimit = 50
	}
	opts.RequestTimeout = cmp.Or(opts.RequestTimeout, 30*time.Second)
	opts.UploadTimeout = cmp.Or(opts.UploadTimeout, 10*time.Minute)
	opts.StallTimeout = cmp.Or(opts.StallTimeout, 30*time.Second)
	opts.DownloadLimit = cmp.Or(opts.DownloadLimit, 200)
	s := &Server{
		store:   store,
		files:   files,
		opts:    opts,
		log:     opts.Logger,
		mux:     http.NewServeMux(),
		users:   map[string]string{},
		basic:   newBasicCache(),
		limit:   newLimiter(opts.ConcurrencyLimit, opts.BurstLimit),
		metrics: newMetrics(opts.Registry),

		downloads:     make(semaphore, opts.DownloadLimit),
		machineTokens: newTokenCache(machineTokenCacheSize, machineTokenCacheTTL),
	}
	opts.Registry.MustRegister(newHealthCollector(store))
	for _, e := range opts.BasicUsers {
		user, hash, err := config.ParseBasicUser(e)
		if err != nil {
			return nil, fmt.Errorf("cannot use basic users: %w", err)
		}
		s.users[user] = hash
	}
	s.lockout = newLockout(opts.Now)
	rand.Read(s.logKey[:])
	s.catalog = newCatalogCache(store, opts.SigningKey)
	s.rollouts = newRolloutCache(store, s.catalog, opts.Logger, opts.Registry)
	if opts.PatchCacheSize > 0 {
		s.cache = newFileCache(opts.PatchCacheSize, opts.PatchCacheTTL, opts.Now)
	}
	s.fleet = newFleetCollector(opts.FleetMetricsInterval, opts.Now)
	opts.Registry.MustRegister(s.fleet)
	s.register()
	return s, nil
}

// Handle adds a route to the table; other packages (upstream sync) extend the API with it.
// It must be called before the server handles requests.
func (s *Server) Handle(pattern string, access Access, h func(w http.ResponseWriter, r *http.Request) error) {
	s.handle(pattern, access, h)
}

// Routes returns the route table in declaration order.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Run keeps the catalog current until ctx ends: it loads it now and reloads it whenever the
// database's catalog version moves. It also counts the fleet for /metrics when a scrape
// finds the counts old.
func (s *Server) Run(ctx context.Context) error {
	if err := s.catalog.refresh(ctx); err != nil {
		s.log.Warn("Cannot load patch catalog", "error", err)
	}
	s.refreshRollouts(ctx)
	defer s.flushRollouts()
	t := time.NewTicker(s.opts.CatalogRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.catalog.refresh(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("Cannot refresh patch catalog", "error", err)
			}
			s.refreshRollouts(ctx)
		case <-s.fleet.wanted:
			if err := s.fleet.refresh(ctx, s.store); err != nil && ctx.Err() == nil {
				s.log.Warn("Cannot count machines for the fleet metrics", "error", err)
			}
		}
	}
}

// handle declares a route. Admission (see admission.go) runs before h; errors h returns
// go to writeError.
func (s *Server) handle(pattern string, access Access, h handlerFunc) {
	s.routes = append(s.routes, Route{Pattern: pattern, Access: access})
	_, path, _ := strings.Cut(pattern, " ")
	class := routeClasses[pattern]
	bodyLimit := cmp.Or(bodyLimits[pattern], maxJSONBody)
	limited := access != publicAccess || strings.HasPrefix(path, "/v1/")
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			s.metrics.requests.WithLabelValues(path, r.Method, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
		}()
		s.setDeadlines(w, class)
		if err := checkNUL(r); err != nil {
			s.writeError(rec, r, err)
			return
		}
		admin := access == basicAccess || access == adminAccess
		if admin {
			// Browsers send cached basic credentials along with requests other sites make:
			// refuse those before looking at any credential.
			if err := s.checkOrigin(r); err != nil {
				s.securityEvent(r, "admin_request_refused", "", "reason", server.ErrorMessage(err))
				s.writeError(rec, r, err)
				return
			}
		}
		ctx, err := s.admit(r, access)
		if err != nil {
			s.writeError(rec, r, err)
			return
		}
		if admin {
			if err := checkBodyType(r, bodyTypes[pattern]); err != nil {
				s.writeError(rec, r, err)
				return
			}
		}
		if ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		var out http.ResponseWriter = rec
		slot := limited
		switch class {
		case jsonRoute:
			if err := readBody(rec, r, bodyLimit); err != nil {
				s.writeError(rec, r, err)
				return
			}
		case downloadRoute:
			release, ok := s.downloads.tryAcquire()
			if !ok {
				rec.Header().Set("Retry-After", retryAfter)
				s.writeError(rec, r, errDownloadsBusy)
				return
			}
			defer release()
			out = &progressWriter{ResponseWriter: rec, rc: http.NewResponseController(w), stall: s.opts.StallTimeout}
			slot = false // downloads have their own bound
		}
		if slot {
			release, err := s.acquire(r.Context())
			if err != nil {
				if server.ErrorCode(err) == server.CodeTooManyRequests {
					rec.Header().Set("Retry-After", "1")
				}
				s.writeError(rec, r, err)
				return
			}
			defer release()
		}
		if err := h(out, r); err != nil {
			s.writeError(rec, r, err)
		}
	}))
}

// crossOrigin refuses unsafe requests that a browser marks as coming from another site
// (Sec-Fetch-Site) or from another origin than the server's host (Origin).
var crossOrigin = http.NewCrossOriginProtection()

// checkOrigin refuses the unsafe admin requests a web page of another site, visited by an
// administrator, makes with the browser's cached credentials. The admin CLI and scripts
// send neither Origin nor Sec-Fetch-Site.
func (s *Server) checkOrigin(r *http.Request) error {
	if err := crossOrigin.Check(r); err != nil {
		return server.Errorf(server.CodeForbidden, "cross-origin request refused: admin requests from web pages of other sites are not accepted")
	}
	return nil
}

// checkBodyType refuses admin request bodies of other types than the route takes: the
// types an HTML form or a simple cross-site fetch sends (text/plain, form data) among
// them, so that no page can send an admin action without a CORS preflight.
// want is what the route takes (bodyTypes), nil for JSON.
func checkBodyType(r *http.Request, want []string) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if want == nil {
		want = []string{"application/json"}
	}
	ct := r.Header.Get("Content-Type")
	hasBody := r.ContentLength != 0 || len(r.TransferEncoding) > 0
	if ct == "" && !hasBody {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(want, mt) {
		return server.Errorf(server.CodeUnsupportedType, "request body must be %s (Content-Type), not %.64q", strings.Join(want, " or "), ct)
	}
	return nil
}

// checkNUL refuses a path or query with a NUL byte, which no text column can hold, before
// any handler runs. Values of JSON bodies the database refuses come back from the store as
// invalid errors (package postgres).
func checkNUL(r *http.Request) error {
	if strings.IndexByte(r.URL.Path, 0) >= 0 || strings.Contains(r.URL.RawQuery, "%00") || strings.IndexByte(r.URL.RawQuery, 0) >= 0 {
		return server.Errorf(server.CodeInvalid, "the request path or query has a NUL character")
	}
	return nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusOf maps error codes to HTTP statuses; it is the only such mapping.
var statusOf = map[server.Code]int{
	server.CodeInvalid:             http.StatusBadRequest,
	server.CodeUnauthorized:        http.StatusUnauthorized,
	server.CodeForbidden:           http.StatusForbidden,
	server.CodeNotFound:            http.StatusNotFound,
	server.CodeConflict:            http.StatusConflict,
	server.CodeTooLarge:            http.StatusRequestEntityTooLarge,
	server.CodeUnsupportedType:     http.StatusUnsupportedMediaType,
	server.CodeTooManyRequests:     http.StatusTooManyRequests,
	server.CodeRangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
	server.CodeUnavailable:         http.StatusServiceUnavailable,
	server.CodeInternal:            http.StatusInternalServerError,
}

// writeError answers a request with err: an *server.Error's code and message, or a 500
// with a generic message (the details go to the log, never to the caller).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		err = server.Errorf(server.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	code := server.ErrorCode(err)
	status := statusOf[code]
	switch code {
	case server.CodeInternal:
		s.log.Error("Request failed", "method", r.Method, "path", clip(r.URL.Path), "error", clip(err.Error()))
	case server.CodeUnavailable:
		if errors.Is(err, errDownloadsBusy) {
			break
		}
		s.metrics.dbErrors.Inc()
		s.log.Warn("Request failed", "method", r.Method, "path", clip(r.URL.Path), "error", clip(err.Error()))
	}
	if status == http.StatusUnauthorized && strings.HasPrefix(r.URL.Path, "/v1/admin/") {
		w.Header().Set("WWW-Authenticate", `Basic realm="livepatch"`)
	}
	writeJSON(w, status, server.Error{Code: code, Message: server.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// maxJSONBody bounds every JSON request body.
const maxJSONBody = 64 << 10

// decodeJSON reads a JSON request body into v. An empty body leaves v as it is when
// optional; unknown fields and trailing data are errors that say what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeJSONMax(w, r, v, optional, maxJSONBody)
}

// decodeJSONMax is decodeJSON for a body of at most limit bytes.
func decodeJSONMax(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return server.Errorf(server.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		if errors.Is(err, io.EOF) {
			if optional {
				return nil
			}
			return server.Errorf(server.CodeInvalid, "request body is empty: a JSON object is required")
		}
		return server.Errorf(server.CodeInvalid, "invalid request body: %s", jsonProblem(err))
	}
	if dec.More() {
		return server.Errorf(server.CodeInvalid, "invalid request body: unexpected data after the JSON object")
	}
	return nil
}

func jsonProblem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// remoteAddr describes the caller for security events: the client address, and the
// trusted proxy it came through when there is one.
func (s *Server) remoteAddr(r *http.Request) string {
	peer := peerHost(r)
	if client := s.clientAddr(r); client != peer {
		return client + " via " + peer
	}
	return peer
}

// clientAddr is the address failed logins are counted against. From a trusted proxy it is
// the rightmost X-Forwarded-For entry that is not itself a trusted proxy (the one the
// nearest proxy appended for its client; entries to its left are the client's own claims);
// from any other peer it is the peer, whatever the header says.
func (s *Server) clientAddr(r *http.Request) string {
	peer := peerHost(r)
	if !s.trusted(peer) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil {
				return client // not an address: stop at the last one believed
			}
			client = a.Unmap().String()
			if !s.trusted(client) {
				return client
			}
		}
	}
	return client
}

// trusted reports whether addr is one of the trusted proxies.
func (s *Server) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limiter bounds concurrent requests: up to n run, up to burst more wait, the rest get 429.
type limiter struct {
	slots   chan struct{}
	mu      sync.Mutex
	waiting int
	burst   int
}

func newLimiter(n, burst int) *limiter {
	return &limiter{slots: make(chan struct{}, n), burst: burst}
}

func (l *limiter) acquire(ctx context.Context) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
	}
	l.mu.Lock()
	if l.waiting >= l.burst {
		l.mu.Unlock()
		return nil, server.Errorf(server.CodeTooManyRequests, "server is busy: too many concurrent requests, retry later")
	}
	l.waiting++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
	}()
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

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
