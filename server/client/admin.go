package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/livepatch-onprem/livepatch/server"
)

// Login exchanges basic credentials for an admin session token.
func (c *Client) Login(ctx context.Context, user, password string) (server.LoginResponse, error) {
	var out server.LoginResponse
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/admin/login",
		auth: func(r *http.Request) { r.SetBasicAuth(user, password) },
		out:  &out,
	})
	return out, err
}

// Logout ends the session whose token the Client carries.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/logout"})
	return err
}

// Tiers lists the tiers in promotion order.
func (c *Client) Tiers(ctx context.Context) ([]server.Tier, error) {
	var out struct {
		Tiers []server.Tier `json:"tiers"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/tiers", out: &out})
	return out.Tiers, err
}

// AddTier creates a tier after another, first, or (zero placement) last.
func (c *Client) AddTier(ctx context.Context, name string, at server.TierPlacement) (server.Tier, error) {
	in := struct {
		Name string `json:"name"`
		server.TierPlacement
	}{name, at}
	var out server.Tier
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/tiers", in: in, out: &out})
	return out, err
}

// DeleteTier deletes a tier.
func (c *Client) DeleteTier(ctx context.Context, name string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/tiers/" + esc(name)})
	return err
}

// TierPatches lists the patches available to a tier.
func (c *Client) TierPatches(ctx context.Context, tier string) ([]server.Patch, error) {
	var out patchList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/tiers/" + esc(tier) + "/patches", out: &out})
	return out.Patches, err
}

// PromoteAll promotes every patch whose tier is from to tier to, returning how many moved.
func (c *Client) PromoteAll(ctx context.Context, from, to string) (int, error) {
	in := struct {
		To string `json:"to"`
	}{to}
	var out struct {
		Promoted int `json:"promoted"`
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/tiers/" + esc(from) + "/promote-all", in: in, out: &out})
	return out.Promoted, err
}

type patchList struct {
	Patches []server.Patch `json:"patches"`
}

// Patches lists the patches matching f, newest first.
func (c *Client) Patches(ctx context.Context, f server.PatchFilter) ([]server.Patch, error) {
	q := url.Values{}
	setIf(q, "tier", f.Tier)
	setIf(q, "kernel", f.Kernel)
	setIf(q, "version", f.Version)
	var out patchList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/patches", query: q, out: &out})
	return out.Patches, err
}

// PatchVersion returns every file of a patch version; not-found when there is none.
func (c *Client) PatchVersion(ctx context.Context, version string) ([]server.Patch, error) {
	var out patchList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/patches/" + esc(version), out: &out})
	return out.Patches, err
}

// TransferOption configures a transfer: UploadPatch, Download, ExportBundle and
// ImportBundle.
type TransferOption func(*transferOptions)

type transferOptions struct {
	progress func(sent, total int64)
	maxSize  int64 // 0: the call's own bound
}

func transferOpts(opts []TransferOption) transferOptions {
	var o transferOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// OnProgress makes a transfer call fn as the body moves, with the bytes moved so far and
// the total size (-1 when unknown). fn runs on the goroutine that moves the body.
func OnProgress(fn func(sent, total int64)) TransferOption {
	return func(o *transferOptions) { o.progress = fn }
}

// MaxSize bounds what Download reads: a file announced or found larger than n bytes is an
// error. Give the size the patch list says the file has.
func MaxSize(n int64) TransferOption {
	return func(o *transferOptions) { o.maxSize = n }
}

// UploadPatch streams a patch archive of size bytes (-1 when unknown) from r to the server
// under filename. It returns the recorded patch and whether it is new (false: the same file
// was already recorded).
func (c *Client) UploadPatch(ctx context.Context, filename string, r io.Reader, size int64, opts ...TransferOption) (server.Patch, bool, error) {
	o := transferOpts(opts)
	if o.progress != nil {
		r = &progressReader{r: r, total: size, fn: o.progress}
	}
	var out server.Patch
	status, err := c.do(ctx, request{
		method: http.MethodPut, path: "/v1/admin/patches/files/" + esc(filename),
		body: r, size: size, ctype: "application/x-bzip2", out: &out, transfer: true,
	})
	return out, status == http.StatusCreated, err
}

type progressReader struct {
	r     io.Reader
	sent  int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.sent += int64(n)
		p.fn(p.sent, p.total)
	}
	return n, err
}

// PromotePatch promotes every file of version to tier, returning how many files moved.
func (c *Client) PromotePatch(ctx context.Context, version, tier string) (int, error) {
	in := struct {
		Tier string `json:"tier"`
	}{tier}
	var out struct {
		Promoted int `json:"promoted"`
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/patches/" + esc(version) + "/promote", in: in, out: &out})
	return out.Promoted, err
}

// BlockPatch blocks every file of version, so no machine is offered it; it returns how
// many files it blocked.
func (c *Client) BlockPatch(ctx context.Context, version, reason string) (int, error) {
	in := struct {
		Reason string `json:"reason,omitempty"`
	}{reason}
	var out struct {
		Blocked int `json:"blocked"`
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/patches/" + esc(version) + "/block", in: in, out: &out})
	return out.Blocked, err
}

// UnblockPatch unblocks every file of version, returning how many files it unblocked.
func (c *Client) UnblockPatch(ctx context.Context, version string) (int, error) {
	var out struct {
		Unblocked int `json:"unblocked"`
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/patches/" + esc(version) + "/unblock", out: &out})
	return out.Unblocked, err
}

// StoragePatches lists the files in patch storage.
func (c *Client) StoragePatches(ctx context.Context) ([]server.StorageFile, error) {
	var out struct {
		Files []server.StorageFile `json:"files"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/storage/patches", out: &out})
	return out.Files, err
}

// StorageRefresh records files found in patch storage, checks recorded files against
// their SHA-256 and reports records whose files are gone; with prune it forgets those.
func (c *Client) StorageRefresh(ctx context.Context, prune bool) (server.RefreshResult, error) {
	var out server.RefreshResult
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/storage/refresh",
		in: server.RefreshRequest{Prune: prune}, out: &out})
	return out, err
}

