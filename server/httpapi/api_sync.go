package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/offline"
)

// Syncer is this server's upstream sync as the admin routes drive it (package upstream
// implements it).
type Syncer interface {
	// Trigger asks for a sync run that starts after the call; the channel receives the
	// run's report when it ends, or is closed if the server stops first.
	Trigger(ctx context.Context) (<-chan server.SyncReport, error)
	// Status returns the sync configuration and state as this unit sees it.
	Status(ctx context.Context) (server.SyncStatus, error)
	// Import applies an offline bundle read from r as a sync run and returns its report;
	// the error refuses a bundle that is not complete and valid (nothing but a failed
	// report is recorded then).
	Import(ctx context.Context, r io.Reader) (server.SyncReport, error)
	// Health is the sync section of /debug/status, cheap enough for every health check.
	Health(ctx context.Context) server.SyncHealth
}

// errSyncDisabled answers admin sync requests of a server that does not sync.
var errSyncDisabled = server.Errorf(server.CodeConflict, "upstream sync is not enabled on this server (patch-sync.enabled)")

// triggerSync starts a sync; with ?wait=true it answers the run's report when it ends.
func (s *Server) triggerSync(w http.ResponseWriter, r *http.Request) error {
	wait := false
	if v := queryValue(r, "wait"); v != "" {
		var err error
		if wait, err = strconv.ParseBool(v); err != nil {
			return server.Errorf(server.CodeInvalid, "invalid wait %q: want true or false", v)
		}
	}
	if s.opts.Sync == nil {
		return errSyncDisabled
	}
	done, err := s.opts.Sync.Trigger(r.Context())
	if err != nil {
		return err
	}
	s.securityEvent(r, "sync_trigger", adminUser(r.Context()))
	if !wait {
		return writeJSON(w, http.StatusAccepted, map[string]bool{"triggered": true})
	}
	select {
	case report, ok := <-done:
		if !ok {
			return server.Errorf(server.CodeUnavailable, "the server stopped before the sync ended")
		}
		return writeJSON(w, http.StatusOK, report)
	case <-r.Context().Done():
		return r.Context().Err() // the sync goes on without the caller
	}
}

func (s *Server) syncStatus(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Sync != nil {
		st, err := s.opts.Sync.Status(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, st)
	}
	// Not syncing now; reports of earlier runs may still be there.
	var st server.SyncStatus
	reports, err := s.store.SyncReports(r.Context(), server.SyncReportFilter{Limit: 1})
	if err != nil {
		return err
	}
	if len(reports) > 0 {
		st.LastRun = &reports[0]
	}
	return writeJSON(w, http.StatusOK, st)
}

