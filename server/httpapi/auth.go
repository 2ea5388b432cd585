package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

type ctxKey int

const (
	adminUserKey ctxKey = iota
	sessionIDKey
)

// sessionID returns the id of the session an admin request was made with ("" for basic
// auth).
func sessionID(ctx context.Context) string {
	id, _ := ctx.Value(sessionIDKey).(string)
	return id
}

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
			addr := s.clientAddr(r)
			known := s.knownUser(user)
			if err := s.lockout.check(known, addr); err != nil {
				s.basicEvent(r, "basicauth_authn_locked", user)
				return nil, server.Errorf(server.CodeTooManyRequests, "%v", err)
			}
			if !config.CheckUserName(user) {
				// No configured user has such a name: refuse before any hashing.
				s.lockout.fail("", addr)
				s.basicEvent(r, "basicauth_authn_failed", user)
				s.metrics.authFails.WithLabelValues("basic").Inc()
				return nil, server.Errorf(server.CodeUnauthorized, "invalid username or password")
			}
			if !s.checkBasic(user, pass) {
				s.lockout.fail(known, addr)
				s.basicEvent(r, "basicauth_authn_failed", user)
				s.metrics.authFails.WithLabelValues("basic").Inc()
				return nil, server.Errorf(server.CodeUnauthorized, "invalid username or password")
			}
			s.lockout.succeed(user, addr)
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
		if !s.sessionValid(sess) {
			// The user was removed or changed password since the login: the session is over.
			if err := s.store.DeleteSession(ctx, server.HashToken(token)); err != nil {
				s.log.Warn("Cannot delete an ended session", "error", err)
			}
			s.securityEvent(r, "session_authn_ended", sess.User, "session", sess.ID)
			s.metrics.authFails.WithLabelValues("session").Inc()
			return nil, server.Errorf(server.CodeUnauthorized, "session ended: the user was removed or its password changed since the login: log in again")
		}
		s.securityEvent(r, "authz_admin", sess.User, "auth", "session", "session", sess.ID)
		ctx = context.WithValue(ctx, sessionIDKey, sess.ID)
		return context.WithValue(ctx, adminUserKey, sess.User), nil
	case authTokenAccess, machineAccess, syncAccess:
		if _, ok := bearerToken(r); !ok {
			return nil, server.Errorf(server.CodeUnauthorized, "a bearer token is required")
		}
		// Admission verifies machine and sync tokens next (admit) and hands the handler
		// the verified caller; an auth token is verified by the statement that enrols.
		return ctx, nil
	}
	return nil, server.Errorf(server.CodeInternal, "unknown access level")
}

// credential returns the hash a session of user is bound to: SHA-256 of the user's
// configured "user:bcrypt-hash" entry, so that removing the user or changing the password
// (on every unit, since every unit renders the same users) ends its sessions.
func (s *Server) credential(user string) ([]byte, bool) {
	hash, ok := s.users[user]
	if !ok {
		return nil, false
	}
	sum := sha256.Sum256([]byte(user + ":" + hash))
	return sum[:], true
}

// sessionValid reports whether a session's user still has the credential it logged in
// with. Sessions without a recorded credential (made by an older server) are not.
func (s *Server) sessionValid(sess server.Session) bool {
	want, ok := s.credential(sess.User)
	return ok && len(sess.Credential) > 0 && hmac.Equal(sess.Credential, want)
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

// knownUser returns user when it is a configured administrator, else "".
func (s *Server) knownUser(user string) string {
	if _, ok := s.users[user]; ok {
		return user
	}
	return ""
}

// basicEvent logs a security event about a basic-auth attempt, whose user name is the
// caller's claim. A name that is no configured user (perhaps a password typed in the wrong
// field) is not logged: a keyed hash of it, user-ref, lets an operator see that attempts
// repeat a name without the log holding it.
func (s *Server) basicEvent(r *http.Request, event, user string) {
	if s.knownUser(user) != "" || user == "" {
		s.securityEvent(r, event, user)
		return
	}
	mac := hmac.New(sha256.New, s.logKey[:])
	mac.Write([]byte(user))
	s.securityEvent(r, event, "", "user-ref", hex.EncodeToString(mac.Sum(nil)[:6]))
}

// securityEvent logs an authentication or admin event: who (an identity the server
// verified: basic-auth claims go through basicEvent), what, from where; never a secret.
func (s *Server) securityEvent(r *http.Request, event, user string, attrs ...any) {
	args := []any{"type", "security", "event", event, "user", clip(user)}
	args = append(args, "method", r.Method, "path", clip(r.URL.Path), "remote", clip(s.remoteAddr(r)))
	for i, a := range attrs {
		if v, ok := a.(string); ok && i%2 == 1 {
			a = clip(v)
		}
		args = append(args, a)
	}
	s.log.Info("Security event", args...)
}

// maxLogValue bounds every caller-supplied string the server logs, in bytes.
const maxLogValue = 256

// clip bounds a caller-supplied string for the log: invalid UTF-8 replaced, at most
// maxLogValue bytes, and a cut said so. The JSON log handler escapes control characters.
func clip(v string) string {
	v = strings.ToValidUTF8(v, "\ufffd")
	if len(v) <= maxLogValue {
		return v
	}
	cut := maxLogValue
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s...(%d bytes)", v[:cut], len(v))
}
