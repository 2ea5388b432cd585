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
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	kernels kernelsCache // the kernels report (kernels.go)
	cache   *fileCache   // nil when the patch cache is off
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
