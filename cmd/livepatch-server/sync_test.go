package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/syncbuf"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

func TestKeysGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	code, out, errOut := runCmd(t, "keys", "generate", "--out", dir)
	if code != 0 || errOut != "" {
		t.Fatalf("keys generate: exit %d, stderr %q", code, errOut)
	}
	keyPath, pubPath := filepath.Join(dir, "signing.key"), filepath.Join(dir, "signing.pub")
	info, err := os.Stat(keyPath)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("signing.key: %v, mode %v; want 0600", err, info.Mode())
	}
	pubText, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := server.ParsePublicKey(string(pubText))
	if err != nil {
		t.Fatalf("signing.pub: %v", err)
	}
	want := "Wrote " + keyPath + " (secret: set sync-server.signing-key to its path)\n" +
		"Wrote " + pubPath + " (key id " + server.KeyID(pub) + ": give it to downstream servers as patch-sync.trusted-key)\n"
	if out != want {
		t.Errorf("keys generate printed %q, want %q", out, want)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("signing.key is not PEM:\n%s", keyPEM)
	}
	// The key reads back from its path, its PEM text, and base64 of the 64-byte key.
	key, err := app.LoadSigningKey(keyPath)
	if err != nil || !key.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatalf("app.LoadSigningKey(path) = %v; public key differs from signing.pub", err)
	}
	for _, value := range []string{string(keyPEM), base64.StdEncoding.EncodeToString(key)} {
		if k, err := app.LoadSigningKey(value); err != nil || !k.Equal(key) {
			t.Errorf("app.LoadSigningKey(%.20q...) = %v", value, err)
		}
	}
	// The public key given by mistake is refused, as text or as a file.
	for _, value := range []string{pubPath, string(pubText)} {
		if _, err := app.LoadSigningKey(value); err == nil {
			t.Errorf("app.LoadSigningKey(%q) accepted the public key", value)
		}
	}
	if _, err := app.LoadSigningKey("/nonexistent/signing.key"); err == nil {
		t.Errorf("loadSigningKey of a missing file succeeded")
	}

	// An existing key is never replaced.
	code, _, errOut = runCmd(t, "keys", "generate", "--out", dir)
	if code != 1 || !strings.Contains(errOut, "signing.key already exists") {
		t.Errorf("second keys generate: exit %d, stderr %q", code, errOut)
	}
	if again, _ := os.ReadFile(keyPath); !bytes.Equal(again, keyPEM) {
		t.Errorf("signing.key changed")
	}
	for _, args := range [][]string{{"keys"}, {"keys", "rotate"}, {"keys", "generate"}, {"keys", "generate", "--out", dir, "extra"}} {
		if code, _, errOut := runCmd(t, args...); code != 2 || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q; want 2 with usage", args, code, errOut)
		}
	}
}

// freeAddr returns a loopback address that was free a moment ago, for a server whose
// url-template must name its own address before it starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startMain migrates cfg's database and runs a server on it until the test ends.
func startMain(t *testing.T, cfg config.Config) string {
	t.Helper()
	return startMainLog(t, cfg, io.Discard)
}