// AuthTokens lists the auth tokens, without their values.
func (c *Client) AuthTokens(ctx context.Context) ([]server.AuthToken, error) {
	var out struct {
		Tokens []server.AuthToken `json:"tokens"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/auth-tokens", out: &out})
	return out.Tokens, err
}

// CreateAuthToken issues an auth token; the answer carries the token value, which the
// server does not keep.
func (c *Client) CreateAuthToken(ctx context.Context, req server.AuthTokenRequest) (server.AuthToken, error) {
	var out server.AuthToken
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/auth-tokens", in: req, out: &out})
	return out, err
}

// Sessions lists the unexpired admin sessions, oldest first.
func (c *Client) Sessions(ctx context.Context) ([]server.Session, error) {
	var out struct {
		Sessions []server.Session `json:"sessions"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/sessions", out: &out})
	return out.Sessions, err
}

// RevokeSession ends the admin session with id.
func (c *Client) RevokeSession(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/sessions/" + esc(id)})
	return err
}

// RevokeUserSessions ends every session of user and returns how many it ended.
func (c *Client) RevokeUserSessions(ctx context.Context, user string) (int, error) {
	var out struct {
		Revoked int `json:"revoked"`
	}
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/sessions", query: url.Values{"user": {user}}, out: &out})
	return out.Revoked, err
}

// RemoveMachine unregisters a machine whatever its token, for a machine that lost it.
func (c *Client) RemoveMachine(ctx context.Context, machineID string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/machines/" + esc(machineID)})
	return err
}

// RevokeAuthToken revokes the auth token with id.
func (c *Client) RevokeAuthToken(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/auth-tokens/" + esc(id)})
	return err
}

// ReportMachines returns one page of the machines matching f, ordered by id, and the
// cursor of the next page (empty on the last page): pass it as f.After.
func (c *Client) ReportMachines(ctx context.Context, f server.MachineFilter) (machines []server.Machine, next string, err error) {
	q := url.Values{}
	setIf(q, "tier", f.Tier)
	setIf(q, "version", f.PatchVersion)
	setIf(q, "state", f.PatchState)
	setIf(q, "after", f.After)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Machines []server.Machine `json:"machines"`
		Next     string           `json:"next"`
	}
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/machines", query: q, out: &out})
	return out.Machines, out.Next, err
}

// PatchHealth reports the patch states of the machines of tier running version.
func (c *Client) PatchHealth(ctx context.Context, tier, version string) (server.PatchHealth, error) {
	q := url.Values{"tier": {tier}, "version": {version}}
	var out server.PatchHealth
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/patch-health", query: q, out: &out})
	return out, err
}

// Kernels counts the enrolled machines per kernel and architecture.
func (c *Client) Kernels(ctx context.Context) ([]server.KernelCount, error) {
	var out struct {
		Kernels []server.KernelCount `json:"kernels"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/reports/kernels", out: &out})
	return out.Kernels, err
}

func setIf(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}
