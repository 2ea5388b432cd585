package upstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/proxy"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// Paths of the upstream's sync API.
const (
	patchesPath        = "/v1/sync/patches"
	machineReportsPath = "/v1/sync/machine-reports"
)

// Time limits of upstream requests.
const (
	listTimeout     = 2 * time.Minute
	downloadTimeout = 30 * time.Minute
	reportTimeout   = time.Minute
)

// maxListSize bounds a signed patch list.
const maxListSize = 64 << 20

// userAgent identifies sync requests in the upstream's logs.
const userAgent = "livepatch-server-sync"

// NewHTTPClient returns a client for outbound traffic (the upstream, the contracts
// server): it uses the proxies of patch-sync.proxy (http, https, no-proxy), or the
// environment's when all three are empty.
func NewHTTPClient(p config.Proxy) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = proxyFunc(p)
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}
}

// proxyFunc returns the http.Transport Proxy function of patch-sync.proxy, with the rules
// of internal/proxy (those of the usual HTTP_PROXY, HTTPS_PROXY and NO_PROXY variables), or
// the environment's when all three are empty.
func proxyFunc(p config.Proxy) func(*http.Request) (*url.URL, error) {
	if p.HTTP == "" && p.HTTPS == "" && p.NoProxy == "" {
		return http.ProxyFromEnvironment
	}
	return proxy.Func(p.HTTP, p.HTTPS, p.NoProxy)
}

// checkProxy checks the proxy URLs of patch-sync.proxy.
func checkProxy(p config.Proxy) error {
	for key, v := range map[string]string{"http": p.HTTP, "https": p.HTTPS} {
		if _, err := proxy.ParseURL(v); err != nil {
			return fmt.Errorf("patch-sync.proxy.%s %q is not a proxy URL", key, v)
		}
	}
	return nil
}

// machineCountBuckets are the lower bounds the machine count is rounded down to, unless
// patch-sync.machine-count is exact.
var machineCountBuckets = []int{1, 50, 100, 500, 1000, 2000, 5000, 10000}

// bucket rounds n down to its bucket's lower bound (0 stays 0).
func bucket(n int) int {
	b := 0
	for _, lower := range machineCountBuckets {
		if n >= lower {
			b = lower
		}
	}
	return b
}

// setHeaders adds the credentials and the telemetry to an upstream request.
func (s *Syncer) setHeaders(ctx context.Context, req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	req.Header.Set("User-Agent", userAgent)
	if server.CheckDeploymentID(s.cfg.ID) == nil {
		req.Header.Set(server.HeaderDeploymentID, s.cfg.ID)
	}
	kernels, err := s.store.Kernels(ctx)
	if err != nil {
		s.log.Warn("Cannot count machines for the upstream", "error", err)
		return
	}
	n := 0
	for _, k := range kernels {
		n += k.Machines
	}
	if s.cfg.MachineCount != "exact" {
		n = bucket(n)
	}
	req.Header.Set(server.HeaderMachineCount, strconv.Itoa(n))
}

// fetchList gets the signed patch list of the upstream tier and verifies it.
func (s *Syncer) fetchList(ctx context.Context) (server.SyncList, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	u := s.base.JoinPath(patchesPath)
	u.RawQuery = url.Values{"tier": {s.cfg.UpstreamTier}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return server.SyncList{}, fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	s.setHeaders(ctx, req)
	resp, err := s.http.Do(req)
	if err != nil {
		return server.SyncList{}, unreachable(u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return server.SyncList{}, s.refused(u, resp)
	}
	if ctype := contentType(resp); ctype != "application/json" {
		return server.SyncList{}, s.foreign(fmt.Sprintf("GET %s answered %s with %s, not a signed patch list", patchesPath, status(resp), ctype))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxListSize+1))
	if err != nil {
		return server.SyncList{}, server.Errorf(server.CodeUnavailable, "cannot read the patch list from %s: %v", u.Redacted(), err)
	}
	if len(data) > maxListSize {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "the patch list from %s is larger than %d bytes", u.Redacted(), maxListSize)
	}
	var signed server.SignedSyncList
	if err := json.Unmarshal(data, &signed); err != nil || len(signed.Payload) == 0 || len(signed.Signature) == 0 {
		return server.SyncList{}, s.foreign(fmt.Sprintf("GET %s answered JSON that is not a signed patch list", patchesPath))
	}
	list, err := s.verifyList(signed)
	if errors.Is(err, server.ErrBadSignature) {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "bad signature on the patch list from %s: %s; check patch-sync.trusted-key against the upstream's signing.pub",
			s.upstreamName(), strings.TrimPrefix(err.Error(), server.ErrBadSignature.Error()+": "))
	}
	if err != nil {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "invalid patch list from %s: %v", s.upstreamName(), err)
	}
	if list.Tier != s.cfg.UpstreamTier {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "the upstream at %s sent the patch list of tier %q, not %q", s.upstreamName(), list.Tier, s.cfg.UpstreamTier)
	}
	return list, nil
}

