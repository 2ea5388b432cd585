// Package contracts is a stand-in for the Ubuntu Pro contracts server (proprietary SaaS): it
// issues machine tokens for known contract tokens and resource tokens for machine tokens, on
// the same paths and with the same JSON shapes as contracts.canonical.com.
package contracts

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Server is an in-memory contracts server.
type Server struct {
	mu        sync.Mutex
	contracts map[string]bool     // contract tokens
	machines  map[string]string   // machine token -> machine id
	resources map[string]resource // resource token -> what it was issued for
	srv       *http.Server
	lis       net.Listener
	// URL is the base URL once started.
	URL string
}

// resource is an issued resource token.
type resource struct {
	name    string
	expires time.Time
}

// ResourceTokenTTL is how long an issued resource token stays valid.
const ResourceTokenTTL = 30 * 24 * time.Hour

// New returns a server that accepts the given contract tokens.
func New(contractTokens ...string) *Server {
	s := &Server{contracts: map[string]bool{}, machines: map[string]string{}, resources: map[string]resource{}}
	for _, t := range contractTokens {
		s.contracts[t] = true
	}
	return s
}

// AddContractToken makes a contract token valid.
func (s *Server) AddContractToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.contracts[token] = true
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.lis = lis
	s.URL = "http://" + lis.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(lis)
	return nil
}

// Close stops the server.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Close()
}

// ValidResourceToken reports whether tok was issued for resource.
func (s *Server) ValidResourceToken(resource, tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.resources[tok]
	return ok && r.name == resource && time.Now().Before(r.expires)
}

// RevokeResourceTokens makes every resource token issued so far invalid, as when the
// contract behind them ends.
func (s *Server) RevokeResourceTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.resources)
}

// MachineCount returns how many machine tokens were issued.
func (s *Server) MachineCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.machines)
}

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/context/machines/token", s.machineToken)
	mux.HandleFunc("GET /v1/resources/{resource}/context/machines/{machine}", s.resourceToken)
	mux.HandleFunc("GET /v1/resources/{resource}/context/token", s.checkResourceToken)
	return mux
}

func bearer(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]string{"code": kind, "message": msg, "traceId": newToken(8)})
}

func newToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// MachineRequest is the body of POST /v1/context/machines/token.
type MachineRequest struct {
	MachineID    string         `json:"machineId"`
	Architecture string         `json:"architecture"`
	HostType     string         `json:"hostType"`
	OS           map[string]any `json:"os"`
}

// Entitlements lists the resources a contract grants.
var Entitlements = []string{"esm-apps", "esm-infra", "livepatch", "livepatch-onprem"}

func (s *Server) machineToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ok := s.contracts[bearer(r)]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid token")
		return
	}
	var req MachineRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.MachineID == "" {
		writeError(w, http.StatusBadRequest, "bad-request", "missing or invalid machineId")
		return
	}
	mt := newToken(24)
	s.mu.Lock()
	s.machines[mt] = req.MachineID
	s.mu.Unlock()
	now := time.Now().UTC()
	var ents []map[string]any
	var resourceTokens []map[string]string
	for _, e := range Entitlements {
		ent := map[string]any{
			"type":        e,
			"entitled":    true,
			"obligations": map[string]any{"enableByDefault": e == "esm-infra" || e == "esm-apps" || e == "livepatch"},
			"affordances": map[string]any{"architectures": []string{"amd64", "arm64"}},
			"directives":  map[string]any{},
		}
		ents = append(ents, ent)
	}
	resourceTokens = append(resourceTokens, map[string]string{"type": "livepatch", "token": s.issueResource("livepatch")})
	writeJSON(w, http.StatusOK, map[string]any{
		"machineToken": mt,
		"machineTokenInfo": map[string]any{
			"machineId": req.MachineID,
			"expires":   now.Add(365 * 24 * time.Hour).Format(time.RFC3339),
			"accountInfo": map[string]any{
				"id": "aAccount01", "name": "jujusim account", "createdAt": "2021-01-01T00:00:00Z",
			},
			"contractInfo": map[string]any{
				"id": "cContract01", "name": "jujusim contract", "createdAt": "2021-01-01T00:00:00Z",
				"effectiveFrom": "2021-01-01T00:00:00Z", "effectiveTo": now.Add(365 * 24 * time.Hour).Format(time.RFC3339),
				"products": []string{"uai-essential-virtual"}, "resourceEntitlements": ents,
			},
		},
		"resourceTokens": resourceTokens,
	})
}

func (s *Server) issueResource(name string) string {
	tok := newToken(24)
	s.mu.Lock()
	s.resources[tok] = resource{name: name, expires: time.Now().Add(ResourceTokenTTL).UTC().Truncate(time.Second)}
	s.mu.Unlock()
	return tok
}

// checkResourceToken validates the resource token in the bearer for the resource of the
// path, as an upstream livepatch server asks before serving a downstream that syncs with
// one: 200 {"valid": true, "expires": RFC 3339}, 401 for an unknown or expired token, 403
// for a token of another resource.
func (s *Server) checkResourceToken(w http.ResponseWriter, r *http.Request) {
	tok := bearer(r)
	s.mu.Lock()
	res, ok := s.resources[tok]
	s.mu.Unlock()
	switch {
	case tok == "" || !ok || !time.Now().Before(res.expires):
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or expired resource token")
	case res.name != r.PathValue("resource"):
		writeError(w, http.StatusForbidden, "forbidden", "the resource token is not for "+r.PathValue("resource"))
	default:
		writeJSON(w, http.StatusOK, map[string]any{"valid": true, "expires": res.expires.Format(time.RFC3339)})
	}
}

func (s *Server) resourceToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	_, ok := s.machines[bearer(r)]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid machine token")
		return
	}
	resource := r.PathValue("resource")
	entitled := false
	for _, e := range Entitlements {
		entitled = entitled || e == resource
	}
	if !entitled {
		writeError(w, http.StatusForbidden, "forbidden", "machine is not entitled to "+resource)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"resourceToken": s.issueResource(resource)})
}
