package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// login exchanges basic credentials for an expiring session token, stored hashed and bound
// to the user's credential entry.
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	user := adminUser(r.Context())
	token := server.NewToken()
	expires := s.opts.Now().Add(s.opts.SessionTTL).UTC().Truncate(time.Second)
	cred, _ := s.credential(user)
	sess := server.Session{ID: newSessionID(), User: user, ExpiresAt: expires, Credential: cred}
	if err := s.store.CreateSession(r.Context(), sess, server.HashToken(token)); err != nil {
		return err
	}
	s.securityEvent(r, "login", user, "session", sess.ID)
	return writeJSON(w, http.StatusOK, server.LoginResponse{Token: token, User: user, ExpiresAt: expires})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	if token, ok := bearerToken(r); ok {
		if err := s.store.DeleteSession(r.Context(), server.HashToken(token)); err != nil {
			return err
		}
	}
	s.securityEvent(r, "logout", adminUser(r.Context()))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// newSessionID returns the random id a session is listed and revoked by.
func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// listSessions lists the unexpired sessions, marking the caller's and those whose user
// changed since.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) error {
	sessions, err := s.store.Sessions(r.Context(), s.opts.Now())
	if err != nil {
		return err
	}
	current := sessionID(r.Context())
	for i := range sessions {
		sessions[i].Current = current != "" && sessions[i].ID == current
		sessions[i].Valid = s.sessionValid(sessions[i])
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sessions": nonNil(sessions)})
}

// revokeSession ends one session by id.
func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := server.CheckLabel("session id", id); err != nil {
		return err
	}
	if err := s.store.RevokeSession(r.Context(), id); err != nil {
		return err
	}
	s.securityEvent(r, "session_revoke", adminUser(r.Context()), "session", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeUserSessions ends every session of the user named by ?user=.
func (s *Server) revokeUserSessions(w http.ResponseWriter, r *http.Request) error {
	user := queryValue(r, "user")
	if user == "" {
		return server.Errorf(server.CodeInvalid, "name the user whose sessions to revoke: ?user=NAME (one session: DELETE /v1/admin/sessions/{id})")
	}
	if !config.CheckUserName(user) {
		return server.Errorf(server.CodeInvalid, "%.64q is not a user name", user)
	}
	n, err := s.store.RevokeUserSessions(r.Context(), user)
	if err != nil {
		return err
	}
	s.securityEvent(r, "session_revoke_user", adminUser(r.Context()), "target-user", user, "revoked", n)
	return writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
}

// adminWrite logs an admin change as a security event and refreshes the catalog so this
// unit serves the change at once.
func (s *Server) adminWrite(r *http.Request, event string, attrs ...any) {
	s.securityEvent(r, event, adminUser(r.Context()), attrs...)
	if err := s.catalog.reload(r.Context()); err != nil {
		s.log.Warn("Cannot reload patch catalog", "error", err)
	}
}

func (s *Server) listTiers(w http.ResponseWriter, r *http.Request) error {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tiers": nonNil(tiers)})
}

// errTiersMirrored answers the admin changes that sync makes when the tiers mirror the
// upstream's.
var errTiersMirrored = server.Errorf(server.CodeConflict,
	"the tiers of this server mirror the upstream's (patch-sync.sync-tiers): change tiers and promotions on the upstream, or turn patch-sync.sync-tiers off")

// checkTiersLocal refuses tier changes and promotions while the tiers mirror the upstream.
func (s *Server) checkTiersLocal() error {
	if s.opts.SyncTiers {
		return errTiersMirrored
	}
	return nil
}

type addTierRequest struct {
	Name string `json:"name"`
	server.TierPlacement
}

func (s *Server) addTier(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkTiersLocal(); err != nil {
		return err
	}
	var req addTierRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := server.CheckTierName(req.Name); err != nil {
		return err
	}
	if req.First && req.After != "" {
		return server.Errorf(server.CodeInvalid, "give either after or first, not both")
	}
	t, err := s.store.AddTier(r.Context(), req.Name, req.TierPlacement)
	if err != nil {
		return err
	}
	s.adminWrite(r, "tier_add", "tier", t.Name, "position", t.Position)
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) deleteTier(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkTiersLocal(); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := s.store.DeleteTier(r.Context(), name); err != nil {
		return err
	}
	s.adminWrite(r, "tier_delete", "tier", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createAuthToken(w http.ResponseWriter, r *http.Request) error {
	var req server.AuthTokenRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := server.CheckLabel("token id", req.ID); err != nil {
		return err
	}
	if req.Tier == "" {
		return server.Errorf(server.CodeInvalid, "tier is required")
	}
	if req.MaxMachines < 0 {
		return server.Errorf(server.CodeInvalid, "max-machines must not be negative")
	}
	if req.ExpiresAt != nil && !req.ExpiresAt.After(s.opts.Now()) {
		return server.Errorf(server.CodeInvalid, "expires-at %s is in the past", req.ExpiresAt.Format(time.RFC3339))
	}
	token := server.NewUUID()
	t, err := s.store.CreateAuthToken(r.Context(), server.NewAuthToken{
		ID: req.ID, Tier: req.Tier, Hash: server.HashToken(token), ExpiresAt: req.ExpiresAt, MaxMachines: req.MaxMachines,
	})
	if err != nil {
		return err
	}
	s.securityEvent(r, "authtoken_create", adminUser(r.Context()), "token-id", t.ID, "tier", t.Tier)
	t.Token = token
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) listAuthTokens(w http.ResponseWriter, r *http.Request) error {
	tokens, err := s.store.AuthTokens(r.Context())
	if err != nil {
		return err
	}
	for i := range tokens {
		tokens[i].Token = ""
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": nonNil(tokens)})
}

func (s *Server) revokeAuthToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.store.RevokeAuthToken(r.Context(), id); err != nil {
		return err
	}
	s.securityEvent(r, "authtoken_revoke", adminUser(r.Context()), "token-id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// nonNil makes empty lists encode as [] rather than null, for scripts.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// queryValue returns a trimmed query parameter.
func queryValue(r *http.Request, key string) string {
	return strings.TrimSpace(r.URL.Query().Get(key))
}
