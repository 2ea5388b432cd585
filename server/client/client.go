// Package client is a typed Go client of the livepatch on-prem server HTTP API (the route
// table in docs/contracts.md). The admin CLI, the machine client, the charm actions and the
// tests all talk to the server through it.
//
// A Client is immutable and safe for concurrent use. Admin routes authenticate with the
// credentials the Client carries (see WithToken and WithBasicAuth, which return copies);
// machine routes take the token they need as an argument. Errors the server reports are
// *APIError values; a server that cannot be reached gives an error naming the URL tried.
//
// Every wait is bounded (Timeouts): connecting and the TLS handshake, an API call from
// sending it to the end of its answer, and a transfer (a patch upload or download, an
// offline bundle export or import) by its progress rather than its length. A server that
// does not answer in time gives a *TimeoutError. Every answer is read with a size bound:
// MaxAnswer for JSON, a few KiB for error bodies, the expected size for downloads.
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
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// DefaultUserAgent is sent when no WithUserAgent option is given.
const DefaultUserAgent = "livepatch-go-client"

// Default timeouts of a Client.
const (
	// DefaultConnectTimeout bounds connecting to the server, and then the TLS handshake:
	// the real livepatch client's dial-timeout.
	DefaultConnectTimeout = 12 * time.Second
	// DefaultRequestTimeout bounds an API call from sending it to the end of its answer,
	// and a transfer's wait for its next byte. The server gives itself 30s to read a
	// request and 30s more to answer (server.request-timeout).
	DefaultRequestTimeout = time.Minute
)

// Bounds of what the Client reads of an answer.
const (
	// MaxAnswer bounds a JSON answer; a larger one is an error.
	MaxAnswer = 8 << 20
	// maxErrorBody bounds what is read of an error answer.
	maxErrorBody = 8 << 10
)

// Timeouts bound the waits of a Client; a zero field takes its default.
type Timeouts struct {
	// Connect bounds the TCP connection, then the TLS handshake, each. It applies to the
	// transport the Client makes; one given with WithHTTPClient keeps its own dialer.
	Connect time.Duration
	// Request bounds an API call from sending it to the end of its answer. A transfer (a
	// patch upload or download, a bundle export or import) has no total bound: it fails
	// when no byte moves for this long, its answer included.
	Request time.Duration
}

// WithDefaults returns t with the defaults in its zero fields.
func (t Timeouts) WithDefaults() Timeouts {
	if t.Connect <= 0 {
		t.Connect = DefaultConnectTimeout
	}
	if t.Request <= 0 {
		t.Request = DefaultRequestTimeout
	}
	return t
}

// TimeoutError is a call the server did not complete in time: no answer within the
// request timeout, or a transfer that moved no byte for that long.
type TimeoutError struct {
	// URL is the server's URL, without credentials.
	URL string
	// Limit is the timeout that ran out.
	Limit time.Duration
	// Stalled is true for a transfer that stopped moving, false for a call that was not
	// answered in time.
	Stalled bool
}

func (e *TimeoutError) Error() string {
	if e.Stalled {
		return fmt.Sprintf("the transfer with livepatch server at %s stalled: no data moved for %s", e.URL, e.Limit)
	}
	return fmt.Sprintf("livepatch server at %s did not answer within %s", e.URL, e.Limit)
}

// Timeout reports true, as net.Error timeouts do.
func (e *TimeoutError) Timeout() bool { return true }

// Client calls one livepatch server.
type Client struct {
	base      *url.URL // scheme://host[:port][/prefix], no trailing slash
	http      *http.Client
	userAgent string
	auth      func(*http.Request)
	timeouts  Timeouts
}

// Option configures a Client in New.
type Option func(*options)

type options struct {
	httpClient *http.Client
	caPEM      []byte
	userAgent  string
	timeouts   Timeouts
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

// WithTimeouts sets the Client's timeouts; zero fields keep their defaults.
func WithTimeouts(t Timeouts) Option {
	return func(o *options) { o.timeouts = t }
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
	o.timeouts = o.timeouts.WithDefaults()
	hc := o.httpClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: o.timeouts.Connect, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = o.timeouts.Connect
		hc = &http.Client{Transport: tr}
	}
	if o.caPEM != nil {
		if hc, err = withRoots(hc, o.caPEM); err != nil {
			return nil, err
		}
	}
	c := &Client{base: u, http: hc, userAgent: o.userAgent, auth: noAuth, timeouts: o.timeouts}
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
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body server.Error
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
	// transfer marks a streamed body or answer: the call is deadlined by its progress,
	// not in total.
	transfer bool
	// replayable marks a request that is safe to send twice: when a kept-alive connection
	// closes under it (a proxy such as haproxy reloading closes its idle connections), the
	// transport sends it again on a new connection instead of failing with EOF.
	replayable bool
}