// unreachable is the error of a request that got no answer.
func unreachable(u *url.URL, err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	return server.Errorf(server.CodeUnavailable, "cannot reach the upstream at %s: %v", u.Redacted(), err)
}

// refused is the error of a non-200 answer, with the upstream's own message. An answer
// that is not a livepatch on-prem server's JSON error is a server that does not speak
// the sync protocol, unless it is a 5xx (a proxy's error page while the upstream is down).
func (s *Syncer) refused(u *url.URL, resp *http.Response) error {
	var body server.Error
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ours := contentType(resp) == "application/json" && json.Unmarshal(data, &body) == nil && body.Code != "" && body.Message != ""
	if !ours {
		if resp.StatusCode >= 500 {
			return server.Errorf(server.CodeUnavailable, "the upstream at %s answered %s", u.Redacted(), status(resp))
		}
		return s.foreign(fmt.Sprintf("%s /%s answered %s with %s", methodOf(resp), strings.TrimPrefix(u.Path, "/"), status(resp), contentType(resp)))
	}
	msg := fmt.Sprintf("%d %s", resp.StatusCode, body.Message)
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return server.Errorf(server.CodeUnauthorized, "the upstream at %s refused patch-sync.token: %s", s.upstreamName(), msg)
	}
	return server.Errorf(server.CodeUnavailable, "the upstream at %s answered %s", u.Redacted(), msg)
}

// foreign is the error of an upstream whose answer is not the sync protocol's.
func (s *Syncer) foreign(what string) error {
	return server.Errorf(server.CodeInvalid,
		"the upstream at %s does not speak the livepatch on-prem sync protocol: %s; patch-sync.upstream-url (sync_upstream) must be a livepatch on-prem server (Canonical's hosted service uses its own protocol, which is not public)",
		s.upstreamName(), what)
}

// contentType is the media type of an answer, without parameters ("none" when absent).
func contentType(resp *http.Response) string {
	v := resp.Header.Get("Content-Type")
	if v == "" {
		return "no content type"
	}
	t, _, err := mime.ParseMediaType(v)
	if err != nil || len(t) > 100 {
		return "an invalid content type"
	}
	return t
}

// status is the status line of an answer, bounded: its reason phrase is the upstream's.
func status(resp *http.Response) string {
	if len(resp.Status) > 64 {
		return resp.Status[:64] + "..."
	}
	return resp.Status
}

func methodOf(resp *http.Response) string {
	if resp.Request == nil {
		return "the request to"
	}
	return resp.Request.Method
}

// patchURL resolves a listed download URL: absolute, or relative to the upstream URL.
func (s *Syncer) patchURL(p server.SyncPatch) (*url.URL, error) {
	u, err := url.Parse(p.URL)
	if err != nil || p.URL == "" {
		return nil, server.Errorf(server.CodeInvalid, "the upstream lists %s with an invalid URL %q", p.Filename, p.URL)
	}
	if u.IsAbs() {
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, server.Errorf(server.CodeInvalid, "the upstream lists %s with a non-http URL %q", p.Filename, p.URL)
		}
		return u, nil
	}
	abs := s.base.JoinPath(u.EscapedPath())
	abs.RawQuery = u.RawQuery
	return abs, nil
}

