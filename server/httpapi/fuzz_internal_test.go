package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

// FuzzDecodeRequestBodies feeds arbitrary bodies to the JSON decoding and validation the
// handlers use: never a panic, and every refusal is a 4xx code with a message.
func FuzzDecodeRequestBodies(f *testing.F) {
	f.Add(`{"kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1"}`)
	f.Add(`{"name":"qa","after":"beta"}`)
	f.Add(`{"id":"web","tier":"stable","expires-at":"2030-01-01T00:00:00Z","max-machines":5}`)
	f.Add(`{"kernel":`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		targets := []any{&server.Status{}, &addTierRequest{}, &server.AuthTokenRequest{}, &promoteRequest{}, &blockRequest{}}
		for _, v := range targets {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/", strings.NewReader(body))
			err := decodeJSON(w, r, v, false)
			if st, ok := v.(*server.Status); ok && err == nil {
				err = st.Check()
			}
			if err == nil {
				continue
			}
			switch server.ErrorCode(err) {
			case server.CodeInvalid, server.CodeTooLarge:
			default:
				t.Fatalf("body %q into %T: %v (code %v)", body, v, err, server.ErrorCode(err))
			}
			if server.ErrorMessage(err) == "" {
				t.Fatalf("empty message")
			}
		}
	})
}
