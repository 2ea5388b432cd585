package main

import (
	"net/http"
	"testing"
)

const (
	fakeSyncTok      = "5d2c7a4e-1f0b-4c8e-9a3d-7b6e5f4a3c2b"
	jsonSyncSuccess  = `{"id":12,"started-at":"2024-05-04T10:00:00Z","ended-at":"2024-05-04T10:00:03Z","outcome":"success","patches-added":2,"bytes":2500812,"unit":"livepatch-0"}`
	jsonSyncFailed   = `{"id":11,"started-at":"2024-05-04T09:00:00Z","ended-at":"2024-05-04T09:00:01Z","outcome":"failed","patches-added":0,"bytes":0,"error":"checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e","unit":"livepatch-1"}`
	jsonSyncSkipped  = `{"id":13,"started-at":"2024-05-04T11:00:00Z","ended-at":"2024-05-04T11:00:00Z","outcome":"skipped","patches-added":0,"bytes":0,"error":"another unit is running a sync: this one was not started","unit":"livepatch-0"}`
	jsonSyncStatus   = `{"enabled":true,"upstream":"https://livepatch.canonical.com","upstream-tier":"stable","tier":"edge","running":false,"last-run":` + jsonSyncFailed + `,"last-success":"2024-05-04T08:00:03Z","next-run":"2024-05-04T09:01:01Z","warnings":["patch-sync.trusted-key is empty: the signatures of upstream patch lists are not verified"]}`
	jsonSyncTokens   = `{"tokens":[{"name":"lab","tier":"edge","created-at":"2024-05-03T08:15:00Z","revoked":true},{"name":"old","tier":"beta","created-at":"2019-01-01T00:00:00Z","valid-until":"2020-01-01T00:00:00Z","revoked":false},{"name":"region-eu","tier":"stable","created-at":"2024-05-01T12:00:00Z","valid-until":"2099-01-01T00:00:00Z","revoked":false}]}`
	jsonSyncTokenNew = `{"name":"region-eu","tier":"stable","token":"` + fakeSyncTok + `","created-at":"2024-05-01T12:00:00Z","valid-until":"2025-12-31T00:00:00Z","revoked":false}`
)

// syncRoutes are the fake API's sync routes (newFakeAPI adds them).
func syncRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST /v1/admin/sync/trigger": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("wait") == "true" {
				reply(200, jsonSyncSuccess)(w, r)
				return
			}
			reply(202, `{"triggered":true}`)(w, r)
		},
		"GET /v1/admin/sync/status":           reply(200, jsonSyncStatus),
		"GET /v1/admin/sync/reports":          reply(200, `{"reports":[`+jsonSyncSuccess+`,`+jsonSyncFailed+`]}`),
		"GET /v1/admin/sync-tokens":           reply(200, jsonSyncTokens),
		"POST /v1/admin/sync-tokens":          reply(201, jsonSyncTokenNew),
		"DELETE /v1/admin/sync-tokens/{name}": reply(204, ""),
	}
}

