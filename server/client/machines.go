package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/livepatch-onprem/livepatch/server"
)

// Machine returns a machine with its newest changes (at most historyLimit; 0: the
// server's default), newest first.
func (c *Client) Machine(ctx context.Context, id string, historyLimit int) (server.MachineDetail, error) {
	q := url.Values{}
	if historyLimit > 0 {
		q.Set("history", strconv.Itoa(historyLimit))
	}
	var out server.MachineDetail
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/machines/" + esc(id), query: q, out: &out})
	return out, err
}

// MachineHistory returns one page of a machine's history, newest first, and the cursor of
// the next page (0 on the last page): pass it as f.Before.
func (c *Client) MachineHistory(ctx context.Context, id string, f server.HistoryFilter) ([]server.MachineEvent, int64, error) {
	q := url.Values{}
	if f.All {
		q.Set("all", "true")
	}
	if f.Before > 0 {
		q.Set("before", strconv.FormatInt(f.Before, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Events []server.MachineEvent `json:"events"`
		Next   int64                 `json:"next"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/machines/" + esc(id) + "/history", query: q, out: &out})
	return out.Events, out.Next, err
}

// MoveMachine moves a machine to another tier; it learns its tier at its next check-in.
func (c *Client) MoveMachine(ctx context.Context, id, tier string) (server.Machine, error) {
	var out server.Machine
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/admin/machines/" + esc(id) + "/move",
		in: map[string]string{"tier": tier}, out: &out,
	})
	return out, err
}

// MoveMachines moves every machine q selects to tier and returns how many moved.
func (c *Client) MoveMachines(ctx context.Context, q server.MachineQuery, tier string) (int, error) {
	var out struct {
		Moved int `json:"moved"`
	}
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/admin/machines/move",
		in: map[string]any{"tier": tier, "filter": q}, out: &out,
	})
	return out.Moved, err
}

// TagMachine sets the tags set and removes the tags remove of a machine.
func (c *Client) TagMachine(ctx context.Context, id string, set map[string]string, remove []string) (server.Machine, error) {
	var out server.Machine
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/admin/machines/" + esc(id) + "/tags",
		in: map[string]any{"set": set, "remove": remove}, out: &out,
	})
	return out, err
}

// FindMachines returns one page of the machines q selects, ordered by id, at most limit
// (0: the server's default) after the id after, and the cursor of the next page (empty on
// the last page).
func (c *Client) FindMachines(ctx context.Context, q server.MachineQuery, after string, limit int) ([]server.Machine, string, error) {
	v := url.Values{}
	setIf(v, "tier", q.Tier)
	setIf(v, "version", q.PatchVersion)
	setIf(v, "state", q.PatchState)
	setIf(v, "kernel", q.Kernel)
	setIf(v, "hostname", q.Hostname)
	setIf(v, "seen-before", q.SeenBefore)
	setIf(v, "seen-after", q.SeenAfter)
	for _, t := range q.Tags {
		v.Add("tag", t)
	}
	setIf(v, "after", after)
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Machines []server.Machine `json:"machines"`
		Next     string           `json:"next"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/machines", query: v, out: &out})
	return out.Machines, out.Next, err
}
