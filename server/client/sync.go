package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/offline"
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

// CreateSyncToken issues a sync token bound to a tier; the answer carries the token
// value, which the server does not keep.
func (c *Client) CreateSyncToken(ctx context.Context, req server.SyncTokenRequest) (server.SyncToken, error) {
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

// ExportBundle writes the offline bundle of tier to w as the server streams it, and
// returns its size. With OnProgress, fn follows the bytes received out of the total. A
// bundle that ends before its announced length, or is larger than an import takes
// (offline.MaxSize), is an error: w then holds a truncated bundle, which an import
// refuses.
func (c *Client) ExportBundle(ctx context.Context, tier string, w io.Writer, opts ...TransferOption) (int64, error) {
	o := transferOpts(opts)
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v1/admin/sync/bundle", query: url.Values{"tier": {tier}}, transfer: true})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > offline.MaxSize {
		return 0, fmt.Errorf("cannot receive the offline bundle from livepatch server at %s: it announces %d bytes, more than an import takes (%s)", c.base.Redacted(), resp.ContentLength, byteSize(offline.MaxSize))
	}
	body := bounded(resp.Body, offline.MaxSize)
	if o.progress != nil {
		body = &progressReader{r: body, total: resp.ContentLength, fn: o.progress}
	}
	n, err := io.Copy(w, body)
	if err != nil {
		return n, fmt.Errorf("cannot receive the offline bundle from livepatch server at %s after %d bytes: %w", c.base.Redacted(), n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("cannot receive the offline bundle from livepatch server at %s: it ended after %d of %d bytes", c.base.Redacted(), n, resp.ContentLength)
	}
	return n, nil
}

// ImportBundle streams an offline bundle of size bytes (-1 when unknown) from r to the
// server, which applies it as a sync run, and returns the run's report. A bundle the
// server refuses is an error with its reason. With OnProgress, fn follows the upload.
func (c *Client) ImportBundle(ctx context.Context, r io.Reader, size int64, opts ...TransferOption) (server.SyncReport, error) {
	o := transferOpts(opts)
	if o.progress != nil {
		r = &progressReader{r: r, total: size, fn: o.progress}
	}
	var out server.SyncReport
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/sync/bundle", body: r, size: size, ctype: "application/x-tar", out: &out, transfer: true})
	return out, err
}
