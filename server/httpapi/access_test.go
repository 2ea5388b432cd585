package httpapi_test

import (
	"crypto/ed25519"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestRoutesRefuseWrongCredentials derives its cases from the route table, so that no
// route escapes: every route that is not public refuses, with 401 and before doing
// anything, no credentials, a bearer value that is no token, and every real token of
// another kind than its own (a session, an auth token, a machine token, another machine's
// token, a sync token).
func TestRoutesRefuseWrongCredentials(t *testing.T) {
	var pub ed25519.PublicKey
	e := newEnv(t, trustLoopback, withSigningKey(&pub))
	authTok := e.authToken("fleet", "stable", 0)
	creds := map[string]string{
		"none":               "",
		"not a token":        "Bearer 0b4e5f3c-not-a-token",
		"session":            "Bearer " + e.login(),
		"auth token":         "Bearer " + authTok,
		"machine token":      "Bearer " + e.enable("m-1", authTok),
		"another's machine":  "Bearer " + e.enable("m-2", authTok),
		"sync token":         "Bearer " + e.syncToken("region", "stable", nil),
		"basic (right user)": "basic",
	}
	// What each access level takes; every other credential is wrong for it.
	right := map[string][]string{
		"admin":      {"session", "basic (right user)"},
		"basic":      {"basic (right user)"},
		"auth-token": {"auth token"},
		"machine":    {"machine token"},
		"sync":       {"sync token"},
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	checked := map[string]int{}
	for _, r := range e.api.Routes() {
		access := r.Access.String()
		if access == "public" {
			continue
		}
		takes, ok := right[access]
		if !ok {
			t.Errorf("route %s has access %q, which this test does not know", r.Pattern, access)
			continue
		}
		method, path, _ := strings.Cut(r.Pattern, " ")
		path = strings.ReplaceAll(path, "{id}", "m-1") // the machine whose token is "machine token"
		path = strings.TrimSuffix(param.ReplaceAllString(path, "x"), "{$}")
		for name, auth := range creds {
			if contains(takes, name) {
				continue
			}
			status, body := e.do(method, path, auth, "{}")
			if status != http.StatusUnauthorized {
				t.Errorf("%s with %s: %d %s; want 401", r.Pattern, name, status, body)
			}
			checked[access]++
		}
	}
	for access := range right {
		if checked[access] == 0 {
			t.Errorf("no route of access %s checked", access)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
