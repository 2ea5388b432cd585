package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Banner returns the one-line banner the server answers GET / with, such as
// "Canonical Livepatch on-prem server, version v1.2.3".
func (c *Client) Banner(ctx context.Context) (string, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/", auth: noAuth})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return "", fmt.Errorf("cannot read banner from livepatch server at %s: %w", c.base.Redacted(), err)
	}
	return strings.TrimSpace(string(data)), nil
}

// Info is the answer of /debug/info.
type Info struct {
	Version string `json:"version"`
}

// Info returns the server's build information.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var out Info
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/debug/info", auth: noAuth, out: &out})
	return out, err
}

// DebugStatus is the health report of /debug/status.
type DebugStatus struct {
	Version      string          `json:"version"`
	Status       string          `json:"status"` // "OK" or "degraded"
	Database     ComponentStatus `json:"database"`
	Schema       SchemaStatus    `json:"schema"`
	PatchStorage ComponentStatus `json:"patch-storage"`
	Sync         SyncStatus      `json:"sync"`
	Contracts    ComponentStatus `json:"contracts"`
}

// ComponentStatus is the health of one dependency: "OK" or an error text.
type ComponentStatus struct {
	Status string `json:"status"`
}

// SchemaStatus gives the applied and the latest database schema versions.
type SchemaStatus struct {
	Current int `json:"current"`
	Latest  int `json:"latest"`
}

// SyncStatus says whether upstream sync is enabled and how it went.
type SyncStatus struct {
	Enabled bool   `json:"enabled"`
	Status  string `json:"status"`
}

// DebugStatus returns the server's health report. A degraded server answers 503 with the
// report; DebugStatus returns it without error, so check its Status field.
func (c *Client) DebugStatus(ctx context.Context) (DebugStatus, error) {
	var out DebugStatus
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/debug/status", auth: noAuth, alsoOK: http.StatusServiceUnavailable})
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(bounded(resp.Body, MaxAnswer))
	if err != nil {
		return out, fmt.Errorf("cannot read status from livepatch server at %s: %w", c.base.Redacted(), err)
	}
	if json.Unmarshal(data, &out) != nil || out.Status == "" {
		if resp.StatusCode != http.StatusOK {
			// Not a status report: a proxy's error page, or an error body.
			resp.Body = io.NopCloser(bytes.NewReader(data))
			return out, decodeError(resp)
		}
		return out, fmt.Errorf("cannot decode status from livepatch server at %s", c.base.Redacted())
	}
	return out, nil
}