// send performs r and returns the response, or the error the server or transport gave.
// The caller closes the body of a successful response; the call's deadline runs until
// then, and reading the body after it ran out gives its *TimeoutError.
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
	d := c.deadline(ctx, c.base.Redacted(), r.transfer)
	if body != nil && r.transfer {
		body = &movingReader{r: body, d: d}
	}
	req, err := http.NewRequestWithContext(d.ctx, r.method, target, body)
	if err != nil {
		d.stop()
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
		defer d.stop()
		if te := d.timedOut(); te != nil {
			return nil, te
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("request to livepatch server at %s interrupted: %w", c.base.Redacted(), ctx.Err())
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach livepatch server at %s: %w", c.base.Redacted(), err)
	}
	resp.Body = &deadlinedBody{rc: resp.Body, d: d}
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
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(bounded(resp.Body, MaxAnswer)).Decode(r.out); err != nil {
		if te, ok := errors.AsType[*TimeoutError](err); ok {
			return resp.StatusCode, te
		}
		return resp.StatusCode, fmt.Errorf("cannot decode response of %s %s from livepatch server at %s: %w", r.method, r.path, c.base.Redacted(), err)
	}
	return resp.StatusCode, nil
}

// callDeadline is the deadline of one call: a timer that cancels the call's context when
// it runs out. For a transfer, every byte that moves starts it again.
type callDeadline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	limit  time.Duration
	moving bool // a transfer: moved resets the timer

	mu    sync.Mutex
	timer *time.Timer
}

// deadline starts the deadline of a call to where (a transfer when transfer is true) made
// with ctx.
func (c *Client) deadline(ctx context.Context, where string, transfer bool) *callDeadline {
	ctx, cancel := context.WithCancelCause(ctx)
	d := &callDeadline{ctx: ctx, cancel: cancel, limit: c.timeouts.Request, moving: transfer}
	cause := &TimeoutError{URL: where, Limit: d.limit, Stalled: transfer}
	d.timer = time.AfterFunc(d.limit, func() { cancel(cause) })
	return d
}

// moved restarts the timer of a transfer.
func (d *callDeadline) moved() {
	if !d.moving {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() == nil {
		d.timer.Reset(d.limit)
	}
}

// stop ends the call: its timer no longer runs and its context is done.
func (d *callDeadline) stop() {
	d.mu.Lock()
	d.timer.Stop()
	d.mu.Unlock()
	d.cancel(context.Canceled)
}

// timedOut returns the *TimeoutError of a deadline that ran out, else nil.
func (d *callDeadline) timedOut() *TimeoutError {
	te, _ := errors.AsType[*TimeoutError](context.Cause(d.ctx))
	return te
}

// movingReader is the body of a transfer: each read moves its deadline on.
type movingReader struct {
	r io.Reader
	d *callDeadline
}

func (m *movingReader) Read(b []byte) (int, error) {
	n, err := m.r.Read(b)
	if n > 0 {
		m.d.moved()
	}
	return n, err
}

// deadlinedBody is an answer read under its call's deadline: a transfer's reads move it
// on, a read after it ran out fails with its *TimeoutError, and Close ends the call.
type deadlinedBody struct {
	rc io.ReadCloser
	d  *callDeadline
}

func (b *deadlinedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.d.moved()
	}
	if err != nil && err != io.EOF {
		if te := b.d.timedOut(); te != nil {
			return n, te
		}
	}
	return n, err
}

func (b *deadlinedBody) Close() error {
	err := b.rc.Close()
	b.d.stop()
	return err
}

// TooLargeError is an answer longer than the Client reads of it.
type TooLargeError struct {
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the answer is larger than %s", byteSize(e.Limit))
}

// byteSize renders n bytes in the largest binary unit that divides it.
func byteSize(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// boundedReader reads at most limit bytes of r; a byte more is a *TooLargeError.
type boundedReader struct {
	r     io.Reader
	left  int64 // bytes still allowed, plus the one that tells of more
	limit int64
}

// bounded returns r read with a size bound of limit bytes.
func bounded(r io.Reader, limit int64) io.Reader {
	return &boundedReader{r: r, left: limit + 1, limit: limit}
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, &TooLargeError{Limit: b.limit}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left <= 0 {
		return n - 1, &TooLargeError{Limit: b.limit}
	}
	return n, err
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }
