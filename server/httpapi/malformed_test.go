package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestMalformedValues sends values the columns cannot hold, through every kind of input
// (JSON bodies, query parameters, path values): each is a 400 with a JSON message, never a
// 500, and a check-in with such a value does not fail the check-ins recorded with it.
func TestMalformedValues(t *testing.T) {
	e := newEnv(t)
	tok := e.authToken("lab", "edge", 0)
	machineTok := e.enable("m1", tok)
	e.upload("5.15.0-107.117", "generic", "107.1", "amd64")

	checkIn := func(field string, value any) map[string]any {
		st := map[string]any{"kernel": "5.15.0-107-generic", "architecture": "amd64", "patch-state": "nothing-to-apply"}
		st[field] = value
		return st
	}
	tests := []struct {
		name, method, path, auth string
		body                     any
	}{
		{"NUL in block reason", "POST", "/v1/admin/patches/107.1/block", "session", `{"reason":"a\u0000b"}`},
		{"NUL in auth token tier", "POST", "/v1/admin/auth-tokens", "session", `{"id":"x","tier":"ed\u0000ge"}`},
		{"NUL in sync token tier", "POST", "/v1/admin/sync-tokens", "session", `{"name":"x","tier":"ed\u0000ge"}`},
		{"NUL in promote tier", "POST", "/v1/admin/patches/107.1/promote", "session", `{"tier":"be\u0000ta"}`},
		{"NUL in tier placement", "POST", "/v1/admin/tiers", "session", `{"name":"qa","after":"ed\u0000ge"}`},
		{"NUL in check-in", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, checkIn("cpu-model", "Xeon\x00")},
		{"NUL in query", "GET", "/v1/admin/patches?tier=ed%00ge", "session", nil},
		{"NUL in report query", "GET", "/v1/admin/reports/machines?kernel=5.15%00", "session", nil},
		{"NUL in path", "GET", "/v1/admin/patches/107%001", "session", nil},
		{"NUL in tier path", "DELETE", "/v1/admin/tiers/ed%00ge", "session", nil},
		{"NUL in sync token path", "DELETE", "/v1/admin/sync-tokens/a%00b", "session", nil},
		{"max-machines beyond integer", "POST", "/v1/admin/auth-tokens", "session", `{"id":"big","tier":"edge","max-machines":99999999999}`},
		{"expires-at out of range", "POST", "/v1/admin/auth-tokens", "session", `{"id":"far","tier":"edge","expires-at":"9999-12-31T23:59:59-23:59"}`},
		{"boot-time out of range", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, checkIn("boot-time", "0000-01-01T00:00:00+23:59")},
		{"uptime beyond bigint", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, `{"kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"nothing-to-apply","uptime":99999999999999999999}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			status, data := e.do(tt.method, tt.path, tt.auth, tt.body)
			var eb struct{ Code, Message string }
			if err := json.Unmarshal(data, &eb); err != nil || status != 400 || eb.Code != "invalid" || eb.Message == "" {
				t.Errorf("%s %s: got %d %s; want 400 with a JSON message", tt.method, tt.path, status, data)
			}
			if strings.Contains(eb.Message, "\x00") {
				t.Errorf("message echoes a NUL byte: %q", eb.Message)
			}
		})
	}
	e.t = t
	e.must(200, "POST", "/v1/client/m1/updates", "Bearer "+machineTok, status("5.15.0-107-generic"), nil)
}
