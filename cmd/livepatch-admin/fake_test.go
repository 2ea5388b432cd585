package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The fake API answers with fixed data in the shapes of docs/contracts.md.
const (
	fakeUser     = "admin"
	fakePassword = "pa55:word"
	fakeSession  = "sess-token-123"
	fakeAuthTok  = "0b8e1f0c-6b5d-4c4e-9a71-9f1f0e8c1d2a"
)

const (
	jsonTiers   = `{"tiers":[{"name":"edge","position":1},{"name":"beta","position":2},{"name":"candidate","position":3},{"name":"stable","position":4}]}`
	jsonPatch1  = `{"filename":"livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2","version":"107.2","kernel":"5.15.0-107.117","flavour":"generic","architecture":"amd64","sha256":"9f2c4e0f7d6b1a3e5c8d2f4a6b8c0e1d3f5a7b9c1e3d5f7a9b1c3e5d7f9a1b3c","size":2500000,"module":"lkp_Ubuntu_5_15_0_107_generic_107_2","tier":"edge","blocked":false,"source":"upload","created-at":"2024-05-02T09:30:00Z"}`
	jsonPatch2  = `{"filename":"livepatch-6.8.0-31.31-lowlatency-64k-107.1-arm64.tar.bz2","version":"107.1","kernel":"6.8.0-31.31","flavour":"lowlatency-64k","architecture":"arm64","sha256":"abc123","size":812,"module":"lkp_Ubuntu_6_8_0_31_lowlatency_64k_107_1","description":"Fixes for 6.8.0-31","fixes":[{"name":"CVE-2024-1086","description":"nf_tables use-after-free","bug":"LP: #2052521"},{"name":"CVE-2024-26581"}],"tier":"stable","blocked":true,"block-reason":"breaks nfs","source":"sync","created-at":"2024-04-20T08:00:00Z"}`
	jsonPatches = `{"patches":[` + jsonPatch1 + `,` + jsonPatch2 + `]}`
	jsonTokens  = `{"tokens":[` +
		`{"id":"web","tier":"stable","created-at":"2024-05-01T12:00:00Z","expires-at":"2099-01-01T00:00:00Z","max-machines":10,"machines":3,"revoked":false},` +
		`{"id":"lab","tier":"edge","created-at":"2024-05-03T08:15:00Z","machines":0,"revoked":true},` +
		`{"id":"old","tier":"beta","created-at":"2019-01-01T00:00:00Z","expires-at":"2020-01-01T00:00:00Z","machines":1,"revoked":false}]}`
	jsonMachine1 = `{"id":"4c4c4544003957108052b4c04f384e32","tier":"stable","token-id":"web","enabled-at":"2024-05-01T12:00:00Z","last-seen":"2024-05-04T10:00:00Z","kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1"}`
	jsonMachine2 = `{"id":"9a3e0f7c2b6d4e18a5c1f0b2d3e4f5a6","tier":"stable","token-id":"web","enabled-at":"2024-05-02T12:00:00Z","kernel":"6.8.0-31-lowlatency-64k","architecture":"arm64","patch-state":"nothing-to-apply"}`
	jsonHealth   = `{"tier":"stable","version":"107.1","total":3,"states":{"apply-failed":1,"applied":2,"unapplied":0}}`
	jsonKernels  = `{"kernels":[{"kernel":"5.15.0-107-generic","architecture":"amd64","machines":12},{"kernel":"6.8.0-31-lowlatency-64k","architecture":"arm64","machines":1}]}`
	jsonStorage  = `{"files":[{"filename":"livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2","size":2500000,"mod-time":"2024-05-02T09:30:00Z","recorded":true},{"filename":"livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2","size":4096,"recorded":false}]}`
	jsonRefresh  = `{"added":["livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2"],"removed":["livepatch-5.15.0-100.110-generic-100.1-amd64.tar.bz2"],"invalid":[{"filename":"livepatch-junk.tar.bz2","error":"invalid patch filename"}]}`
)

// fakeAPI is an httptest server emulating the livepatch HTTP API.
type fakeAPI struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD URI BODY" of each API request
}

