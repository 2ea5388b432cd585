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
	"os"
	"strings"
	"sync"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// resourceTokenPath is where the contracts server validates a livepatch-onprem resource
// token (the bearer of the request): 200 {"valid": true, "expires": "<RFC 3339>"}, or 401
// or 403 when it refuses the token.
const resourceTokenPath = "/v1/resources/livepatch-onprem/context/token"

// Limits of the resource token cache.
const (
	contractsCacheTTL  = 5 * time.Minute
	contractsCacheSize = 4096
	contractsTimeout   = 30 * time.Second
)

// Contracts checks Ubuntu Pro resource tokens with the contracts server (contracts.url),
// for downstream servers that sync with one. Positive answers are remembered for a few
// minutes (never past the token's expiry), keyed by a hash of the token.
type Contracts struct {
	base *url.URL
	http *http.Client
	now  func() time.Time

	mu    sync.Mutex
	valid map[[32]byte]time.Time // token hash -> remembered until
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
	return &Contracts{base: u, http: hc, now: now, valid: map[[32]byte]time.Time{}}, nil
}

// CheckResourceToken returns nil when the contracts server accepts token; an
// unauthorized server.Error when it refuses it; an unavailable one when it cannot say.
func (c *Contracts) CheckResourceToken(ctx context.Context, token string) error {
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	until, ok := c.valid[key]
	c.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, contractsTimeout)
	defer cancel()
	u := c.base.JoinPath(resourceTokenPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return server.Errorf(server.CodeUnavailable, "cannot check the resource token: cannot reach the contracts server at %s: %v", c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return server.Errorf(server.CodeUnauthorized, "the contracts server refused the resource token")
	default:
		return server.Errorf(server.CodeUnavailable, "cannot check the resource token: the contracts server at %s answered %s", c.base.Redacted(), resp.Status)
	}
	var body struct {
		Valid   bool      `json:"valid"`
		Expires time.Time `json:"expires"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return server.Errorf(server.CodeUnavailable, "cannot check the resource token: the contracts server at %s answered something else than {\"valid\",\"expires\"}", c.base.Redacted())
	}
	if !body.Valid || (!body.Expires.IsZero() && !now.Before(body.Expires)) {
		return server.Errorf(server.CodeUnauthorized, "the resource token is not valid or has expired (contracts server)")
	}
	until = now.Add(contractsCacheTTL)
	if !body.Expires.IsZero() && body.Expires.Before(until) {
		until = body.Expires
	}
	c.mu.Lock()
	if len(c.valid) >= contractsCacheSize {
		clear(c.valid)
	}
	c.valid[key] = until
	c.mu.Unlock()
	return nil
}

// LoadTrustedKeys reads patch-sync.trusted-key: the base64 of an ed25519 public key (as
// in the upstream's signing.pub), several separated by commas while the upstream rotates
// its key, or the path of a file holding them (one per line).
func LoadTrustedKeys(value string) ([]ed25519.PublicKey, error) {
	if keys, err := server.ParsePublicKeys(value); err == nil {
		return keys, nil
	}
	data, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("patch-sync.trusted-key is neither the base64 of an ed25519 public key nor a readable file: %v", err)
	}
	keys, err := server.ParsePublicKeys(string(data))
	if err != nil {
		return nil, fmt.Errorf("patch-sync.trusted-key file %s: %v", value, err)
	}
	return keys, nil
}
