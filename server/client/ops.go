package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
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

// DebugStatus returns the server's health report. A degraded server answers 503 with the
// report; DebugStatus returns it without error, so check its Status field.
func (c *Client) DebugStatus(ctx context.Context) (server.Health, error) {
	var out server.Health
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
