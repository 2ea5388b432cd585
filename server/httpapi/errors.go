package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// statusOf maps error codes to HTTP statuses; it is the only such mapping.
var statusOf = map[server.Code]int{
	server.CodeInvalid:             http.StatusBadRequest,
	server.CodeUnauthorized:        http.StatusUnauthorized,
	server.CodeForbidden:           http.StatusForbidden,
	server.CodeNotFound:            http.StatusNotFound,
	server.CodeConflict:            http.StatusConflict,
	server.CodeTooLarge:            http.StatusRequestEntityTooLarge,
	server.CodeUnsupportedType:     http.StatusUnsupportedMediaType,
	server.CodeTooManyRequests:     http.StatusTooManyRequests,
	server.CodeRangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
	server.CodeUnavailable:         http.StatusServiceUnavailable,
	server.CodeInternal:            http.StatusInternalServerError,
}

// writeError answers a request with err: an *server.Error's code and message, or a 500
// with a generic message (the details go to the log, never to the caller).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		err = server.Errorf(server.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	code := server.ErrorCode(err)
	status := statusOf[code]
	switch code {
	case server.CodeInternal:
		s.log.Error("Request failed", "method", r.Method, "path", clip(r.URL.Path), "error", clip(err.Error()))
	case server.CodeUnavailable:
		if errors.Is(err, errDownloadsBusy) {
			break
		}
		s.metrics.dbErrors.Inc()
		s.log.Warn("Request failed", "method", r.Method, "path", clip(r.URL.Path), "error", clip(err.Error()))
	}
	if status == http.StatusUnauthorized && strings.HasPrefix(r.URL.Path, "/v1/admin/") {
		w.Header().Set("WWW-Authenticate", `Basic realm="livepatch"`)
	}
	writeJSON(w, status, server.Error{Code: code, Message: server.ErrorMessage(err)})
}
