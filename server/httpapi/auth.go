package httpapi

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/server"
)

type ctxKey int

const adminUserKey ctxKey = iota

// adminUser returns the authenticated administrator of an admin request.
func adminUser(ctx context.Context) string {
	u, _ := ctx.Value(adminUserKey).(string)
	return u
}

// bearer returns the bearer token of a request already checked to carry one.
func bearer(r *http.Request) string {
	t, _ := bearerToken(r)
	return t
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// authorize checks a request against a route's access level and returns the context the
// handler runs with.
func (s *Server) authorize(r *http.Request, access Access) (context.Context, error) {
	ctx := r.Context()
	switch access {
	case publicAccess:
		return ctx, nil
	case basicAccess, adminAccess:
		if user, pass, ok := r.BasicAuth(); ok {
			addr := sourceAddr(r)
			if err := s.lockout.check(user, addr); err != nil {
				s.securityEvent(r, "basicauth_authn_locked", user)
				return nil, server.Errorf(server.CodeTooManyRequests, "%v", err)
			}
			if !s.checkBasic(user, pass) {
				s.lockout.fail(user, addr)
				s.securityEvent(r, "basicauth_authn_failed", user)
				s.metrics.authFails.WithLabelValues("basic").Inc()
				return nil, server.Errorf(server.CodeUnauthorized, "invalid username or password")
			}
			s.lockout.succeed(user)
			s.securityEvent(r, "authz_admin", user, "auth", "basic")
			return context.WithValue(ctx, adminUserKey, user), nil
		}
		if access == basicAccess {
			return nil, server.Errorf(server.CodeUnauthorized, "login requires basic authentication (user:password)")
		}
		token, ok := bearerToken(r)
		if !ok {
			return nil, server.Errorf(server.CodeUnauthorized, "authentication required: log in to get a session token")
		}
		sess, err := s.store.Session(ctx, server.HashToken(token), s.opts.Now())
		if err != nil {
			if server.ErrorCode(err) == server.CodeUnauthorized {
				s.securityEvent(r, "session_authn_failed", "")
				s.metrics.authFails.WithLabelValues("session").Inc()
				return nil, server.Errorf(server.CodeUnauthorized, "session expired or unknown: log in again")
			}
			return nil, err
		}
		s.securityEvent(r, "authz_admin", sess.User, "auth", "session")
		return context.WithValue(ctx, adminUserKey, sess.User), nil
	case authTokenAccess, machineAccess, syncAccess:
		if _, ok := bearerToken(r); !ok {
			return nil, server.Errorf(server.CodeUnauthorized, "a bearer token is required")
		}
		// The handler reads the token with bearer and verifies it against the store in the
		// same round trip as its work.
		return ctx, nil
	}
	return nil, server.Errorf(server.CodeInternal, "unknown access level")
}

// checkBasic verifies a user's password against the configured bcrypt hash. A successful
// verification is remembered (keyed by a SHA-256 of user, password and hash), so scripts that
// use basic auth on every call pay the bcrypt cost once.
func (s *Server) checkBasic(user, pass string) bool {
	hash, ok := s.users[user]
	if !ok {
		// Spend the same time as a real comparison so user names cannot be probed.
		bcrypt.CompareHashAndPassword([]byte(dummyHash), []byte(pass))
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + hash))
	if s.basic.has(key) {
		return true
	}
	// htpasswd writes $2y$, which Go's bcrypt reads as $2a$ (the same algorithm).
	h := hash
	if strings.HasPrefix(h, "$2y$") {
		h = "$2a$" + h[4:]
	}
	if bcrypt.CompareHashAndPassword([]byte(h), []byte(pass)) != nil {
		return false
	}
	s.basic.add(key)
	return true
}

// dummyHash is a bcrypt hash (cost 10) of a random password, compared against when the user
// is unknown.
const dummyHash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"

type basicCache struct {
	mu   sync.Mutex
	keys map[[32]byte]struct{}
}

func newBasicCache() *basicCache { return &basicCache{keys: map[[32]byte]struct{}{}} }

func (c *basicCache) has(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.keys[k]
	return ok
}

func (c *basicCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) > 1024 {
		clear(c.keys)
	}
	c.keys[k] = struct{}{}
}

// securityEvent logs an authentication or admin event: who, what, from where; never a secret.
func (s *Server) securityEvent(r *http.Request, event, user string, attrs ...any) {
	args := append([]any{"type", "security", "event", event, "user", user,
		"method", r.Method, "path", r.URL.Path, "remote", remoteAddr(r)}, attrs...)
	s.log.Info("Security event", args...)
}
