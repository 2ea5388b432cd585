package livepatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server"
)

// problems lists the parts of a server's health report that are not OK.
func problems(s server.Health) []string {
	var p []string
	add := func(name, status string) {
		if status != "" && status != "OK" {
			p = append(p, name+": "+status)
		}
	}
	add("database", s.Database.Status)
	// A schema newer than the server is fine: migrations are expand-first, so a server
	// keeps working on the schema of its successor during a rolling upgrade.
	if s.Schema.Current < s.Schema.Latest {
		p = append(p, fmt.Sprintf("schema: version %d, server needs %d", s.Schema.Current, s.Schema.Latest))
	}
	add("patch storage", s.PatchStorage.Status)
	if s.Sync.Enabled {
		add("sync", s.Sync.Status)
	}
	add("contracts", s.Contracts.Status)
	return p
}

// maxStatusDetail bounds the server's own words in a status message.
const maxStatusDetail = 200

// MessageSyncFailedPrefix starts the status of a serving unit whose deployment's last sync
// failed (a refused or revoked sync token, an unreachable upstream, a bad signature): the
// server serves what it has, and the rest of the message is the sync report's error.
const MessageSyncFailedPrefix = "Livepatch server running, but the last sync failed: "

// maxSyncDetail bounds a sync report's error in a status message: the upstream's URL and
// its own reason (a revoked token's name) must fit.
const maxSyncDetail = 300

// UpdateStatus reconciles and, when the unit should be serving, asks the server for its
// health at /debug/status and reports what is wrong.
func UpdateStatus(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	st, err := Reconcile(ctx, c)
	if err != nil || (st.Name != "active" && st.Message != MessageSyncTokenNotSet) {
		return st, err
	}
	cfg, err := LoadConfig(ctx, c)
	if err != nil {
		return hooks.Status{}, err
	}
	network, err := c.NetworkGet(ctx, WebsiteEndpoint)
	if err != nil {
		return hooks.Status{}, err
	}
	addr := net.JoinHostPort(network.BindAddress(), strconv.Itoa(cfg.Port))
	problem, s := probeServer(ctx, c, addr)
	if problem != "" {
		return hooks.Blocked(problem), nil
	}
	// Sync never makes the server unhealthy (haproxy keeps it in rotation, rolling
	// restarts go on), but a failing sync needs the operator: a new sync token, a
	// reachable upstream.
	if s.Sync.Enabled && s.Sync.LastError != "" {
		return hooks.Blocked(MessageSyncFailedPrefix + bound(s.Sync.LastError, maxSyncDetail)), nil
	}
	return st, nil
}

// checkServer returns what makes the server at addr unhealthy, or "".
func checkServer(ctx context.Context, c *hooks.Context, addr string) string {
	problem, _ := probeServer(ctx, c, addr)
	return problem
}

// probeServer asks the server at addr for /debug/status and returns what makes it
// unhealthy ("" when it is healthy) and its answer, when it gave one.
func probeServer(ctx context.Context, c *hooks.Context, addr string) (problem string, s server.Health) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/status", nil)
	if err != nil {
		return fmt.Sprintf("Cannot check livepatch-server on %s: %v", addr, err), s
	}
	resp, err := hooks.DirectHTTPClient(c.HTTP).Do(req)
	if err != nil {
		return fmt.Sprintf("livepatch-server is not answering on %s: see journalctl -u livepatch-server", addr), s
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	decodeErr := json.Unmarshal(body, &s)
	if resp.StatusCode == http.StatusOK {
		if decodeErr != nil {
			s = server.Health{}
		}
		return "", s
	}
	if decodeErr != nil {
		return fmt.Sprintf("livepatch-server on %s answered /debug/status with HTTP %d", addr, resp.StatusCode), server.Health{}
	}
	detail := strings.Join(problems(s), "; ")
	if detail == "" {
		detail = "status " + s.Status
	}
	return "livepatch-server degraded: " + bound(detail, maxStatusDetail), s
}

// bound cuts s to n bytes, marking the cut, without splitting a UTF-8 character.
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