// download fetches p into a temporary file and verifies its size, its SHA-256 and the
// archive; the caller closes and removes the file, which is positioned at its start.
// Credentials are not sent: patch files are public and may be on another host.
func (s *Syncer) download(ctx context.Context, p server.SyncPatch) (f *os.File, info patchfile.Info, err error) {
	u, err := s.patchURL(p)
	if err != nil {
		return nil, info, err
	}
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, info, fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := s.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, info, server.Errorf(server.CodeUnavailable, "download of %s from %s interrupted: %v", p.Filename, u.Redacted(), ctx.Err())
		}
		return nil, info, unreachable(u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, info, server.Errorf(server.CodeUnavailable, "cannot download %s from %s: %s", p.Filename, u.Redacted(), resp.Status)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != p.Size {
		return nil, info, server.Errorf(server.CodeInvalid, "size mismatch for %s: the upstream lists %d bytes but serves %d", p.Filename, p.Size, resp.ContentLength)
	}
	tmp, err := os.CreateTemp(s.opts.TempDir, "livepatch-sync-*")
	if err != nil {
		return nil, info, storeError("cannot buffer download", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	f = tmp
	hash := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hash), io.LimitReader(resp.Body, p.Size+1))
	if err != nil {
		if _, ok := errors.AsType[*os.PathError](err); ok {
			return nil, info, storeError("cannot buffer download of "+p.Filename, err)
		}
		return nil, info, server.Errorf(server.CodeUnavailable, "download of %s from %s interrupted after %d of %d bytes: %v", p.Filename, u.Redacted(), n, p.Size, err)
	}
	if n != p.Size {
		more := ""
		if n > p.Size {
			more = "more than "
		}
		return nil, info, server.Errorf(server.CodeInvalid, "size mismatch for %s: the upstream lists %d bytes, the download has %s%d", p.Filename, p.Size, more, n)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != p.SHA256 {
		return nil, info, server.Errorf(server.CodeInvalid, "checksum mismatch for %s: want sha256 %s, got %s", p.Filename, p.SHA256, got)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, info, storeError("cannot rewind download", err)
	}
	info, err = patchfile.Check(f, p.Filename)
	if err != nil {
		return nil, info, server.Errorf(server.CodeInvalid, "the upstream's %s is not a valid patch: %s", p.Filename, server.ErrorMessage(err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, info, storeError("cannot rewind download", err)
	}
	return f, info, nil
}

// sendMachineReports sends this deployment's machines to the upstream, in pages, with
// each machine id replaced by its HMAC-SHA256 keyed with the deployment id.
func (s *Syncer) sendMachineReports(ctx context.Context) error {
	key := []byte(s.cfg.ID)
	after := ""
	for range maxReportPages {
		machines, err := s.store.Machines(ctx, server.MachineFilter{After: after, Limit: server.MaxSyncMachines})
		if err != nil {
			return storeError("cannot list machines", err)
		}
		if len(machines) == 0 {
			return nil
		}
		out := make([]server.SyncMachine, len(machines))
		for i, m := range machines {
			mac := hmac.New(sha256.New, key)
			mac.Write([]byte(m.ID))
			out[i] = server.SyncMachine{ID: hex.EncodeToString(mac.Sum(nil)), Tier: m.Tier, LastSeen: m.LastSeen, Status: m.Status}
		}
		if err := s.postMachines(ctx, out); err != nil {
			return err
		}
		if len(machines) < server.MaxSyncMachines {
			return nil
		}
		after = machines[len(machines)-1].ID
	}
	return fmt.Errorf("more than %d machines: the rest were not reported", maxReportPages*server.MaxSyncMachines)
}

// maxReportPages bounds the pages of one machine report.
const maxReportPages = 1000

func (s *Syncer) postMachines(ctx context.Context, machines []server.SyncMachine) error {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	data, err := json.Marshal(map[string]any{"machines": machines})
	if err != nil {
		return fmt.Errorf("cannot encode machine reports: %w", err)
	}
	u := s.base.JoinPath(machineReportsPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	s.setHeaders(ctx, req)
	resp, err := s.http.Do(req)
	if err != nil {
		return unreachable(u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s.refused(u, resp)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

// verifyList checks a list's signature with the trusted keys.
func (s *Syncer) verifyList(signed server.SignedSyncList) (server.SyncList, error) {
	return signed.VerifyWith(s.trusted)
}