func TestSync(t *testing.T) {
	tests := []cliCase{{
		name:     "trigger",
		args:     []string{"sync", "trigger"},
		stdout:   "Sync triggered: follow it with livepatch-admin sync status\n",
		requests: []string{"POST /v1/admin/sync/trigger?wait=false"},
	}, {
		name:   "trigger json",
		args:   []string{"sync", "trigger", "--format", "json"},
		stdout: "{\n  \"triggered\": true\n}\n",
	}, {
		name:     "trigger wait",
		args:     []string{"sync", "trigger", "--wait"},
		stdout:   "Sync succeeded on livepatch-0 in 3s: 2 patches added (2.4 MiB)\n",
		requests: []string{"POST /v1/admin/sync/trigger?wait=true"},
	}, {
		name:   "trigger wait failed",
		args:   []string{"sync", "trigger", "--wait"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/sync/trigger": reply(200, jsonSyncFailed)},
		code:   1,
		stderr: "error: sync failed on livepatch-1 after 1s: checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e\n",
	}, {
		name:   "trigger wait failed yaml",
		args:   []string{"sync", "trigger", "--wait", "--format", "yaml"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/sync/trigger": reply(200, jsonSyncFailed)},
		code:   1,
		stdout: `
id: 11
started-at: "2024-05-04T09:00:00Z"
ended-at: "2024-05-04T09:00:01Z"
outcome: failed
patches-added: 0
bytes: 0
error: 'checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e'
unit: livepatch-1
`[1:],
		stderr: "error: sync failed on livepatch-1 after 1s: checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e\n",
	}, {
		name:   "trigger wait skipped",
		args:   []string{"sync", "trigger", "--wait"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/sync/trigger": reply(200, jsonSyncSkipped)},
		code:   1,
		stderr: "error: sync skipped on livepatch-0: another unit is running a sync: this one was not started\n",
	}, {
		name:   "trigger on a server without sync",
		args:   []string{"sync", "trigger"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/sync/trigger": apiError(409, "conflict", "upstream sync is not enabled on this server (patch-sync.enabled)")},
		code:   1,
		stderr: "error: upstream sync is not enabled on this server (patch-sync.enabled)\n",
	}, {
		name: "status",
		args: []string{"sync", "status"},
		stdout: `
enabled:       yes
upstream:      https://livepatch.canonical.com
upstream tier: stable
landing tier:  edge
running:       no
last run:      2024-05-04 09:00 failed on livepatch-1: checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e
last success:  2024-05-04 08:00
next run:      2024-05-04 09:01
warning:       patch-sync.trusted-key is empty: the signatures of upstream patch lists are not verified
`[1:],
		requests: []string{"GET /v1/admin/sync/status"},
	}, {
		name: "status with mirrored tiers",
		args: []string{"sync", "status"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/sync/status": reply(200,
			`{"enabled":true,"upstream":"https://up","upstream-tier":"beta","tier":"","sync-tiers":true,"running":false,"last-run":`+jsonSyncSuccess+`,"last-success":"2024-05-04T10:00:03Z"}`)},
		stdout: `
enabled:       yes
upstream:      https://up
upstream tier: beta
tiers:         mirrored from the upstream (patch-sync.sync-tiers)
running:       no
last run:      2024-05-04 10:00 success on livepatch-0: 2 patches added
last success:  2024-05-04 10:00
next run:      -
`[1:],
	}, {
		name:   "status disabled",
		args:   []string{"sync", "status"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/sync/status": reply(200, `{"enabled":false,"upstream":"","upstream-tier":"","tier":"","running":false}`)},
		stdout: `
enabled:       no
last run:      never
last success:  never
`[1:],
	}, {
		name: "status json",
		args: []string{"sync", "status", "--format=json"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/sync/status": reply(200,
			`{"enabled":true,"upstream":"https://up","upstream-tier":"stable","tier":"edge","running":true,"last-run":`+jsonSyncSuccess+`,"last-success":"2024-05-04T10:00:03Z"}`)},
		stdout: `
{
  "enabled": true,
  "upstream": "https://up",
  "upstream-tier": "stable",
  "tier": "edge",
  "sync-tiers": false,
  "running": true,
  "last-run": {
    "id": 12,
    "started-at": "2024-05-04T10:00:00Z",
    "ended-at": "2024-05-04T10:00:03Z",
    "outcome": "success",
    "patches-added": 2,
    "bytes": 2500812,
    "unit": "livepatch-0"
  },
  "last-success": "2024-05-04T10:00:03Z"
}
`[1:],
	}, {
		name: "reports",
		args: []string{"sync", "reports"},
		stdout: `
ID  STARTED           DURATION  OUTCOME  ADDED  SIZE     UNIT         ERROR
12  2024-05-04 10:00  3s        success  2      2.4 MiB  livepatch-0  -
11  2024-05-04 09:00  1s        failed   0      0 B      livepatch-1  checksum mismatch for livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2: want sha256 9f2c, got 0b1e
`[1:],
		requests: []string{"GET /v1/admin/sync/reports?limit=20"},
	}, {
		name:     "report alias with limit",
		args:     []string{"sync", "report", "--limit", "5"},
		routes:   map[string]http.HandlerFunc{"GET /v1/admin/sync/reports": reply(200, `{"reports":[]}`)},
		stdout:   "No sync reports.\n",
		requests: []string{"GET /v1/admin/sync/reports?limit=5"},
	}, {
		name:     "reports bad limit",
		args:     []string{"sync", "reports", "--limit", "0"},
		code:     2,
		stderr:   "error: invalid --limit 0: want 1 to 1000\n" + syncReportsUsage,
		requests: []string{},
	}, {
		name:      "logged out",
		args:      []string{"sync", "status"},
		loggedOut: true,
		code:      1,
		stderr:    notLoggedIn,
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

const syncReportsUsage = `Usage:
  livepatch-admin sync reports [flags]

Aliases:
  reports, report

Flags:
  -h, --help        help for reports
      --limit int   how many runs to list (at most 1000) (default 20)

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`

func TestSyncTokens(t *testing.T) {
	tests := []cliCase{{
		name:     "add",
		args:     []string{"sync-tokens", "add", "stable", "region-eu"},
		stdout:   fakeSyncTok + "\n",
		requests: []string{`POST /v1/admin/sync-tokens {"name":"region-eu","tier":"stable"}`},
	}, {
		name:     "add valid until",
		args:     []string{"sync-tokens", "add", "stable", "region-eu", "--valid-until", "2025-12-31"},
		stdout:   fakeSyncTok + "\n",
		requests: []string{`POST /v1/admin/sync-tokens {"name":"region-eu","tier":"stable","valid-until":"2025-12-31T00:00:00Z"}`},
	}, {
		name: "add json",
		args: []string{"sync-tokens", "add", "stable", "region-eu", "--format", "json"},
		stdout: `
{
  "name": "region-eu",
  "tier": "stable",
  "token": "5d2c7a4e-1f0b-4c8e-9a3d-7b6e5f4a3c2b",
  "created-at": "2024-05-01T12:00:00Z",
  "valid-until": "2025-12-31T00:00:00Z",
  "revoked": false
}
`[1:],
	}, {
		name:     "add bad date",
		args:     []string{"sync-tokens", "add", "stable", "region-eu", "--valid-until", "someday"},
		code:     2,
		stderr:   "error: invalid --valid-until \"someday\": want a duration (720h, 30d), a date (2025-12-31) or an RFC 3339 time\n" + syncTokensAddUsage,
		requests: []string{},
	}, {
		name:     "add missing name",
		args:     []string{"sync-tokens", "add", "stable"},
		code:     2,
		stderr:   "error: missing argument <name>\n" + syncTokensAddUsage,
		requests: []string{},
	}, {
		name:   "add unknown tier",
		args:   []string{"sync-tokens", "add", "nosuch", "region-eu"},
		routes: map[string]http.HandlerFunc{"POST /v1/admin/sync-tokens": apiError(404, "not-found", `tier "nosuch" not found`)},
		code:   1,
		stderr: "error: tier \"nosuch\" not found\n",
	}, {
		name: "list",
		args: []string{"sync-tokens", "list"},
		stdout: `
NAME       TIER    CREATED           VALID UNTIL       STATUS
lab        edge    2024-05-03 08:15  never             revoked
old        beta    2019-01-01 00:00  2020-01-01 00:00  expired
region-eu  stable  2024-05-01 12:00  2099-01-01 00:00  active
`[1:],
		requests: []string{"GET /v1/admin/sync-tokens"},
	}, {
		name:   "list empty",
		args:   []string{"sync-tokens", "list"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/sync-tokens": reply(200, `{"tokens":[]}`)},
		stdout: "No sync tokens.\n",
	}, {
		name:   "list empty json",
		args:   []string{"sync-tokens", "list", "--format", "json"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/sync-tokens": reply(200, `{"tokens":[]}`)},
		stdout: "[]\n",
	}, {
		name:     "revoke",
		args:     []string{"sync-tokens", "revoke", "region-eu"},
		stdout:   "Revoked sync token region-eu\n",
		requests: []string{"DELETE /v1/admin/sync-tokens/region-eu"},
	}, {
		name:   "revoke unknown",
		args:   []string{"sync-tokens", "revoke", "nosuch"},
		routes: map[string]http.HandlerFunc{"DELETE /v1/admin/sync-tokens/{name}": apiError(404, "not-found", `sync token "nosuch" not found`)},
		code:   1,
		stderr: "error: sync token \"nosuch\" not found\n",
	}}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

const syncTokensAddUsage = `Usage:
  livepatch-admin sync-tokens add <tier> <name> [flags]

Examples:
  livepatch-admin sync-tokens add stable region-eu
  livepatch-admin sync-tokens add edge lab --valid-until 2025-12-31

Flags:
  -h, --help                 help for add
      --valid-until string   expiry: 720h, 30d or 2025-12-31 (default: never)

Global Flags:
      --ca string                CA to trust: path or PEM (default $LIVEPATCH_CA_CRT)
      --connect-timeout string   longest wait to connect, then for the TLS handshake (default $LIVEPATCH_CONNECT_TIMEOUT or 12s)
      --format string            output format: table, json or yaml (default "table")
      --timeout string           longest wait for an answer, or a transfer's longest stall (default $LIVEPATCH_TIMEOUT or 1m0s)
      --url string               server URL (default $LIVEPATCH_URL)
`
