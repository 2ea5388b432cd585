// Package client is a typed Go client of the livepatch on-prem server HTTP API (the route
// table in docs/contracts.md). The admin CLI, the machine client, the charm actions and the
// tests all talk to the server through it.
//
// A Client is immutable and safe for concurrent use. Admin routes authenticate with the
// credentials the Client carries (see WithToken and WithBasicAuth, which return copies);
// machine routes take the token they need as an argument. Errors the server reports are
// *APIError values; a server that cannot be reached gives an error naming the URL tried.
//
// The sync routes (/v1/admin/sync/..., /v1/admin/sync-tokens) arrive with the sync issue,
// in sync.go, following the same pattern as the admin routes.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// DefaultUserAgent is sent when no WithUserAgent option is given.
const DefaultUserAgent = "livepatch-go-client"

// Client calls one livepatch server.
type Client struct {
	base      *url.URL // scheme://host[:port][/prefix], no trailing slash
	http      *http.Client
	userAgent string
	auth      func(*http.Request)
}

// Option configures a Client in New.
type Option func(*options)

type options struct {
	httpClient *http.Client
	caPEM      []byte
	userAgent  string
}

// WithHTTPClient makes the Client send requests with hc (for its transport, timeouts or
// proxy settings). It is not modified; WithCACert applies to a copy.
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) { o.httpClient = hc }
}

// WithCACert adds the PEM certificates in pem to the system roots the Client trusts, for
// servers behind a private certificate authority.
func WithCACert(pem []byte) Option {
	return func(o *options) { o.caPEM = pem }
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}

// New returns a Client of the server at baseURL (http or https, optionally with a path
// prefix), without credentials.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid server URL %q: want http://host[:port] or https://host[:port]", baseURL)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	hc := o.httpClient
	if hc == nil {
		hc = &http.Client{}
	}
	if o.caPEM != nil {
		if hc, err = withRoots(hc, o.caPEM); err != nil {
			return nil, err
		}
	}
	c := &Client{base: u, http: hc, userAgent: o.userAgent, auth: noAuth}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	return c, nil
}

// withRoots returns a copy of hc whose transport trusts the system roots plus pem.
func withRoots(hc *http.Client, pem []byte) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("cannot use CA certificate: no PEM certificate found")
	}
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("cannot use CA certificate with a %T transport", hc.Transport)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.RootCAs = pool
	copied := *hc
	copied.Transport = tr
	return &copied, nil
}

// URL returns the server URL the Client calls, without a trailing slash.
func (c *Client) URL() string { return c.base.String() }

// WithToken returns a copy of c that authenticates admin requests with a bearer token (an
// admin session token from Login).
func (c *Client) WithToken(token string) *Client {
	copied := *c
	copied.auth = bearer(token)
	return &copied
}

// WithBasicAuth returns a copy of c that authenticates admin requests with HTTP basic auth.
func (c *Client) WithBasicAuth(user, password string) *Client {
	copied := *c
	copied.auth = func(r *http.Request) { r.SetBasicAuth(user, password) }
	return &copied
}

// noAuth sends no credentials, for public routes.
func noAuth(*http.Request) {}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// APIError is an error the server reported: its HTTP status and the code and message of
// the error body. Message is safe to show to users.
type APIError struct {
	Status  int
	Code    server.Code
	Message string
}

// Error returns the server's message.
func (e *APIError) Error() string { return e.Message }

// Unwrap returns the equivalent *server.Error, so server.ErrorCode and server.ErrorMessage
// work on client errors too.
func (e *APIError) Unwrap() error { return &server.Error{Code: e.Code, Message: e.Message} }

// statusCodes maps statuses to codes for error bodies that are not ours (a proxy's page).
var statusCodes = map[int]server.Code{
	http.StatusBadRequest:            server.CodeInvalid,
	http.StatusUnauthorized:          server.CodeUnauthorized,
	http.StatusForbidden:             server.CodeForbidden,
	http.StatusNotFound:              server.CodeNotFound,
	http.StatusConflict:              server.CodeConflict,
	http.StatusRequestEntityTooLarge: server.CodeTooLarge,
	http.StatusUnsupportedMediaType:  server.CodeUnsupportedType,
	http.StatusTooManyRequests:       server.CodeTooManyRequests,
	http.StatusServiceUnavailable:    server.CodeUnavailable,
	http.StatusBadGateway:            server.CodeUnavailable,
	http.StatusGatewayTimeout:        server.CodeUnavailable,
}

// decodeError turns a non-2xx response into an *APIError.
func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Code    server.Code `json:"code"`
		Message string      `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil && body.Code != "" && body.Message != "" {
		return &APIError{Status: resp.StatusCode, Code: body.Code, Message: body.Message}
	}
	code, ok := statusCodes[resp.StatusCode]
	if !ok {
		code = server.CodeInternal
	}
	return &APIError{Status: resp.StatusCode, Code: code, Message: "server returned " + resp.Status}
}

// request describes one API call.
type request struct {
	method string
	path   string     // escaped path below the base URL, starting with "/"
	query  url.Values // optional
	auth   func(*http.Request)
	in     any // JSON request body; nil: none
	body   io.Reader
	size   int64 // length of body; -1: unknown
	ctype  string
	out    any // decodes a 2xx JSON response; nil: discard
	alsoOK int // a non-2xx status send returns as a response rather than an error
	// replayable marks a request that is safe to send twice: when a kept-alive connection
	// closes under it (a proxy such as haproxy reloading closes its idle connections), the
	// transport sends it again on a new connection instead of failing with EOF.
	replayable bool
}

// send performs r and returns the response, or the error the server or transport gave.
// The caller closes the body of a successful response.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	target := c.base.String() + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	body, size, ctype := r.body, r.size, r.ctype
	if r.in != nil {
		data, err := json.Marshal(r.in)
		if err != nil {
			return nil, fmt.Errorf("cannot encode request: %w", err)
		}
		body, size, ctype = bytes.NewReader(data), int64(len(data)), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("cannot create request: %w", err)
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", ctype)
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	if r.replayable {
		// net/http treats a request with this key as idempotent; an empty value is not
		// sent on the wire.
		req.Header["Idempotency-Key"] = nil
	}
	req.Header.Set("User-Agent", c.userAgent)
	if r.out != nil {
		req.Header.Set("Accept", "application/json")
	}
	auth := r.auth
	if auth == nil {
		auth = c.auth
	}
	auth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("request to livepatch server at %s interrupted: %w", c.base, ctx.Err())
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach livepatch server at %s: %w", c.base, err)
	}
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && resp.StatusCode != r.alsoOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// do performs r and decodes its response into r.out; it returns the response status.
func (c *Client) do(ctx context.Context, r request) (int, error) {
	resp, err := c.send(ctx, r)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if r.out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(r.out); err != nil {
		return resp.StatusCode, fmt.Errorf("cannot decode response of %s %s from livepatch server at %s: %w", r.method, r.path, c.base, err)
	}
	return resp.StatusCode, nil
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }
