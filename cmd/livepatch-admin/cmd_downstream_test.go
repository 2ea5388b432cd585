package main

import (
	"net/http"
	"testing"
)

const (
	fakeDeployment     = "0f6d2c8e-5a41-4b7e-9c3d-2e8f7a6b5c4d"
	fakeHashedID1      = "1b4f0e9d8c7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"
	fakeHashedID2      = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
	jsonDownstreamEU   = `{"id":"` + fakeDeployment + `","first-seen":"2024-04-01T08:00:00Z","last-sync":"2024-05-04T10:00:00Z","via":"sync-token","sync-token":"region-eu","tier":"stable","machine-count":500,"reported-machines":3,"patch-states":{"applied":2,"apply-failed":1},"last-report":"2024-05-04T10:00:05Z"}`
	jsonDownstreamLab  = `{"id":"lab","first-seen":"2024-05-04T09:30:00Z","last-sync":"2024-05-04T09:30:00Z","via":"resource-token","tier":"edge","machine-count":0,"reported-machines":0,"patch-states":{}}`
	jsonDownstreamOld  = `{"id":"region-us","reported-machines":1,"patch-states":{"unknown":1},"last-report":"2024-04-20T00:00:00Z"}`
	jsonDownstreamMch1 = `{"id":"` + fakeHashedID1 + `","tier":"stable","last-seen":"2024-05-04T09:55:00Z","kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1","reported-at":"2024-05-04T10:00:05Z"}`
	jsonDownstreamMch2 = `{"id":"` + fakeHashedID2 + `","tier":"stable","kernel":"6.8.0-31-generic","architecture":"arm64","patch-state":"apply-failed","reported-at":"2024-05-04T10:00:05Z"}`
)

// downstreamRoutes are the fake API's downstream report routes (newFakeAPI adds them).
func downstreamRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET /v1/admin/reports/downstream": reply(200, `{"deployments":[`+jsonDownstreamEU+`,`+jsonDownstreamLab+`,`+jsonDownstreamOld+`]}`),
		"GET /v1/admin/reports/downstream/{id}/machines": func(w http.ResponseWriter, r *http.Request) {
			// Two pages, to exercise the cursor.
			if r.URL.Query().Get("after") == "" {
				reply(200, `{"machines":[`+jsonDownstreamMch1+`],"next":"`+fakeHashedID1+`"}`)(w, r)
				return
			}
			reply(200, `{"machines":[`+jsonDownstreamMch2+`],"next":""}`)(w, r)
		},
	}
}

func TestReportDownstream(t *testing.T) {
	tests := []cliCase{{
		name: "deployments",
		args: []string{"report", "downstream"},
		stdout: `
DEPLOYMENT                            SYNCED VIA      TIER    LAST SYNC         MACHINES  REPORTED  PATCH STATES
0f6d2c8e-5a41-4b7e-9c3d-2e8f7a6b5c4d  region-eu       stable  2024-05-04 10:00  500       3         2 applied, 1 apply-failed
lab                                   resource token  edge    2024-05-04 09:30  0         -         -
region-us                             -               -       -                 -         1         1 unknown
`[1:],
		requests: []string{"GET /v1/admin/reports/downstream"},
	}, {
		name: "deployments json",
		args: []string{"report", "downstream", "--format", "json"},
		stdout: "[\n" + indentJSON(t, jsonDownstreamEU, "  ") + ",\n" + indentJSON(t, jsonDownstreamLab, "  ") + ",\n" +
			indentJSON(t, jsonDownstreamOld, "  ") + "\n]\n",
	}, {
		name:   "deployments yaml",
		args:   []string{"report", "downstream", "--format", "yaml"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream": reply(200, `{"deployments":[`+jsonDownstreamOld+`]}`)},
		stdout: `
- id: region-us
  reported-machines: 1
  patch-states:
    unknown: 1
  last-report: "2024-04-20T00:00:00Z"
`[1:],
	}, {
		name:   "no deployments",
		args:   []string{"report", "downstream"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream": reply(200, `{"deployments":[]}`)},
		stdout: "No downstream deployments.\n",
	}, {
		name:   "no deployments json",
		args:   []string{"report", "downstream", "--format", "json"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream": reply(200, `{"deployments":[]}`)},
		stdout: "[]\n",
	}, {
		name: "machines",
		args: []string{"report", "downstream", fakeDeployment},
		stdout: `
MACHINE                                                           TIER    KERNEL              PATCH  STATE         LAST SEEN
1b4f0e9d8c7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c  stable  5.15.0-107-generic  107.1  applied       2024-05-04 09:55
9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d  stable  6.8.0-31-generic    -      apply-failed  -
`[1:],
		requests: []string{
			"GET /v1/admin/reports/downstream/" + fakeDeployment + "/machines?limit=1000",
			"GET /v1/admin/reports/downstream/" + fakeDeployment + "/machines?after=" + fakeHashedID1 + "&limit=1000",
		},
	}, {
		name:   "machines filtered empty",
		args:   []string{"report", "downstream", "lab", "--state", "apply-failed", "--tier", "stable"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream/{id}/machines": reply(200, `{"machines":[],"next":""}`)},
		stdout: "No machines.\n",
		requests: []string{
			"GET /v1/admin/reports/downstream/lab/machines?limit=1000&state=apply-failed&tier=stable",
		},
	}, {
		name:   "machines yaml",
		args:   []string{"report", "downstream", fakeDeployment, "--format", "yaml"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream/{id}/machines": reply(200, `{"machines":[`+jsonDownstreamMch2+`],"next":""}`)},
		stdout: `
- id: 9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d
  tier: stable
  kernel: 6.8.0-31-generic
  architecture: arm64
  patch-state: apply-failed
  reported-at: "2024-05-04T10:00:05Z"
`[1:],
	}, {
		name: "unknown deployment",
		args: []string{"report", "downstream", "nosuch"},
		routes: map[string]http.HandlerFunc{"GET /v1/admin/reports/downstream/{id}/machines": apiError(404, "not-found",
			`downstream deployment "nosuch" not found: it has not synced or reported machines in the last 30 days`)},
		code:   1,
		stderr: "error: downstream deployment \"nosuch\" not found: it has not synced or reported machines in the last 30 days\n",
	}, {
		name:      "not logged in",
		args:      []string{"report", "downstream"},
		loggedOut: true,
		code:      1,
		stderr:    notLoggedIn,
		requests:  []string{},
	}, {
		name:     "bad state",
		args:     []string{"report", "downstream", "lab", "--state", "broken"},
		code:     2,
		requests: []string{},
		stderr: `
error: invalid --state "broken": want one of applied, apply-failed, unapplied, nothing-to-apply, check-failed, needs-check, kernel-upgrade-required, unknown
Usage:
  livepatch-admin report downstream [<deployment-id>] [flags]

Examples:
  livepatch-admin report downstream
  livepatch-admin report downstream region-eu-model-uuid --state apply-failed

Flags:
  -h, --help           help for downstream
      --state string   only machines in this patch state
      --tier string    only machines of this tier of the downstream server

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
