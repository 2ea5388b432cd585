package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// TriggerSync asks the server to sync from its upstream now and returns at once; follow
// the run with SyncStatus or SyncReports.
func (c *Client) TriggerSync(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/sync/trigger", query: url.Values{"wait": {"false"}}})
	return err
}

// TriggerSyncWait asks the server to sync from its upstream now and returns the run's
// report when it ends (a failed run is a report, not an error).
func (c *Client) TriggerSyncWait(ctx context.Context) (server.SyncReport, error) {
	var out server.SyncReport
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/sync/trigger", query: url.Values{"wait": {"true"}}, out: &out})
	return out, err
}

// SyncStatus returns the server's sync configuration, last run, last success and next run.
func (c *Client) SyncStatus(ctx context.Context) (server.SyncStatus, error) {
	var out server.SyncStatus
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/sync/status", out: &out})
	return out, err
}

// SyncReports returns the reports of the last sync runs, newest first; limit 0 means the
// server's default.
func (c *Client) SyncReports(ctx context.Context, limit int) ([]server.SyncReport, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Reports []server.SyncReport `json:"reports"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/sync/reports", query: q, out: &out})
	return out.Reports, err
}

// SyncTokens lists the sync tokens downstream servers use, without their values.
func (c *Client) SyncTokens(ctx context.Context) ([]server.SyncToken, error) {
	var out struct {
		Tokens []server.SyncToken `json:"tokens"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/sync-tokens", out: &out})
	return out.Tokens, err
}

// SyncTokenRequest asks for a new sync token.
type SyncTokenRequest struct {
	Name       string     `json:"name"`
	Tier       string     `json:"tier"`
	ValidUntil *time.Time `json:"valid-until,omitempty"`
}

// CreateSyncToken issues a sync token bound to a tier; the answer carries the token
// value, which the server does not keep.
func (c *Client) CreateSyncToken(ctx context.Context, req SyncTokenRequest) (server.SyncToken, error) {
	var out server.SyncToken
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/sync-tokens", in: req, out: &out})
	return out, err
}

// RevokeSyncToken revokes the sync token named name.
func (c *Client) RevokeSyncToken(ctx context.Context, name string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/sync-tokens/" + esc(name)})
	return err
}

// Downstreams lists the downstream deployments that synced from this server or reported
// machines to it in the last 30 days, by id.
func (c *Client) Downstreams(ctx context.Context) ([]server.Downstream, error) {
	var out struct {
		Deployments []server.Downstream `json:"deployments"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/downstream", out: &out})
	return out.Deployments, err
}

// DownstreamMachines returns one page of the machines matching f that a downstream
// deployment reported, ordered by id, and the cursor of the next page (empty on the last
// page): pass it as f.After.
func (c *Client) DownstreamMachines(ctx context.Context, f server.DownstreamMachineFilter) (machines []server.DownstreamMachine, next string, err error) {
	q := url.Values{}
	setIf(q, "tier", f.Tier)
	setIf(q, "state", f.PatchState)
	setIf(q, "after", f.After)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Machines []server.DownstreamMachine `json:"machines"`
		Next     string                     `json:"next"`
	}
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/downstream/" + esc(f.DeploymentID) + "/machines", query: q, out: &out})
	return out.Machines, out.Next, err
}
