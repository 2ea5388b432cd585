package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// maxJSONBody bounds every JSON request body.
const maxJSONBody = 64 << 10

// decodeJSON reads a JSON request body into v. An empty body leaves v as it is when
// optional; unknown fields and trailing data are errors that say what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeJSONMax(w, r, v, optional, maxJSONBody)
}

// decodeJSONMax is decodeJSON for a body of at most limit bytes.
func decodeJSONMax(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return server.Errorf(server.CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		if errors.Is(err, io.EOF) {
			if optional {
				return nil
			}
			return server.Errorf(server.CodeInvalid, "request body is empty: a JSON object is required")
		}
		return server.Errorf(server.CodeInvalid, "invalid request body: %s", jsonProblem(err))
	}
	if dec.More() {
		return server.Errorf(server.CodeInvalid, "invalid request body: unexpected data after the JSON object")
	}
	return nil
}

func jsonProblem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