// reply answers status with a JSON body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// apiError answers an error body as httpapi does.
func apiError(status int, code, message string) http.HandlerFunc {
	data, _ := json.Marshal(map[string]string{"code": code, "message": message})
	return reply(status, string(data))
}

// newFakeAPI starts the fake; overrides replace the handlers of the named patterns.
func newFakeAPI(t *testing.T, overrides map[string]http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	routes := map[string]http.HandlerFunc{
		"POST /v1/admin/login": func(w http.ResponseWriter, r *http.Request) {
			user, pass, _ := r.BasicAuth()
			if user != fakeUser || pass != fakePassword {
				apiError(401, "unauthorized", "invalid username or password")(w, r)
				return
			}
			reply(200, `{"token":"`+fakeSession+`","user":"admin","expires-at":"2024-05-11T12:00:00Z"}`)(w, r)
		},
		"POST /v1/admin/logout":                    reply(204, ""),
		"GET /v1/admin/tiers":                      reply(200, jsonTiers),
		"POST /v1/admin/tiers":                     reply(201, `{"name":"qa","position":3}`),
		"DELETE /v1/admin/tiers/{name}":            reply(204, ""),
		"GET /v1/admin/tiers/{name}/patches":       reply(200, jsonPatches),
		"POST /v1/admin/tiers/{name}/promote-all":  reply(200, `{"promoted":3}`),
		"GET /v1/admin/patches":                    reply(200, jsonPatches),
		"GET /v1/admin/patches/{version}":          reply(200, `{"patches":[`+jsonPatch2+`]}`),
		"PUT /v1/admin/patches/files/{filename}":   reply(201, jsonPatch1),
		"POST /v1/admin/patches/{version}/promote": reply(200, `{"promoted":2}`),
		"POST /v1/admin/patches/{version}/block":   reply(200, `{"blocked":1}`),
		"POST /v1/admin/patches/{version}/unblock": reply(200, `{"unblocked":2}`),
		"GET /v1/admin/storage/patches":            reply(200, jsonStorage),
		"POST /v1/admin/storage/refresh":           reply(200, jsonRefresh),
		"GET /v1/admin/auth-tokens":                reply(200, jsonTokens),
		"POST /v1/admin/auth-tokens": reply(201, `{"id":"web","tier":"stable","token":"`+fakeAuthTok+
			`","created-at":"2024-05-01T12:00:00Z","expires-at":"2025-12-31T00:00:00Z","max-machines":10,"machines":0,"revoked":false}`),
		"DELETE /v1/admin/auth-tokens/{id}": reply(204, ""),
		"GET /v1/admin/reports/machines": func(w http.ResponseWriter, r *http.Request) {
			// Two pages, to exercise the cursor.
			if r.URL.Query().Get("after") == "" {
				reply(200, `{"machines":[`+jsonMachine1+`],"next":"4c4c4544003957108052b4c04f384e32"}`)(w, r)
				return
			}
			reply(200, `{"machines":[`+jsonMachine2+`],"next":""}`)(w, r)
		},
		"GET /v1/admin/reports/patch-health": reply(200, jsonHealth),
		"GET /v1/admin/reports/kernels":      reply(200, jsonKernels),
	}
	maps.Copy(routes, syncRoutes())
	maps.Copy(routes, downstreamRoutes())
	for pattern, h := range overrides {
		if _, ok := routes[pattern]; !ok {
			t.Fatalf("override of unknown route %q", pattern)
		}
		routes[pattern] = h
	}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			f.mu.Lock()
			f.requests = append(f.requests, strings.TrimSpace(fmt.Sprintf("%s %s %s", r.Method, r.RequestURI, body)))
			f.mu.Unlock()
			if pattern != "POST /v1/admin/login" && r.Header.Get("Authorization") != "Bearer "+fakeSession {
				w.Header().Set("WWW-Authenticate", `Basic realm="livepatch"`)
				apiError(401, "unauthorized", "session expired or unknown: log in again")(w, r)
				return
			}
			h(w, r)
		})
	}
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// Requests returns the requests the fake has seen.
func (f *fakeAPI) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}
