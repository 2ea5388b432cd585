package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// A request goes through admission before its handler runs, in this order, so that no
// caller can hold what others need by being slow or by not being who it claims:
//
//  1. deadlines: reading the body and writing the answer each have one (routeClass);
//  2. the caller is verified, holding an API slot only for the verification's own work
//     (bcrypt, a database lookup); a resource token is checked with the contracts server
//     holding no slot at all (that check has its own bound, in package upstream);
//  3. a JSON body is read whole, bounded in size and time, holding no slot;
//  4. the handler runs in an API slot (Options.ConcurrencyLimit), or for downloads in a
//     download slot (Options.DownloadLimit).

// routeClass says which deadlines and which body handling a route gets.
type routeClass int

const (
	jsonRoute     routeClass = iota // a JSON body of at most maxJSONBody, a JSON answer
	uploadRoute                     // a streamed body of up to maxUpload (UploadTimeout)
	downloadRoute                   // a streamed answer, deadlined by progress (StallTimeout)
)

// routeClasses lists the routes that are not jsonRoute.
var routeClasses = map[string]routeClass{
	"PUT /v1/admin/patches/files/{filename}": uploadRoute,
	"POST /v1/admin/sync/bundle":             uploadRoute,
	"GET /patches/{filename}":                downloadRoute,
	"GET /v1/patches/{filename}":             downloadRoute,
	"GET /v1/admin/sync/bundle":              downloadRoute,
}

// bodyTypes lists the routes whose body is not JSON, with the media types they take.
var bodyTypes = map[string][]string{
	"PUT /v1/admin/patches/files/{filename}": {"application/x-bzip2", "application/octet-stream"},
	"POST /v1/admin/sync/bundle":             {"application/x-tar"},
}

// bodyLimits lists the JSON routes whose body may be larger than maxJSONBody.
var bodyLimits = map[string]int64{
	"POST /v1/sync/machine-reports": maxMachineReportBody,
}

// retryAfter is what a refused caller is told to wait, in seconds.
const retryAfter = "5"

// setDeadlines sets the read and write deadlines of a request's connection by its route
// class. A ResponseWriter that cannot take deadlines (not a connection) is left as it is.
func (s *Server) setDeadlines(w http.ResponseWriter, class routeClass) {
	rc := http.NewResponseController(w)
	now := time.Now()
	read := s.opts.RequestTimeout
	if class == uploadRoute {
		read = s.opts.UploadTimeout
	}
	rc.SetReadDeadline(now.Add(read))
	if class == downloadRoute {
		rc.SetWriteDeadline(now.Add(s.opts.StallTimeout)) // moved on by progressWriter
	} else {
		rc.SetWriteDeadline(now.Add(read + s.opts.RequestTimeout))
	}
}

// withSlot runs fn in an API slot: the concurrency limit bounds verification work too.
func (s *Server) withSlot(ctx context.Context, fn func() error) error {
	release, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	return fn()
}

// acquire takes an API slot, counting refusals.
func (s *Server) acquire(ctx context.Context) (func(), error) {
	release, err := s.limit.acquire(ctx)
	if err != nil && server.ErrorCode(err) == server.CodeTooManyRequests {
		s.metrics.overload.Inc()
	}
	return release, err
}

// admit verifies the caller of a route and returns the context its handler runs with.
func (s *Server) admit(r *http.Request, access Access) (context.Context, error) {
	switch access {
	case basicAccess, adminAccess:
		var ctx context.Context
		err := s.withSlot(r.Context(), func() error {
			var err error
			ctx, err = s.authorize(r, access)
			return err
		})
		return ctx, err
	case machineAccess:
		ctx, err := s.authorize(r, access)
		if err != nil {
			return nil, err
		}
		m, err := s.verifyMachine(r)
		if err != nil {
			return nil, err
		}
		return context.WithValue(ctx, machineKey{}, m), nil
	case syncAccess:
		if s.opts.SigningKey == nil {
			return nil, errNotUpstream
		}
		ctx, err := s.authorize(r, access)
		if err != nil {
			return nil, err
		}
		c, err := s.checkSyncCaller(r)
		if err != nil {
			return nil, err
		}
		return context.WithValue(ctx, syncCallerKey{}, c), nil
	}
	// Public routes; enable, whose auth token is checked in the statement that enrols.
	return s.authorize(r, access)
}

// verifyMachine checks the machine token of the machine named in the path before its body
// is read: from the tokens recently verified, else with one database read.
func (s *Server) verifyMachine(r *http.Request) (machineCaller, error) {
	m := machineCaller{id: r.PathValue("id")}
	if err := server.CheckMachineID(m.id); err != nil {
		return m, err
	}
	m.tokenHash = server.HashToken(bearer(r))
	if s.machineTokens.has(m.id, m.tokenHash) {
		return m, nil
	}
	err := s.withSlot(r.Context(), func() error { return s.store.CheckMachineToken(r.Context(), m.id, m.tokenHash) })
	if err != nil {
		if server.ErrorCode(err) == server.CodeUnauthorized {
			s.metrics.authFails.WithLabelValues("machine").Inc()
		}
		return m, err
	}
	s.machineTokens.add(m.id, m.tokenHash)
	return m, nil
}

// machineCaller is the machine that admission verified for a machine route: the id of
// the path and the hash of the machine token it proved itself with.
type machineCaller struct {
	id        string
	tokenHash []byte
}

// machineKey is the context key of the machineCaller admission verified.
type machineKey struct{}

// machineOf returns the machine admission verified for r (machine routes only).
func machineOf(r *http.Request) machineCaller {
	m, _ := r.Context().Value(machineKey{}).(machineCaller)
	return m
}

// readBody reads a JSON request body whole, at most limit bytes, within the read deadline,
// and gives the handler that copy.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return server.Errorf(server.CodeTooLarge, "request body is larger than %d bytes", limit)
		}
		return server.Errorf(server.CodeInvalid, "cannot read the request body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	return nil
}

// progressWriter moves the write deadline on before every write, so a download may take
// as long as it needs while its reader keeps taking bytes, and a stalled reader is cut off
// after stall.
type progressWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.rc.SetWriteDeadline(time.Now().Add(p.stall))
	return p.ResponseWriter.Write(b)
}

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// semaphore bounds concurrent work without queueing: beyond n, acquire fails at once.
type semaphore chan struct{}

func (s semaphore) tryAcquire() (release func(), ok bool) {
	select {
	case s <- struct{}{}:
		return func() { <-s }, true
	default:
		return nil, false
	}
}

// errDownloadsBusy answers a download beyond Options.DownloadLimit.
var errDownloadsBusy = server.Errorf(server.CodeUnavailable, "too many patch downloads in progress: retry in "+retryAfter+" seconds")