// exportBundle answers the offline bundle of ?tier=: the signed list GET
// /v1/sync/patches would answer a downstream of that tier, then every listed file.
func (s *Server) exportBundle(w http.ResponseWriter, r *http.Request) error {
	if s.opts.SigningKey == nil {
		return errNotUpstream
	}
	tier := queryValue(r, "tier")
	if tier == "" {
		return server.Errorf(server.CodeInvalid, "tier is required: use ?tier=<name>")
	}
	if err := s.checkTier(r, tier); err != nil {
		return err
	}
	ctx := r.Context()
	signed, list, err := s.signedList(ctx, tier)
	if err != nil {
		return err
	}
	// Every file is checked before the first byte, so a missing one is a clear error
	// rather than a bundle that ends early.
	stored, err := s.files.List(ctx)
	if err != nil {
		return err
	}
	sizes := make(map[string]int64, len(stored))
	for _, f := range stored {
		sizes[f.Filename] = f.Size
	}
	for _, p := range list.Patches {
		if size, ok := sizes[p.Filename]; !ok || size != p.Size {
			return server.Errorf(server.CodeConflict, "patch %s of tier %q is not in the patch storage with its recorded size: run livepatch-admin storage refresh, or block it", p.Filename, tier)
		}
	}
	size, err := offline.Size(signed, list)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="livepatch-%s-%s.bundle"`, tier, list.GeneratedAt.Format("20060102T150405Z")))
	s.securityEvent(r, "sync_bundle_export", adminUser(ctx), "tier", tier, "patches", len(list.Patches), "key-id", signed.KeyID)
	err = offline.Write(w, signed, list, func(p server.SyncPatch) (io.ReadCloser, error) { return s.files.Open(ctx, p.Filename) })
	if err != nil {
		// The answer is cut short of its Content-Length: the client sees it fail.
		s.log.Warn("Cannot write offline bundle", "tier", tier, "error", err)
	}
	return nil
}

// importBundle applies the offline bundle in the request body as a sync run and answers
// its report.
func (s *Server) importBundle(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Sync == nil {
		return server.Errorf(server.CodeUnavailable, "this server cannot import offline bundles: it runs without patch-sync")
	}
	report, err := s.opts.Sync.Import(r.Context(), http.MaxBytesReader(w, r.Body, offline.MaxSize))
	s.securityEvent(r, "sync_bundle_import", adminUser(r.Context()), "outcome", report.Outcome, "patches-added", report.PatchesAdded)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

// Bounds of GET /v1/admin/sync/reports?limit=.
const (
	defaultSyncReports = 20
	maxSyncReportsPage = 1000
)

func (s *Server) syncReports(w http.ResponseWriter, r *http.Request) error {
	limit := defaultSyncReports
	if v := queryValue(r, "limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSyncReportsPage {
			return server.Errorf(server.CodeInvalid, "invalid limit %q: want 1 to %d", v, maxSyncReportsPage)
		}
		limit = n
	}
	reports, err := s.store.SyncReports(r.Context(), server.SyncReportFilter{Limit: limit})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"reports": nonNil(reports)})
}

func (s *Server) listSyncTokens(w http.ResponseWriter, r *http.Request) error {
	tokens, err := s.store.SyncTokens(r.Context())
	if err != nil {
		return err
	}
	for i := range tokens {
		tokens[i].Token = ""
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": nonNil(tokens)})
}

// createSyncToken issues a sync token bound to a tier; its value is in this answer only.
func (s *Server) createSyncToken(w http.ResponseWriter, r *http.Request) error {
	var req server.SyncTokenRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := server.CheckLabel("sync token name", req.Name); err != nil {
		return err
	}
	if req.Tier == "" {
		return server.Errorf(server.CodeInvalid, "tier is required")
	}
	if req.ValidUntil != nil && !req.ValidUntil.After(s.opts.Now()) {
		return server.Errorf(server.CodeInvalid, "valid-until %s is in the past", req.ValidUntil.Format(time.RFC3339))
	}
	token := server.NewUUID()
	t, err := s.store.CreateSyncToken(r.Context(), server.NewSyncToken{
		Name: req.Name, Tier: req.Tier, Hash: server.HashToken(token), ValidUntil: req.ValidUntil,
	})
	if err != nil {
		return err
	}
	s.securityEvent(r, "synctoken_create", adminUser(r.Context()), "token-name", t.Name, "tier", t.Tier)
	t.Token = token
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) revokeSyncToken(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.store.RevokeSyncToken(r.Context(), name); err != nil {
		return err
	}
	s.securityEvent(r, "synctoken_revoke", adminUser(r.Context()), "token-name", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// syncCaller is a downstream server that proved who it is.
type syncCaller struct {
	tier       string // the tier it may sync: a sync token's own, or ?tier= for a resource token
	who        string // for security events: "sync-token:<name>" or "resource-token"
	syncToken  string // the sync token's name; empty for a resource token
	deployment string // Livepatch-Deployment-Id, when valid
	credential []byte // the stored hash of its token, which a deployment id is bound to
	machines   int    // Livepatch-Machine-Count; -1 when absent or invalid
}

// syncCallerKey is the context key of the syncCaller admission verified.
type syncCallerKey struct{}

// syncCallerOf returns the caller of a sync route, verified at admission. needTier says
// the route serves a tier, which a resource token must name with ?tier=.
func (s *Server) syncCallerOf(r *http.Request, needTier bool) (syncCaller, error) {
	c, ok := r.Context().Value(syncCallerKey{}).(syncCaller)
	if !ok {
		return syncCaller{}, server.Errorf(server.CodeInternal, "sync caller not verified")
	}
	if c.syncToken != "" || !needTier {
		return c, nil
	}
	tier := queryValue(r, "tier")
	if tier == "" {
		return syncCaller{}, server.Errorf(server.CodeInvalid, "tier is required with a resource token: use ?tier=<name>")
	}
	if err := s.checkTier(r, tier); err != nil {
		return syncCaller{}, err
	}
	c.tier = tier
	return c, nil
}

// checkSyncCaller authenticates a sync request: a sync token from the database (in an API
// slot), else a resource token checked with the contracts server (in none: that check
// bounds its own time and concurrency).
func (s *Server) checkSyncCaller(r *http.Request) (syncCaller, error) {
	ctx := r.Context()
	token := bearer(r)
	tier := queryValue(r, "tier")
	c := syncCaller{machines: -1, credential: server.HashToken(token)}
	if id := r.Header.Get(server.HeaderDeploymentID); server.CheckDeploymentID(id) == nil {
		c.deployment = id
	}
	if n, err := strconv.Atoi(r.Header.Get(server.HeaderMachineCount)); err == nil && n >= 0 {
		c.machines = n
	}
	fail := func(kind, event string, err error) (syncCaller, error) {
		s.securityEvent(r, event, "", "deployment", c.deployment)
		s.metrics.authFails.WithLabelValues(kind).Inc()
		return syncCaller{}, err
	}
	var st server.SyncToken
	err := s.withSlot(ctx, func() error {
		var err error
		st, err = s.store.SyncToken(ctx, c.credential)
		return err
	})
	switch {
	case err == nil:
		if st.Revoked {
			return fail("sync", "synctoken_authn_failed:revoked", server.Errorf(server.CodeUnauthorized, "sync token %q has been revoked: ask the upstream's administrator for a new one", st.Name))
		}
		if st.ValidUntil != nil && !s.opts.Now().Before(*st.ValidUntil) {
			return fail("sync", "synctoken_authn_failed:expired", server.Errorf(server.CodeUnauthorized, "sync token %q expired at %s: ask the upstream's administrator for a new one", st.Name, st.ValidUntil.Format(time.RFC3339)))
		}
		if st.Tier == "" {
			return fail("sync", "synctoken_authz_failed:tier", server.Errorf(server.CodeForbidden, "sync token %q has no tier", st.Name))
		}
		if tier != "" && tier != st.Tier {
			return fail("sync", "synctoken_authz_failed:tier", server.Errorf(server.CodeForbidden, "sync token %q is for tier %q, not %q: set patch-sync.upstream-tier to %q", st.Name, st.Tier, tier, st.Tier))
		}
		c.tier, c.who, c.syncToken = st.Tier, "sync-token:"+st.Name, st.Name
		return c, nil
	case server.ErrorCode(err) != server.CodeNotFound:
		return syncCaller{}, err
	}
	if s.opts.ResourceTokens == nil || isUUID(token) {
		return fail("sync", "synctoken_authn_failed:unknown", server.Errorf(server.CodeUnauthorized, "unknown sync token"))
	}
	if err := s.opts.ResourceTokens(ctx, token); err != nil {
		if server.ErrorCode(err) == server.CodeUnauthorized {
			return fail("resource", "resourcetoken_authn_failed", err)
		}
		return syncCaller{}, err
	}
	c.who = "resource-token"
	return c, nil
}

// isUUID reports whether token has the form of a sync or auth token, never of a resource
// token, so unknown UUIDs are not sent to the contracts server.
func isUUID(token string) bool {
	if len(token) != 36 {
		return false
	}
	for i, c := range token {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'):
			return false
		}
	}
	return true
}

// errNotUpstream answers sync requests to a server without a signing key.
var errNotUpstream = server.Errorf(server.CodeUnavailable, "this server is not configured as a sync upstream (sync-server.signing-key)")

// syncPatches serves the signed list of the non-blocked patches available to the caller's
// tier, with their download URLs.
func (s *Server) syncPatches(w http.ResponseWriter, r *http.Request) error {
	if s.opts.SigningKey == nil {
		return errNotUpstream
	}
	c, err := s.syncCallerOf(r, true)
	if err != nil {
		return err
	}
	signed, list, err := s.signedList(r.Context(), c.tier)
	if err != nil {
		return err
	}
	s.securityEvent(r, "sync_list", c.who, "tier", c.tier, "patches", len(list.Patches),
		"deployment", c.deployment, "machines", c.machines)
	s.recordDownstream(r, c)
	return writeJSON(w, http.StatusOK, signed)
}

// signedList builds and signs the list of the non-blocked patches available to tier, with
// their download URLs: what GET /v1/sync/patches answers and an offline bundle holds.
func (s *Server) signedList(ctx context.Context, tier string) (server.SignedSyncList, server.SyncList, error) {
	tiers, patches, err := s.syncTiers(ctx, tier)
	if err != nil {
		return server.SignedSyncList{}, server.SyncList{}, err
	}
	tmpl := s.opts.URLTemplate
	if tmpl == "" {
		tmpl = "/v1/patches/{filename}"
	}
	list := server.SyncList{Tier: tier, GeneratedAt: s.opts.Now().UTC(), Tiers: tiers, Patches: []server.SyncPatch{}}
	for _, p := range patches {
		if p.Blocked {
			continue
		}
		p = s.catalog.signer.sign(p)
		list.Patches = append(list.Patches, server.SyncPatch{
			Filename: p.Filename, Version: p.Version, Kernel: p.Kernel, Flavour: p.Flavour,
			Architecture: p.Architecture, SHA256: p.SHA256, Size: p.Size, Module: p.Module,
			Description: p.Description, Fixes: p.Fixes, URL: server.Offer(p, tmpl).URL,
			Tier: p.Tier, Signature: p.Signature,
		})
	}
	signed, err := server.SignSyncList(list, s.opts.SigningKey)
	if err != nil {
		return server.SignedSyncList{}, server.SyncList{}, err
	}
	return signed, list, nil
}

// syncTiersAttempts bounds how often syncTiers reads again when the tiers change under it.
const syncTiersAttempts = 3

// syncTiers returns the tiers from tier onward in promotion order, and the patches
// available to tier, each in one of those tiers: a tier deleted between the two reads is
// read again, so that the list a downstream mirrors is coherent.
func (s *Server) syncTiers(ctx context.Context, tier string) ([]string, []server.Patch, error) {
	for range syncTiersAttempts {
		all, err := s.store.Tiers(ctx)
		if err != nil {
			return nil, nil, err
		}
		patches, err := s.store.Patches(ctx, server.PatchFilter{Tier: tier})
		if err != nil {
			return nil, nil, err
		}
		var tiers []string
		for _, t := range all {
			if t.Name == tier || len(tiers) > 0 {
				tiers = append(tiers, t.Name)
			}
		}
		coherent := len(tiers) > 0
		for _, p := range patches {
			coherent = coherent && slices.Contains(tiers, p.Tier)
		}
		if coherent {
			return tiers, patches, nil
		}
	}
	return nil, nil, server.Errorf(server.CodeUnavailable, "the tiers of this server changed while the patch list was built: try again")
}

// maxMachineReportBody bounds a machine report request (MaxSyncMachines machines).
const maxMachineReportBody = 4 << 20

type machineReportRequest struct {
	Machines []server.SyncMachine `json:"machines"`
}

// syncMachineReports records the machines a downstream deployment reports.
func (s *Server) syncMachineReports(w http.ResponseWriter, r *http.Request) error {
	if s.opts.SigningKey == nil {
		return errNotUpstream
	}
	c, err := s.syncCallerOf(r, false)
	if err != nil {
		return err
	}
	if c.deployment == "" {
		return server.Errorf(server.CodeInvalid, "machine reports need a valid %s header", server.HeaderDeploymentID)
	}
	var req machineReportRequest
	if err := decodeJSONMax(w, r, &req, false, maxMachineReportBody); err != nil {
		return err
	}
	if len(req.Machines) > server.MaxSyncMachines {
		return server.Errorf(server.CodeTooLarge, "too many machines in one report: %d, at most %d", len(req.Machines), server.MaxSyncMachines)
	}
	for _, m := range req.Machines {
		if err := m.Check(); err != nil {
			return err
		}
	}
	if err := s.store.RecordSyncMachines(r.Context(), c.deployment, c.credential, req.Machines, s.opts.Now()); err != nil {
		return err
	}
	s.securityEvent(r, "sync_machine_reports", c.who, "deployment", c.deployment, "machines", len(req.Machines))
	return writeJSON(w, http.StatusOK, map[string]int{"recorded": len(req.Machines)})
}
