package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// cliCase is one command line run in-process against the fake API.
type cliCase struct {
	name      string
	args      []string
	env       map[string]string // on top of LIVEPATCH_URL and the config dir; "" unsets
	stdin     string
	loggedOut bool // start without a cached session
	routes    map[string]http.HandlerFunc
	code      int
	stdout    string // exact; {URL} stands for the fake's URL
	stderr    string // exact; {URL} stands for the fake's URL
	requests  []string
}

// runCLI runs args in-process and returns the exit code, stdout and stderr.
func runCLI(t *testing.T, args []string, env map[string]string, stdin string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(t.Context(), args, strings.NewReader(stdin), &stdout, &stderr, getenv)
	return code, stdout.String(), stderr.String()
}

// loginSession caches the fake's session in dir, as a login would.
func loginSession(t *testing.T, dir, url string) {
	t.Helper()
	c := &sessionCache{dir: dir}
	if err := c.put(url, session{Token: fakeSession, User: fakeUser, ExpiresAt: time.Date(2024, 5, 11, 12, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
}

func (tc cliCase) check(t *testing.T) {
	t.Helper()
	api := newFakeAPI(t, tc.routes)
	dir := t.TempDir()
	if !tc.loggedOut {
		loginSession(t, dir, api.URL)
	}
	env := map[string]string{envURL: api.URL, envConfigDir: dir}
	for k, v := range tc.env {
		env[k] = strings.ReplaceAll(v, "{URL}", api.URL)
	}
	code, stdout, stderr := runCLI(t, tc.args, env, tc.stdin)
	expand := func(s string) string { return strings.ReplaceAll(s, "{URL}", api.URL) }
	if code != tc.code {
		t.Errorf("exit code = %d, want %d", code, tc.code)
	}
	if diff := cmp.Diff(expand(tc.stdout), stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(expand(tc.stderr), stderr); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if tc.requests != nil {
		if diff := cmp.Diff(tc.requests, api.Requests(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("requests (-want +got):\n%s", diff)
		}
	}
}

const notLoggedIn = "error: not logged in or session expired: run livepatch-admin login\n"

func TestTier(t *testing.T) {
	tests := []cliCase{{
		name: "list",
		args: []string{"tier", "list"},
		stdout: `
POSITION  NAME
1         edge
2         beta
3         candidate
4         stable
`[1:],
		requests: []string{"GET /v1/admin/tiers"},
	}, {
		name: "list json",
		args: []string{"tier", "list", "--format", "json"},
		stdout: `
[
  {
    "name": "edge",
    "position": 1
  },
  {
    "name": "beta",
    "position": 2
  },
  {
    "name": "candidate",
    "position": 3
  },
  {
    "name": "stable",
    "position": 4
  }
]
`[1:],
	}, {
		name: "list yaml",
		args: []string{"--format=yaml", "tier", "list"},
		stdout: `
- name: edge
  position: 1
- name: beta
  position: 2
- name: candidate
  position: 3
- name: stable
  position: 4
`[1:],
	}, {
		name:   "list empty",
		args:   []string{"tier", "list"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/tiers": reply(200, `{"tiers":[]}`)},
		stdout: "No tiers.\n",
	}, {
		name:   "list empty json",
		args:   []string{"tier", "list", "--format", "json"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/tiers": reply(200, `{"tiers":[]}`)},
		stdout: "[]\n",
	}, {
		name:     "add after",
		args:     []string{"tier", "add", "qa", "--after", "beta"},
		stdout:   "Added tier qa at position 3\n",
		requests: []string{`POST /v1/admin/tiers {"name":"qa","after":"beta"}`},
	}, {
		name:     "add first",
		args:     []string{"tier", "add", "qa", "--first"},
		stdout:   "Added tier qa at position 3\n",
		requests: []string{`POST /v1/admin/tiers {"name":"qa","first":true}`},
	}, {
		name:     "add last json",
		args:     []string{"tier", "add", "qa", "--format", "json"},
		stdout:   "{\n  \"name\": \"qa\",\n  \"position\": 3\n}\n",
		requests: []string{`POST /v1/admin/tiers {"name":"qa"}`},
	}, {
		name:     "add conflict",
		args:     []string{"tier", "add", "beta"},
		routes:   map[string]http.HandlerFunc{"POST /v1/admin/tiers": apiError(409, "conflict", `tier "beta" already exists`)},
		code:     1,
		stderr:   "error: tier \"beta\" already exists\n",
		requests: []string{`POST /v1/admin/tiers {"name":"beta"}`},
	}, {
		name:     "delete",
		args:     []string{"tier", "delete", "qa"},
		stdout:   "Deleted tier qa\n",
		requests: []string{"DELETE /v1/admin/tiers/qa"},
	}, {
		name:   "delete not found",
		args:   []string{"tier", "delete", "nosuch"},
		routes: map[string]http.HandlerFunc{"DELETE /v1/admin/tiers/{name}": apiError(404, "not-found", `tier "nosuch" does not exist`)},
		code:   1,
		stderr: "error: tier \"nosuch\" does not exist\n",
	}, {
		name: "patches",
		args: []string{"tier", "patches", "stable"},
		stdout: `
VERSION  KERNEL          FLAVOUR         ARCH   TIER    BLOCKED
107.2    5.15.0-107.117  generic         amd64  edge    no
107.1    6.8.0-31.31     lowlatency-64k  arm64  stable  yes
`[1:],
		requests: []string{"GET /v1/admin/tiers/stable/patches"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestPatch(t *testing.T) {
	tests := []cliCase{{
		name: "list",
		args: []string{"patch", "list"},
		stdout: `
VERSION  KERNEL          FLAVOUR         ARCH   TIER    BLOCKED
107.2    5.15.0-107.117  generic         amd64  edge    no
107.1    6.8.0-31.31     lowlatency-64k  arm64  stable  yes
`[1:],
		requests: []string{"GET /v1/admin/patches"},
	}, {
		name:     "list filtered empty",
		args:     []string{"patch", "list", "--tier", "beta", "--kernel", "5.15.0-107"},
		routes:   map[string]http.HandlerFunc{"GET /v1/admin/patches": reply(200, `{"patches":[]}`)},
		stdout:   "No patches.\n",
		requests: []string{"GET /v1/admin/patches?kernel=5.15.0-107&tier=beta"},
	}, {
		name: "list yaml",
		args: []string{"patch", "list", "--format", "yaml"},
		stdout: `
- filename: livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2
  version: "107.2"
  kernel: 5.15.0-107.117
  flavour: generic
  architecture: amd64
  sha256: 9f2c4e0f7d6b1a3e5c8d2f4a6b8c0e1d3f5a7b9c1e3d5f7a9b1c3e5d7f9a1b3c
  size: 2500000
  module: lkp_Ubuntu_5_15_0_107_generic_107_2
  tier: edge
  blocked: false
  source: upload
  created-at: "2024-05-02T09:30:00Z"
- filename: livepatch-6.8.0-31.31-lowlatency-64k-107.1-arm64.tar.bz2
  version: "107.1"
  kernel: 6.8.0-31.31
  flavour: lowlatency-64k
  architecture: arm64
  sha256: abc123
  size: 812
  module: lkp_Ubuntu_6_8_0_31_lowlatency_64k_107_1
  description: Fixes for 6.8.0-31
  fixes:
    - name: CVE-2024-1086
      description: nf_tables use-after-free
      bug: 'LP: #2052521'
    - name: CVE-2024-26581
  tier: stable
  blocked: true
  block-reason: breaks nfs
  source: sync
  created-at: "2024-04-20T08:00:00Z"
`[1:],
	}, {
		name: "show",
		args: []string{"patch", "show", "107.1"},
		stdout: `
filename:      livepatch-6.8.0-31.31-lowlatency-64k-107.1-arm64.tar.bz2
version:       107.1
kernel:        6.8.0-31.31
flavour:       lowlatency-64k
architecture:  arm64
module:        lkp_Ubuntu_6_8_0_31_lowlatency_64k_107_1
tier:          stable
blocked:       yes: breaks nfs
source:        sync
created:       2024-04-20 08:00
size:          812 B
sha256:        abc123
signed by:     not signed (clients with a trusted-key refuse it)
description:   Fixes for 6.8.0-31
fixes:
  - CVE-2024-1086: nf_tables use-after-free (LP: #2052521)
  - CVE-2024-26581
`[1:],
		requests: []string{"GET /v1/admin/patches/107.1"},
	}, {
		name:   "show two files",
		args:   []string{"patch", "show", "107.2"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/patches/{version}": reply(200, jsonPatches)},
		stdout: `
filename:      livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2
version:       107.2
kernel:        5.15.0-107.117
flavour:       generic
architecture:  amd64
module:        lkp_Ubuntu_5_15_0_107_generic_107_2
tier:          edge
blocked:       no
source:        upload
created:       2024-05-02 09:30
size:          2.4 MiB
sha256:        9f2c4e0f7d6b1a3e5c8d2f4a6b8c0e1d3f5a7b9c1e3d5f7a9b1c3e5d7f9a1b3c
signed by:     not signed (clients with a trusted-key refuse it)

filename:      livepatch-6.8.0-31.31-lowlatency-64k-107.1-arm64.tar.bz2
version:       107.1
kernel:        6.8.0-31.31
flavour:       lowlatency-64k
architecture:  arm64
module:        lkp_Ubuntu_6_8_0_31_lowlatency_64k_107_1
tier:          stable
blocked:       yes: breaks nfs
source:        sync
created:       2024-04-20 08:00
size:          812 B
sha256:        abc123
signed by:     not signed (clients with a trusted-key refuse it)
description:   Fixes for 6.8.0-31
fixes:
  - CVE-2024-1086: nf_tables use-after-free (LP: #2052521)
  - CVE-2024-26581
`[1:],
	}, {
		name:   "show not found",
		args:   []string{"patch", "show", "99.9"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/patches/{version}": apiError(404, "not-found", `patch version "99.9" does not exist`)},
		code:   1,
		stderr: "error: patch version \"99.9\" does not exist\n",
	}, {
		name:     "promote",
		args:     []string{"patch", "promote", "107.1", "stable"},
		stdout:   "Promoted 2 files of patch 107.1 to stable\n",
		requests: []string{`POST /v1/admin/patches/107.1/promote {"tier":"stable"}`},
	}, {
		name:     "promote json",
		args:     []string{"patch", "promote", "107.1", "stable", "--format=json"},
		stdout:   "{\n  \"promoted\": 2\n}\n",
		requests: []string{`POST /v1/admin/patches/107.1/promote {"tier":"stable"}`},
	}, {
		name:     "promote-all",
		args:     []string{"patch", "promote-all", "candidate", "stable"},
		stdout:   "Promoted 3 patch files from candidate to stable\n",
		requests: []string{`POST /v1/admin/tiers/candidate/promote-all {"to":"stable"}`},
	}, {
		name:     "block",
		args:     []string{"patch", "block", "107.2", "--reason", "breaks nfs"},
		stdout:   "Blocked 1 file of patch 107.2\n",
		requests: []string{`POST /v1/admin/patches/107.2/block {"reason":"breaks nfs"}`},
	}, {
		name:     "block without reason",
		args:     []string{"patch", "block", "107.2"},
		stdout:   "Blocked 1 file of patch 107.2\n",
		requests: []string{`POST /v1/admin/patches/107.2/block {}`},
	}, {
		name:     "unblock",
		args:     []string{"patch", "unblock", "107.2"},
		stdout:   "Unblocked 2 files of patch 107.2\n",
		requests: []string{`POST /v1/admin/patches/107.2/unblock`},
	}, {
		name: "promote missing tier",
		args: []string{"patch", "promote", "107.1"},
		code: 2,
		stderr: `
error: missing argument <tier>
Usage:
  livepatch-admin patch promote <version> <tier> [flags]

Examples:
  livepatch-admin patch promote 107.1 stable

Flags:
  -h, --help   help for promote

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
		requests: []string{},
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestPatchUpload(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2")
	bad := filepath.Join(dir, "livepatch-junk.tar.bz2")
	for path, data := range map[string]string{good: "good archive", bad: "bad archive"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.tar.bz2")
	upload := func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("filename") == "livepatch-junk.tar.bz2" {
			apiError(400, "invalid", `invalid patch filename "livepatch-junk.tar.bz2": it has too few parts`)(w, r)
			return
		}
		reply(201, jsonPatch1)(w, r)
	}
	tests := []cliCase{{
		name:     "one",
		args:     []string{"patch", "upload", good},
		stdout:   "Uploaded livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 (version 107.2, tier edge)\n",
		requests: []string{"PUT /v1/admin/patches/files/livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 good archive"},
	}, {
		name:   "already there",
		args:   []string{"patch", "upload", good},
		routes: map[string]http.HandlerFunc{"PUT /v1/admin/patches/files/{filename}": reply(200, jsonPatch1)},
		stdout: "Already uploaded: livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 (version 107.2, tier edge)\n",
	}, {
		name:   "some fail",
		args:   []string{"patch", "upload", bad, missing, good},
		routes: map[string]http.HandlerFunc{"PUT /v1/admin/patches/files/{filename}": upload},
		code:   1,
		stdout: "Uploaded livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 (version 107.2, tier edge)\n",
		stderr: "error: cannot upload " + bad + ": invalid patch filename \"livepatch-junk.tar.bz2\": it has too few parts\n" +
			"error: cannot upload " + missing + ": open " + missing + ": no such file or directory\n",
		requests: []string{
			"PUT /v1/admin/patches/files/livepatch-junk.tar.bz2 bad archive",
			"PUT /v1/admin/patches/files/livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 good archive",
		},
	}, {
		name:   "json",
		args:   []string{"patch", "upload", "--format", "json", good},
		stdout: "[\n" + indentJSON(t, jsonPatch1, "  ") + "\n]\n",
	}, {
		name:     "session expired stops",
		args:     []string{"patch", "upload", good, good},
		routes:   map[string]http.HandlerFunc{"PUT /v1/admin/patches/files/{filename}": apiError(401, "unauthorized", "session expired or unknown: log in again")},
		code:     1,
		stderr:   notLoggedIn,
		requests: []string{"PUT /v1/admin/patches/files/livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2 good archive"},
	}, {
		name:     "no file",
		args:     []string{"patch", "upload"},
		code:     2,
		requests: []string{},
		stderr: `
error: missing argument <file>
Usage:
  livepatch-admin patch upload <file>... [flags]

Flags:
  -h, --help   help for upload

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// indentJSON indents a compact JSON document as the CLI prints it, nested by prefix.
func indentJSON(t *testing.T, doc, prefix string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(doc), prefix, "  "); err != nil {
		t.Fatal(err)
	}
	return prefix + buf.String()
}

func TestAuthToken(t *testing.T) {
	tests := []cliCase{{
		name:     "issue",
		args:     []string{"auth-token", "web", "stable", "--expires", "2025-12-31", "--max-machines", "10"},
		stdout:   fakeAuthTok + "\n",
		requests: []string{`POST /v1/admin/auth-tokens {"id":"web","tier":"stable","expires-at":"2025-12-31T00:00:00Z","max-machines":10}`},
	}, {
		name:     "issue minimal",
		args:     []string{"auth-token", "web", "stable"},
		stdout:   fakeAuthTok + "\n",
		requests: []string{`POST /v1/admin/auth-tokens {"id":"web","tier":"stable"}`},
	}, {
		name: "issue json",
		args: []string{"auth-token", "web", "stable", "--format", "json"},
		stdout: (`
{
  "id": "web",
  "tier": "stable",
  "token": "` + fakeAuthTok + `",
  "created-at": "2024-05-01T12:00:00Z",
  "expires-at": "2025-12-31T00:00:00Z",
  "max-machines": 10,
  "machines": 0,
  "revoked": false
}
`)[1:],
	}, {
		name:   "unknown tier",
		args:   []string{"auth-token", "web", "nosuch"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/auth-tokens": apiError(404, "not-found", `tier "nosuch" does not exist`)},
		code:   1,
		stderr: "error: tier \"nosuch\" does not exist\n",
	}, {
		name: "no arguments lists tiers",
		args: []string{"auth-token"},
		code: 2,
		stderr: `
error: missing arguments <id> <tier>: <id> labels the machines that share the token, <tier> is the tier they get patches from
Tiers on {URL}: edge, beta, candidate, stable
Usage:
  livepatch-admin auth-token <id> <tier> [flags]

Examples:
  livepatch-admin auth-token web-servers stable
  livepatch-admin auth-token lab edge --expires 720h --max-machines 10
  livepatch-admin auth-token ci beta --expires 2025-12-31

Flags:
      --expires string     expiry: 720h, 30d or 2025-12-31 (default: never)
  -h, --help               help for auth-token
      --max-machines int   machines that may enable with it (0: unlimited)

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
		requests: []string{"GET /v1/admin/tiers"},
	}, {
		name:      "no arguments logged out",
		args:      []string{"auth-token"},
		loggedOut: true,
		code:      2,
		stderr: `
error: missing arguments <id> <tier>: <id> labels the machines that share the token, <tier> is the tier they get patches from
Usage:
  livepatch-admin auth-token <id> <tier> [flags]

Examples:
  livepatch-admin auth-token web-servers stable
  livepatch-admin auth-token lab edge --expires 720h --max-machines 10
  livepatch-admin auth-token ci beta --expires 2025-12-31

Flags:
      --expires string     expiry: 720h, 30d or 2025-12-31 (default: never)
  -h, --help               help for auth-token
      --max-machines int   machines that may enable with it (0: unlimited)

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
		requests: []string{},
	}, {
		name: "list",
		args: []string{"auth-tokens", "list"},
		stdout: `
ID   TIER    MACHINES  CREATED           EXPIRES           STATUS
web  stable  3/10      2024-05-01 12:00  2099-01-01 00:00  active
lab  edge    0         2024-05-03 08:15  never             revoked
old  beta    1         2019-01-01 00:00  2020-01-01 00:00  expired
`[1:],
		requests: []string{"GET /v1/admin/auth-tokens"},
	}, {
		name: "list yaml",
		args: []string{"auth-tokens", "list", "--format", "yaml"},
		stdout: `
- id: web
  tier: stable
  created-at: "2024-05-01T12:00:00Z"
  expires-at: "2099-01-01T00:00:00Z"
  max-machines: 10
  machines: 3
  revoked: false
- id: lab
  tier: edge
  created-at: "2024-05-03T08:15:00Z"
  machines: 0
  revoked: true
- id: old
  tier: beta
  created-at: "2019-01-01T00:00:00Z"
  expires-at: "2020-01-01T00:00:00Z"
  machines: 1
  revoked: false
`[1:],
	}, {
		name:     "revoke",
		args:     []string{"auth-tokens", "revoke", "web"},
		stdout:   "Revoked auth token web\n",
		requests: []string{"DELETE /v1/admin/auth-tokens/web"},
	}, {
		name:   "revoke unknown",
		args:   []string{"auth-tokens", "revoke", "nosuch"},
		routes: map[string]http.HandlerFunc{"DELETE /v1/admin/auth-tokens/{id}": apiError(404, "not-found", `auth token "nosuch" does not exist`)},
		code:   1,
		stderr: "error: auth token \"nosuch\" does not exist\n",
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestAuthTokenExpiresDuration(t *testing.T) {
	var got struct {
		ExpiresAt time.Time `json:"expires-at"`
	}
	routes := map[string]http.HandlerFunc{"POST /v1/admin/auth-tokens": func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		reply(201, `{"id":"web","tier":"stable","token":"t","created-at":"2024-05-01T12:00:00Z","machines":0,"revoked":false}`)(w, r)
	}}
	for _, tt := range []struct {
		flag string
		want time.Duration
	}{{"720h", 720 * time.Hour}, {"30d", 30 * 24 * time.Hour}} {
		api := newFakeAPI(t, routes)
		dir := t.TempDir()
		loginSession(t, dir, api.URL)
		before := time.Now().Truncate(time.Second)
		code, _, stderr := runCLI(t, []string{"auth-token", "web", "stable", "--expires", tt.flag}, map[string]string{envURL: api.URL, envConfigDir: dir}, "")
		after := time.Now()
		if code != 0 {
			t.Fatalf("--expires %s: exit %d: %s", tt.flag, code, stderr)
		}
		if got.ExpiresAt.Before(before.Add(tt.want-24*time.Hour)) || got.ExpiresAt.After(after.Add(tt.want+24*time.Hour)) {
			t.Errorf("--expires %s sent %v, want about now + %v", tt.flag, got.ExpiresAt, tt.want)
		}
	}
}

func TestStorage(t *testing.T) {
	tests := []cliCase{{
		name: "patches",
		args: []string{"storage", "patches"},
		stdout: `
FILENAME                                              SIZE     RECORDED
livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2  2.4 MiB  yes
livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2  4.0 KiB  no
`[1:],
		requests: []string{"GET /v1/admin/storage/patches"},
	}, {
		name: "patches json",
		args: []string{"storage", "patches", "--format", "json"},
		stdout: `
[
  {
    "filename": "livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2",
    "size": 2500000,
    "mod-time": "2024-05-02T09:30:00Z",
    "recorded": true
  },
  {
    "filename": "livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2",
    "size": 4096,
    "recorded": false
  }
]
`[1:],
	}, {
		name: "refresh",
		args: []string{"storage", "refresh"},
		stdout: `
added:    livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2
removed:  livepatch-5.15.0-100.110-generic-100.1-amd64.tar.bz2
invalid:  livepatch-junk.tar.bz2: invalid patch filename
Storage refreshed: 1 added, 1 removed, 0 missing, 0 mismatched, 1 invalid
`[1:],
		requests: []string{`POST /v1/admin/storage/refresh {"prune":false}`},
	}, {
		name: "refresh finds missing and mismatched files",
		args: []string{"storage", "refresh"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/storage/refresh": reply(200,
			`{"added":[],"removed":[],"missing":["livepatch-5.15.0-100.110-generic-100.1-amd64.tar.bz2"],`+
				`"mismatched":[{"filename":"livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2","recorded-sha256":"aa","stored-sha256":"bb"}],"invalid":[]}`)},
		stdout: `
missing:     livepatch-5.15.0-100.110-generic-100.1-amd64.tar.bz2
mismatched:  livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2: recorded sha256 aa, stored bb
Storage refreshed: 0 added, 0 removed, 1 missing, 1 mismatched, 0 invalid
Missing files are still recorded: copy them back, or refresh with --prune to forget them.
Clients refuse mismatched files: upload the recorded file again to repair them.
`[1:],
	}, {
		name: "refresh prune",
		args: []string{"storage", "refresh", "--prune"},
		stdout: `
added:    livepatch-5.15.0-108.118-generic-108.1-amd64.tar.bz2
removed:  livepatch-5.15.0-100.110-generic-100.1-amd64.tar.bz2
invalid:  livepatch-junk.tar.bz2: invalid patch filename
Storage refreshed: 1 added, 1 removed, 0 missing, 0 mismatched, 1 invalid
`[1:],
		requests: []string{`POST /v1/admin/storage/refresh {"prune":true}`},
	}, {
		name:   "refresh nothing yaml",
		args:   []string{"storage", "refresh", "--format", "yaml"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/storage/refresh": reply(200, `{"added":null,"removed":[],"invalid":[]}`)},
		stdout: `
added: []
removed: []
missing: []
mismatched: []
invalid: []
`[1:],
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestReport(t *testing.T) {
	tests := []cliCase{{
		name: "machines",
		args: []string{"report", "machines", "stable"},
		stdout: `
MACHINE                           HOSTNAME  TIER    KERNEL                   PATCH  STATE             LAST SEEN
4c4c4544003957108052b4c04f384e32  -         stable  5.15.0-107-generic       107.1  applied           2024-05-04 10:00
9a3e0f7c2b6d4e18a5c1f0b2d3e4f5a6  -         stable  6.8.0-31-lowlatency-64k  -      nothing-to-apply  -
`[1:],
		requests: []string{
			"GET /v1/admin/reports/machines?limit=1000&tier=stable",
			"GET /v1/admin/reports/machines?after=4c4c4544003957108052b4c04f384e32&limit=1000&tier=stable",
		},
	}, {
		name:   "machines filtered empty",
		args:   []string{"report", "machines", "stable", "107.1", "apply-failed"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/machines": reply(200, `{"machines":[],"next":""}`)},
		stdout: "No machines.\n",
		requests: []string{
			"GET /v1/admin/reports/machines?limit=1000&state=apply-failed&tier=stable&version=107.1",
		},
	}, {
		name:   "machines json",
		args:   []string{"report", "machines", "stable", "--format", "json"},
		stdout: "[\n" + indentJSON(t, jsonMachine1, "  ") + ",\n" + indentJSON(t, jsonMachine2, "  ") + "\n]\n",
	}, {
		name:     "machines bad state",
		args:     []string{"report", "machines", "stable", "107.1", "broken"},
		code:     2,
		requests: []string{},
		stderr: `
error: invalid patch state "broken": want one of applied, apply-failed, unapplied, nothing-to-apply, check-failed, needs-check, kernel-upgrade-required, unknown
Usage:
  livepatch-admin report machines [<tier> [<patch-version> [<patch-state>]]] [flags]

Examples:
  livepatch-admin report machines stable
  livepatch-admin report machines stable 107.1 apply-failed
  livepatch-admin report machines --seen-before 7d
  livepatch-admin report machines --tag role=web --seen-after 1h --format json

Flags:
  -h, --help                 help for machines
      --hostname string      the machines of this hostname
      --kernel string        machines running this kernel (uname -r)
      --seen-after string    machines last seen within this age (1h, 30d)
      --seen-before string   machines last seen longer ago than this age (7d, 36h), or never
      --state string         machines in this patch state
      --tag stringArray      machines with tag key=value (repeat: every tag must match)
      --tier string          machines of this tier
      --version string       machines running this patch version

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
	}, {
		name: "patch health",
		args: []string{"report", "patch-health", "stable", "107.1"},
		stdout: `
Patch 107.1 in tier stable: 3 machines
STATE         MACHINES
applied       2
apply-failed  1
`[1:],
		requests: []string{"GET /v1/admin/reports/patch-health?tier=stable&version=107.1"},
	}, {
		name: "patch health json",
		args: []string{"report", "patch-health", "stable", "107.1", "--format", "json"},
		stdout: `
{
  "tier": "stable",
  "version": "107.1",
  "total": 3,
  "states": {
    "applied": 2,
    "apply-failed": 1,
    "unapplied": 0
  }
}
`[1:],
	}, {
		name:   "patch health none",
		args:   []string{"report", "patch-health", "stable", "99.1"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/patch-health": reply(200, `{"tier":"stable","version":"99.1","total":0,"states":{}}`)},
		stdout: "Patch 99.1 in tier stable: 0 machines\n",
	}, {
		name: "kernels",
		args: []string{"report", "kernels"},
		stdout: `
KERNEL                   ARCH   MACHINES
5.15.0-107-generic       amd64  12
6.8.0-31-lowlatency-64k  arm64  1
`[1:],
		requests: []string{"GET /v1/admin/reports/kernels"},
	}, {
		name: "kernels yaml",
		args: []string{"report", "kernels", "--format", "yaml"},
		stdout: `
- kernel: 5.15.0-107-generic
  architecture: amd64
  machines: 12
- kernel: 6.8.0-31-lowlatency-64k
  architecture: arm64
  machines: 1
`[1:],
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func TestLogin(t *testing.T) {
	tests := []cliCase{{
		name:      "user and password",
		args:      []string{"login", "-a", fakeUser + ":" + fakePassword},
		loggedOut: true,
		stdout:    "Logged in as admin; session valid until 2024-05-11T12:00:00Z\n",
		requests:  []string{"POST /v1/admin/login"},
	}, {
		name:      "password from environment",
		args:      []string{"login", "--auth", fakeUser},
		env:       map[string]string{envPassword: fakePassword},
		loggedOut: true,
		stdout:    "Logged in as admin; session valid until 2024-05-11T12:00:00Z\n",
	}, {
		name:      "password from stdin",
		args:      []string{"login", "-a", fakeUser},
		stdin:     fakePassword + "\nignored\n",
		loggedOut: true,
		stdout:    "Logged in as admin; session valid until 2024-05-11T12:00:00Z\n",
	}, {
		name:      "json",
		args:      []string{"login", "-a", fakeUser + ":" + fakePassword, "--format", "json"},
		loggedOut: true,
		stdout:    "{\n  \"url\": \"{URL}\",\n  \"user\": \"admin\",\n  \"expires-at\": \"2024-05-11T12:00:00Z\"\n}\n",
	}, {
		name:      "wrong password",
		args:      []string{"login", "-a", fakeUser + ":nope"},
		loggedOut: true,
		code:      1,
		stderr:    "error: invalid username or password\n",
	}, {
		name:      "empty password",
		args:      []string{"login", "-a", fakeUser},
		loggedOut: true,
		code:      1,
		stderr:    "error: cannot log in: empty password\n",
		requests:  []string{},
	}, {
		name:      "no server",
		args:      []string{"login", "-a", fakeUser + ":" + fakePassword},
		env:       map[string]string{envURL: ""},
		loggedOut: true,
		code:      1,
		stderr:    "error: no server URL: use --url or set LIVEPATCH_URL\n",
	}, {
		name:      "bad server URL",
		args:      []string{"login", "-a", fakeUser + ":" + fakePassword, "--url", "10.0.0.1"},
		loggedOut: true,
		code:      1,
		stderr:    "error: invalid server URL \"10.0.0.1\": want http://host[:port] or https://host[:port]\n",
	}, {
		name: "no user",
		args: []string{"login"},
		code: 2,
		stderr: `
error: missing -a <user>[:<password>]
Usage:
  livepatch-admin login -a <user>[:<password>] [flags]

Examples:
  LIVEPATCH_URL=http://10.0.0.10 livepatch-admin login -a admin:secret
  livepatch-admin --url http://10.0.0.10 login -a admin

Flags:
  -a, --auth string   user name, or user:password
  -h, --help          help for login

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// TestLoginCache checks the session cache: where it is, its modes, what it holds, and
// that commands use it and logout forgets it.
func TestLoginCache(t *testing.T) {
	api := newFakeAPI(t, nil)
	dir := filepath.Join(t.TempDir(), "config")
	env := map[string]string{envURL: api.URL + "/", envConfigDir: dir}

	code, stdout, stderr := runCLI(t, []string{"login", "-a", fakeUser + ":" + fakePassword}, env, "")
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, stderr)
	}
	for _, out := range []string{stdout, stderr} {
		if strings.Contains(out, fakePassword) || strings.Contains(out, fakeSession) {
			t.Errorf("login printed a secret: %q", out)
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode = %v, want 0700", st.Mode().Perm())
	}
	path := filepath.Join(dir, sessionsFile)
	st, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("session cache mode = %v, want 0600", st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cached map[string]session
	if err := json.Unmarshal(data, &cached); err != nil {
		t.Fatal(err)
	}
	want := map[string]session{api.URL: {Token: fakeSession, User: fakeUser, ExpiresAt: time.Date(2024, 5, 11, 12, 0, 0, 0, time.UTC)}}
	if diff := cmp.Diff(want, cached); diff != "" {
		t.Errorf("session cache (-want +got):\n%s", diff)
	}

	// Another server's session is kept apart.
	other := newFakeAPI(t, nil)
	code, _, stderr = runCLI(t, []string{"tier", "list", "--url", other.URL}, env, "")
	if code != 1 || stderr != notLoggedIn {
		t.Errorf("other server: exit %d, stderr %q; want 1, %q", code, stderr, notLoggedIn)
	}

	code, stdout, stderr = runCLI(t, []string{"logout"}, env, "")
	if code != 0 || stdout != "Logged out of "+api.URL+"\n" || stderr != "" {
		t.Errorf("logout: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, []string{"logout"}, env, "")
	if code != 0 || stdout != "Not logged in to "+api.URL+"\n" {
		t.Errorf("second logout: exit %d, stdout %q", code, stdout)
	}
	code, _, stderr = runCLI(t, []string{"tier", "list"}, env, "")
	if code != 1 || stderr != notLoggedIn {
		t.Errorf("after logout: exit %d, stderr %q; want 1, %q", code, stderr, notLoggedIn)
	}
	wantReqs := []string{"POST /v1/admin/login", "POST /v1/admin/logout"}
	if diff := cmp.Diff(wantReqs, api.Requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestSessionExpired checks that a 401 says to log in and forgets the dead session.
func TestSessionExpired(t *testing.T) {
	api := newFakeAPI(t, nil)
	dir := t.TempDir()
	c := &sessionCache{dir: dir}
	if err := c.put(api.URL, session{Token: "stale"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envURL: api.URL, envConfigDir: dir}
	code, stdout, stderr := runCLI(t, []string{"patch", "list"}, env, "")
	if code != 1 || stdout != "" || stderr != notLoggedIn {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, stdout, stderr, notLoggedIn)
	}
	if _, ok, err := c.get(api.URL); ok || err != nil {
		t.Errorf("stale session still cached (err %v)", err)
	}
	// A logout with a dead session still forgets it.
	if err := c.put(api.URL, session{Token: "stale"}); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCLI(t, []string{"logout"}, env, "")
	if code != 0 || stdout != "Logged out of "+api.URL+"\n" {
		t.Errorf("logout: exit %d, stdout %q", code, stdout)
	}
}

func TestErrors(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	tests := []cliCase{{
		name:      "not logged in",
		args:      []string{"report", "kernels"},
		loggedOut: true,
		code:      1,
		stderr:    notLoggedIn,
		requests:  []string{},
	}, {
		name:   "unreachable",
		args:   []string{"--url", closedURL, "login", "-a", "admin:pw"},
		code:   1,
		stderr: "error: cannot reach livepatch server at " + closedURL + ": dial tcp " + strings.TrimPrefix(closedURL, "http://") + ": connect: connection refused\n",
	}, {
		name:   "proxy error page",
		args:   []string{"tier", "list"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/tiers": reply(503, "<html>No server is available to handle this request.</html>")},
		code:   1,
		stderr: "error: server returned 503 Service Unavailable\n",
	}, {
		name:     "bad format",
		args:     []string{"tier", "list", "--format", "xml"},
		code:     2,
		requests: []string{},
		stderr: `
error: invalid --format "xml": want table, json or yaml
Usage:
  livepatch-admin tier list [flags]

Flags:
  -h, --help   help for list

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`[1:],
	}, {
		name:   "missing CA file",
		args:   []string{"tier", "list", "--ca", "/nonexistent/ca.crt"},
		code:   1,
		stderr: "error: cannot read CA certificate: open /nonexistent/ca.crt: no such file or directory\n",
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// TestUsageErrors checks that command line mistakes exit 2 with the message first.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		msg  string
	}{
		{nil, "error: missing command"},
		{[]string{"tiers"}, `error: unknown command "tiers" for "livepatch-admin" (did you mean "tier"?)`},
		{[]string{"tier"}, "error: missing command"},
		{[]string{"tier", "lst"}, `error: unknown command "lst" for "livepatch-admin tier" (did you mean "list"?)`},
		{[]string{"tier", "list", "extra"}, `error: unexpected argument "extra"`},
		{[]string{"tier", "list", "--bogus"}, "error: unknown flag: --bogus"},
		{[]string{"tier", "add", "qa", "--first", "--after", "beta"}, "error: --after and --first cannot be used together"},
		{[]string{"tier", "add"}, "error: missing argument <name>"},
		{[]string{"patch", "promote-all"}, "error: missing arguments <from-tier> <to-tier>"},
		{[]string{"report", "machines", "a", "b", "applied", "d"}, `error: unexpected argument "d"`},
		{[]string{"report", "downstream", "a", "b"}, `error: unexpected argument "b"`},
		{[]string{"report", "downstream", "--state", "applied"}, "error: --state and --tier need a <deployment-id>"},
		{[]string{"report", "downstream", "bad/id"}, `error: invalid deployment id "bad/id": use 1-128 letters, digits, dots, dashes and underscores`},
		{[]string{"report", "downstream", "lab", "--tier", "Stable"}, `error: invalid --tier: invalid tier name "Stable": use 1-63 lower-case letters, digits and dashes`},
		{[]string{"auth-token", "web"}, "error: missing argument <tier>"},
		{[]string{"auth-token", "web", "stable", "--expires", "soon"}, `error: invalid --expires "soon": want a duration (720h, 30d), a date (2025-12-31) or an RFC 3339 time`},
		{[]string{"auth-token", "web", "stable", "--max-machines", "many"}, `error: invalid argument "many" for "--max-machines" flag: strconv.ParseInt: parsing "many": invalid syntax`},
		{[]string{"auth-tokens", "revoke"}, "error: missing argument <id>"},
		{[]string{"login", "-a", ":pw"}, "error: missing user name in -a"},
	}
	api := newFakeAPI(t, nil)
	dir := t.TempDir()
	loginSession(t, dir, api.URL)
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, tt.args, map[string]string{envURL: api.URL, envConfigDir: dir}, "")
		first, rest, _ := strings.Cut(stderr, "\n")
		if code != 2 || first != tt.msg || !strings.HasPrefix(rest, "Usage:\n") || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q then the usage", tt.args, code, stdout, stderr, tt.msg)
		}
	}
	if reqs := api.Requests(); len(reqs) != 0 {
		t.Errorf("usage errors sent requests: %q", reqs)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, stderr := runCLI(t, []string{"completion", shell}, map[string]string{}, "")
		if code != 0 || stderr != "" || !strings.Contains(stdout, "livepatch-admin") {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
	code, stdout, _ := runCLI(t, []string{"__complete", "patch", "pro"}, map[string]string{}, "")
	if code != 0 || !strings.HasPrefix(stdout, "promote\t") || !strings.Contains(stdout, "\npromote-all\t") {
		t.Errorf("__complete patch pro: exit %d, %q", code, stdout)
	}
}

func TestCompletionTiers(t *testing.T) {
	api := newFakeAPI(t, nil)
	dir := t.TempDir()
	loginSession(t, dir, api.URL)
	env := map[string]string{envURL: api.URL, envConfigDir: dir}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "tier", "delete", ""}, []string{"edge", "beta", "candidate", "stable", ":4"}},
		{[]string{"__complete", "patch", "promote", "107.1", ""}, []string{"edge", "beta", "candidate", "stable", ":4"}},
		{[]string{"__complete", "patch", "promote", ""}, []string{":4"}},
		{[]string{"__complete", "patch", "list", "--tier", ""}, []string{"edge", "beta", "candidate", "stable", ":4"}},
		{[]string{"__complete", "report", "machines", "stable", "107.1", "app"}, []string{"applied", "apply-failed", ":4"}},
		{[]string{"__complete", "tier", "list", "--format", ""}, []string{"table", "json", "yaml", ":4"}},
		{[]string{"__complete", "report", "downstream", "l"}, []string{"lab", ":4"}},
		{[]string{"__complete", "report", "downstream", "lab", "--state", "app"}, []string{"applied", "apply-failed", ":4"}},
	}
	for _, tt := range tests {
		code, stdout, _ := runCLI(t, tt.args, env, "")
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, ":") }); i >= 0 {
			lines = lines[:i+1]
		}
		if code != 0 || !cmp.Equal(tt.want, lines) {
			t.Errorf("%q: exit %d, completions %q, want %q", tt.args, code, lines, tt.want)
		}
	}
	// Logged out, completion offers nothing and says nothing.
	code, stdout, _ := runCLI(t, []string{"__complete", "tier", "delete", ""}, map[string]string{envURL: api.URL, envConfigDir: t.TempDir()}, "")
	if code != 0 || !strings.HasPrefix(stdout, ":4\n") {
		t.Errorf("logged out: exit %d, %q", code, stdout)
	}
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	bar := newProgressBar(&buf, "livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2", 4<<20)
	for _, sent := range []int64{0, 1000, 1 << 20, 1<<20 + 1, 4 << 20} {
		bar.update(sent, 4<<20)
	}
	bar.done()
	want := "" +
		"\r...ric-107.2-amd64.tar.bz2 [                    ]   0%        0 B /    4.0 MiB" +
		"\r...ric-107.2-amd64.tar.bz2 [====>               ]  25%    1.0 MiB /    4.0 MiB" +
		"\r...ric-107.2-amd64.tar.bz2 [====================] 100%    4.0 MiB /    4.0 MiB\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	for _, line := range strings.Split(buf.String(), "\r") {
		if n := len(strings.TrimSuffix(line, "\n")); n > 79 {
			t.Errorf("progress line of %d columns: %q", n, line)
		}
	}
	// A bar never drawn ends no line.
	buf.Reset()
	newProgressBar(&buf, "f", 10).done()
	if buf.Len() != 0 {
		t.Errorf("undrawn bar printed %q", buf.String())
	}
}

// TestCA checks --ca and LIVEPATCH_CA_CRT, as a path and as PEM text.
func TestCA(t *testing.T) {
	srv := httptest.NewUnstartedServer(reply(200, jsonTiers))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	caPath := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caPath, []byte(caPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	loginSession(t, dir, srv.URL)
	env := func(kv ...string) map[string]string {
		m := map[string]string{envURL: srv.URL, envConfigDir: dir}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flag path", []string{"tier", "list", "--ca", caPath}, env()},
		{"flag PEM", []string{"--ca", caPEM, "tier", "list"}, env()},
		{"env path", []string{"tier", "list"}, env(envCA, caPath)},
		{"env PEM", []string{"tier", "list"}, env(envCA, caPEM)},
	} {
		code, stdout, stderr := runCLI(t, tt.args, tt.env, "")
		if code != 0 || !strings.HasPrefix(stdout, "POSITION  NAME\n") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", tt.name, code, stdout, stderr)
		}
	}
	code, _, stderr := runCLI(t, []string{"tier", "list"}, env(), "")
	if code != 1 || !strings.HasPrefix(stderr, "error: cannot reach livepatch server at "+srv.URL+": tls: failed to verify certificate") {
		t.Errorf("without CA: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, []string{"tier", "list", "--ca", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}, env(), "")
	if code != 1 || stderr != "error: cannot use CA certificate: no PEM certificate found\n" {
		t.Errorf("bad CA: exit %d, stderr %q", code, stderr)
	}
}
