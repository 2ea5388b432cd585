package upstream

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// resourceTokenPath is where the contracts server validates a livepatch-onprem resource
// token (the bearer of the request): 200 {"valid": true, "expires": "<RFC 3339>"}, or 401
// or 403 when it refuses the token.
const resourceTokenPath = "/v1/resources/livepatch-onprem/context/token"

// Limits of resource token checks.
const (
	contractsAcceptTTL   = 5 * time.Minute  // an acceptance is remembered this long (never past the token's expiry)
	contractsRefuseTTL   = time.Minute      // a refusal is remembered this long
	contractsFailTTL     = 10 * time.Second // a failure to get an answer is remembered this long
	contractsCacheSize   = 4096             // tokens remembered
	contractsTimeout     = 5 * time.Second  // one check, waiting for a turn included
	contractsConcurrency = 4                // checks in progress at once
)

// Contracts checks Ubuntu Pro resource tokens with the contracts server (contracts.url),
// for downstream servers that sync with one. The API calls it holding no slot, so it bounds
// itself: a check takes at most Timeout, at most contractsConcurrency run at once, callers
// presenting a token being checked wait for that check, and answers are remembered, keyed
// by a hash of the token: acceptances for a few minutes (never past the token's expiry),
// refusals for a minute, failures for a few seconds. So a downstream's retries, or an
// attacker's, do not turn into traffic towards the contracts server.
type Contracts struct {
	base *url.URL
	http *http.Client
	now  func() time.Time
	// Timeout bounds one check (default contractsTimeout); set it before the first check.
	Timeout time.Duration

	turns chan struct{}
	mu    sync.Mutex
	known map[[32]byte]verdict
	calls map[[32]byte]*contractsCall
	last  lastCheck // guarded by mu
}

// lastCheck is the outcome of the last question asked of the contracts server.
type lastCheck struct {
	at  time.Time
	err error
}

// verdict is a remembered answer: err is nil for an acceptance.
type verdict struct {
	err   error
	until time.Time
}

// contractsCall is a check in progress, that callers with the same token wait for.
type contractsCall struct {
	done chan struct{}
	err  error
}

// NewContracts returns a checker of resource tokens against the contracts server at
// baseURL. hc may be nil (http.DefaultClient); now may be nil (time.Now).
func NewContracts(baseURL string, hc *http.Client, now func() time.Time) (*Contracts, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid contracts server URL %q", baseURL)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	if now == nil {
		now = time.Now
	}
	return &Contracts{base: u, http: hc, now: now, Timeout: contractsTimeout,
		turns: make(chan struct{}, contractsConcurrency),
		known: map[[32]byte]verdict{}, calls: map[[32]byte]*contractsCall{}}, nil
}

// CheckResourceToken returns nil when the contracts server accepts token; an
// unauthorized server.Error when it refuses it; an unavailable one when it cannot say.
func (c *Contracts) CheckResourceToken(ctx context.Context, token string) error {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	if v, ok := c.known[key]; ok && c.now().Before(v.until) {
		c.mu.Unlock()
		return v.err
	}
	call, ok := c.calls[key]
	if !ok {
		call = &contractsCall{done: make(chan struct{})}
		c.calls[key] = call
		// The check goes on if this caller leaves: others may be waiting for it.
		go c.run(key, token, call)
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run makes one check, remembers its answer and wakes its callers.
func (c *Contracts) run(key [32]byte, token string, call *contractsCall) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	var until time.Time
	select {
	case c.turns <- struct{}{}:
		until, call.err = c.ask(ctx, token)
		<-c.turns
		c.mu.Lock()
		c.last = lastCheck{at: c.now(), err: call.err}
		c.mu.Unlock()
	case <-ctx.Done():
		call.err = server.Errorf(server.CodeUnavailable, "cannot check the resource token: too many checks with the contracts server at %s in progress", c.base.Redacted())
	}
	now := c.now()
	switch {
	case call.err == nil:
	case server.ErrorCode(call.err) == server.CodeUnauthorized:
		until = now.Add(contractsRefuseTTL)
	default:
		until = now.Add(contractsFailTTL)
	}
	c.mu.Lock()
	delete(c.calls, key)
	c.remember(key, verdict{err: call.err, until: until}, now)
	c.mu.Unlock()
	close(call.done)
}

// Health describes the contracts server as the last check found it, for /debug/status:
// its URL, whether it answered (reachable, absent before the first check), when and with
// what (last-result: accepted, refused or unreachable), and status "OK" unless the last
// check could not reach it.
func (c *Contracts) Health() server.ContractsHealth {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	out := server.ContractsHealth{Status: server.HealthOK, Enabled: true, URL: c.base.Redacted()}
	if last.at.IsZero() {
		out.LastResult = "no resource token checked yet"
		return out
	}
	at := last.at.UTC()
	out.LastCheck = &at
	reachable := true
	switch {
	case last.err == nil:
		out.LastResult = "accepted"
	case server.ErrorCode(last.err) == server.CodeUnauthorized:
		out.LastResult = "refused"
	default:
		reachable, out.LastResult = false, "unreachable"
		out.Status = server.ErrorMessage(last.err)
	}
	out.Reachable = &reachable
	return out
}

// remember keeps v, making room when the cache is full: expired answers go first, then
// an arbitrary one.
func (c *Contracts) remember(key [32]byte, v verdict, now time.Time) {
	if _, ok := c.known[key]; !ok && len(c.known) >= contractsCacheSize {
		for k, old := range c.known {
			if !now.Before(old.until) {
				delete(c.known, k)
			}
		}
		for k := range c.known {
			if len(c.known) < contractsCacheSize {
				break
			}
			delete(c.known, k)
		}
	}
	c.known[key] = v
}

// ask asks the contracts server about token; an accepted token is good until the time
// it returns.
func (c *Contracts) ask(ctx context.Context, token string) (time.Time, error) {
	now := c.now()
	u := c.base.JoinPath(resourceTokenPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return time.Time{}, server.Errorf(server.CodeUnavailable, "cannot check the resource token: cannot reach the contracts server at %s: %v", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return time.Time{}, server.Errorf(server.CodeUnauthorized, "the contracts server refused the resource token")
	default:
		return time.Time{}, server.Errorf(server.CodeUnavailable, "cannot check the resource token: the contracts server at %s answered %s", c.base.Redacted(), resp.Status)
	}
	var body struct {
		Valid   bool      `json:"valid"`
		Expires time.Time `json:"expires"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return time.Time{}, server.Errorf(server.CodeUnavailable, "cannot check the resource token: the contracts server at %s answered something else than {\"valid\",\"expires\"}", c.base.Redacted())
	}
	if !body.Valid || (!body.Expires.IsZero() && !now.Before(body.Expires)) {
		return time.Time{}, server.Errorf(server.CodeUnauthorized, "the resource token is not valid or has expired (contracts server)")
	}
	until := now.Add(contractsAcceptTTL)
	if !body.Expires.IsZero() && body.Expires.Before(until) {
		until = body.Expires
	}
	return until, nil
}

// LoadTrustedKeys reads patch-sync.trusted-key: ed25519 public keys (the upstream's
// signing.pub, two while it rotates its key) in the forms of server.ParsePublicKeys, or the
// path of a file holding them.
func LoadTrustedKeys(value string) ([]ed25519.PublicKey, error) {
	return server.LoadPublicKeys("patch-sync.trusted-key", value)
}