// startMainLog is startMain with the server's log written to w.
func startMainLog(t *testing.T, cfg config.Config, w io.Writer) string {
	t.Helper()
	if code, _, errOut := runCmd(t, "schema", "upgrade", "--db", cfg.Database.ConnectionString); code != 0 {
		t.Fatal(errOut)
	}
	listening := make(chan net.Addr, 1)
	m := &app.Main{Config: cfg, Listening: listening, Logger: app.NewLogger(w, "info")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case addr := <-listening:
		return "http://" + addr.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return ""
}

// uploadPatch uploads a generated patch of version 107.1 through cl and returns its
// filename, its bytes and its record.
func uploadPatch(t *testing.T, cl *client.Client) (string, []byte, server.Patch) {
	t.Helper()
	var archive bytes.Buffer
	if err := patchfile.Generate(&archive, patchfile.Metadata("5.15.0-107.117", "generic", "107.1", "amd64"), 4096); err != nil {
		t.Fatal(err)
	}
	name := "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	p, _, err := cl.UploadPatch(t.Context(), name, bytes.NewReader(archive.Bytes()), int64(archive.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return name, archive.Bytes(), p
}

// TestServeSyncsFromUpstream runs two servers as the serve command wires them: a
// downstream syncs a patch from an upstream with a sync token, trusting the key that
// keys generate wrote.
func TestServeSyncsFromUpstream(t *testing.T) {
	ctx := t.Context()
	keys := t.TempDir()
	if code, _, errOut := runCmd(t, "keys", "generate", "--out", keys); code != 0 {
		t.Fatal(errOut)
	}
	base := func(addr string) config.Config { return serveConfig(t, addr) }

	upCfg := base(freeAddr(t))
	upCfg.SyncServer.SigningKey = filepath.Join(keys, "signing.key")
	upURL := startMain(t, upCfg)
	up, err := client.New(upURL)
	if err != nil {
		t.Fatal(err)
	}
	up = up.WithBasicAuth("admin", "pw")
	name, archive, p := uploadPatch(t, up)
	tok, err := up.CreateSyncToken(ctx, server.SyncTokenRequest{Name: "region-eu", Tier: "edge"})
	if err != nil {
		t.Fatal(err)
	}

	downCfg := base(freeAddr(t))
	downCfg.PatchSync.Enabled = true
	downCfg.PatchSync.ID = "model-down"
	downCfg.PatchSync.UpstreamURL = upURL
	downCfg.PatchSync.Token = tok.Token
	downCfg.PatchSync.UpstreamTier = "edge"
	downCfg.PatchSync.TrustedKey = filepath.Join(keys, "signing.pub")
	if err := downCfg.Validate(); err != nil {
		t.Fatal(err)
	}
	downURL := startMain(t, downCfg)
	down, err := client.New(downURL)
	if err != nil {
		t.Fatal(err)
	}
	down = down.WithBasicAuth("admin", "pw")
	// The server syncs at start; a triggered run comes after it.
	r, err := down.TriggerSyncWait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != server.SyncSuccess {
		t.Fatalf("triggered sync = %+v", r)
	}
	got, err := down.PatchVersion(ctx, "107.1")
	if err != nil || len(got) != 1 || got[0].SHA256 != p.SHA256 || got[0].Source != server.SourceSync {
		t.Fatalf("downstream patch 107.1 = %+v, %v", got, err)
	}
	body, _, err := down.Download(ctx, "/v1/patches/"+name)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(data, archive) {
		t.Errorf("the downstream serves other bytes")
	}

	st, err := down.SyncStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Upstream != upURL || st.LastSuccess == nil || st.NextRun == nil || st.NextRun.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("sync status = %+v", st)
	}
	ds, err := down.DebugStatus(ctx)
	if err != nil || ds.Status != "OK" || !ds.Sync.Enabled || ds.Sync.Status != "OK" {
		t.Errorf("debug status = %+v, %v", ds, err)
	}
	// A rollout policy on the machine's tier, so that the rollout metrics have series.
	if _, err := down.SetRolloutPolicy(ctx, server.RolloutPolicy{Tier: "edge", Canaries: 1, FailureThreshold: 50}); err != nil {
		t.Fatal(err)
	}
	// A machine checks in, so that the fleet gauges have series to show.
	enableMachine(t, downCfg.Database.ConnectionString)
	checkIn, err := http.NewRequest("POST", downURL+"/v1/client/m1/updates",
		strings.NewReader(`{"kernel":"5.15.0-107-generic","architecture":"amd64","patch-state":"applied","patch-version":"107.1"}`))
	if err != nil {
		t.Fatal(err)
	}
	checkIn.Header.Set("Authorization", "Bearer mt")
	checkIn.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(checkIn); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("check-in: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The fleet counts are made in the background at the first scrape: scrape until
	// they show.
	var metrics []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(downURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(metrics), "livepatch_server_machines_by_kernel{") && strings.Contains(string(metrics), "livepatch_server_rollout_halted{") ||
			time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, want := range []string{`livepatch_server_sync_runs_total{outcome="success"} `, "livepatch_server_sync_patches_added_total 1\n",
		"livepatch_server_sync_last_success_timestamp_seconds ", "livepatch_server_http_request_duration_seconds",
		"livepatch_server_sync_interval_seconds 3600\n", "livepatch_server_database_up 1\n", "livepatch_server_schema_migrations_pending 0\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	checkObservability(t, metrics)
	// The upstream is not syncing itself: its status says so.
	if ds, err := up.DebugStatus(ctx); err != nil || ds.Sync.Enabled || ds.Sync.Status != "disabled" {
		t.Errorf("upstream debug status = %+v, %v", ds, err)
	}
}

// TestServeSyncTiers: with patch-sync.sync-tiers, serve tells the admin API that the
// tiers mirror the upstream: tier changes and promotions are refused, blocking is not,
// and sync status says the tiers are mirrored.
func TestServeSyncTiers(t *testing.T) {
	ctx := t.Context()
	cfg := serveConfig(t, freeAddr(t))
	cfg.PatchSync.Enabled = true
	cfg.PatchSync.UpstreamURL = "http://" + freeAddr(t) // nothing listens: runs fail, the API serves
	cfg.PatchSync.Token = server.NewUUID()
	cfg.PatchSync.SyncTiers = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(startMain(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	cl = cl.WithBasicAuth("admin", "pw")
	uploadPatch(t, cl)
	for name, call := range map[string]func() error{
		"add tier":    func() error { _, err := cl.AddTier(ctx, "canary", server.TierPlacement{}); return err },
		"delete tier": func() error { return cl.DeleteTier(ctx, "beta") },
		"promote":     func() error { _, err := cl.PromotePatch(ctx, "107.1", "stable"); return err },
		"promote-all": func() error { _, err := cl.PromoteAll(ctx, "edge", "stable"); return err },
	} {
		if err := call(); server.ErrorCode(err) != server.CodeConflict || !strings.Contains(err.Error(), "(patch-sync.sync-tiers)") {
			t.Errorf("%s: %v, want a conflict naming patch-sync.sync-tiers", name, err)
		}
	}
	if _, err := cl.BlockPatch(ctx, "107.1", "bad"); err != nil {
		t.Errorf("block: %v", err)
	}
	st, err := cl.SyncStatus(ctx)
	if err != nil || !st.SyncTiers || st.Tier != "" {
		t.Errorf("sync status = %+v, %v; want sync-tiers and no landing tier", st, err)
	}
}

// TestServeRedactsCredentials: proxy and upstream URLs with credentials never show on the
// public /debug/status, in sync reports and status, or in the log.
func TestServeRedactsCredentials(t *testing.T) {
	ctx := t.Context()
	cfg := serveConfig(t, freeAddr(t))
	cfg.PatchSync.Enabled = true
	cfg.PatchSync.UpstreamURL = "http://sync:upstream-s3cret@" + freeAddr(t)
	cfg.PatchSync.Token = "tok"
	cfg.PatchSync.Proxy.HTTPS = "ftp://bob:pr0xy-s3cret@squid.internal:3128"
	var logs syncbuf.Buffer
	url := startMainLog(t, cfg, &logs)
	cl, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	cl = cl.WithBasicAuth("admin", "pw")
	r, err := cl.TriggerSyncWait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != server.SyncFailed || !strings.Contains(r.Error, "patch-sync.proxy.https") {
		t.Fatalf("sync with a bad proxy = %+v", r)
	}
	resp, err := http.Get(url + "/debug/status")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	reports, err := cl.SyncReports(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.SyncStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{
		"/debug/status": string(status),
		"sync reports":  fmt.Sprint(reports),
		"sync status":   fmt.Sprint(st),
		"the log":       logs.String(),
	} {
		for _, secret := range []string{"pr0xy-s3cret", "upstream-s3cret"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %s:\n%s", what, secret, text)
			}
		}
	}
	if !strings.Contains(string(status), "ftp://bob:xxxxx@squid.internal:3128") {
		t.Errorf("/debug/status does not name the bad proxy (redacted):\n%s", status)
	}
}

// serveConfig is a server config on addr and a database of its own, with the user admin
// (password pw).
func serveConfig(t *testing.T, addr string) config.Config {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Server.Address = addr
	c.Server.URLTemplate = "http://" + addr + "/v1/patches/{filename}"
	c.Database.ConnectionString = pgtest.DSN(t)
	c.Auth.BasicUsers = []string{"admin:" + string(hash)}
	return c
}
