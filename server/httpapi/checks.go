package httpapi

import (
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// crossOrigin refuses unsafe requests that a browser marks as coming from another site
// (Sec-Fetch-Site) or from another origin than the server's host (Origin).
var crossOrigin = http.NewCrossOriginProtection()

// checkOrigin refuses the unsafe admin requests a web page of another site, visited by an
// administrator, makes with the browser's cached credentials. The admin CLI and scripts
// send neither Origin nor Sec-Fetch-Site.
func (s *Server) checkOrigin(r *http.Request) error {
	if err := crossOrigin.Check(r); err != nil {
		return server.Errorf(server.CodeForbidden, "cross-origin request refused: admin requests from web pages of other sites are not accepted")
	}
	return nil
}

// checkBodyType refuses admin request bodies of other types than the route takes: the
// types an HTML form or a simple cross-site fetch sends (text/plain, form data) among
// them, so that no page can send an admin action without a CORS preflight.
// want is what the route takes (bodyTypes), nil for JSON.
func checkBodyType(r *http.Request, want []string) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if want == nil {
		want = []string{"application/json"}
	}
	ct := r.Header.Get("Content-Type")
	hasBody := r.ContentLength != 0 || len(r.TransferEncoding) > 0
	if ct == "" && !hasBody {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(want, mt) {
		return server.Errorf(server.CodeUnsupportedType, "request body must be %s (Content-Type), not %.64q", strings.Join(want, " or "), ct)
	}
	return nil
}

// checkNUL refuses a path or query with a NUL byte, which no text column can hold, before
// any handler runs. Values of JSON bodies the database refuses come back from the store as
// invalid errors (package postgres).
func checkNUL(r *http.Request) error {
	if strings.IndexByte(r.URL.Path, 0) >= 0 || strings.Contains(r.URL.RawQuery, "%00") || strings.IndexByte(r.URL.RawQuery, 0) >= 0 {
		return server.Errorf(server.CodeInvalid, "the request path or query has a NUL character")
	}
	return nil
}
