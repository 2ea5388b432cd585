package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/internal/syncbuf"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	s3test.Stop()
	os.Exit(code)
}

const (
	adminUser = "admin"
	adminPass = "s3cret-Passw0rd"
)

// htpasswdEntry returns "user:hash" made by the real htpasswd -bnBC 10, as operators do.
func htpasswdEntry(t testing.TB, user, pass string) string {
	t.Helper()
	path, err := exec.LookPath("htpasswd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("htpasswd is missing: apt-get install -y apache2-utils")
		}
		t.Skip("htpasswd is missing: apt-get install -y apache2-utils")
	}
	out, err := exec.Command(path, "-bnBC", "10", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	return strings.TrimSpace(string(out))
}

var cachedEntry string

type env struct {
	t      testing.TB
	srv    *httptest.Server
	api    *httpapi.Server
	db     *postgres.DB
	now    time.Time
	token  string // admin session token
	logBuf *syncbuf.Buffer
}

func newEnv(t testing.TB, options ...func(*httpapi.Options)) *env {
	t.Helper()
	return newEnvFiles(t, func(db *postgres.DB) server.PatchFiles { return patchstore.NewPostgres(db.SQL()) }, options...)
}

// newEnvFiles is newEnv with the patch storage files makes.
func newEnvFiles(t testing.TB, files func(*postgres.DB) server.PatchFiles, options ...func(*httpapi.Options)) *env {
	t.Helper()
	if cachedEntry == "" {
		cachedEntry = htpasswdEntry(t, adminUser, adminPass)
	}
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.DSN(t), postgres.Options{MaxConns: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return newEnvOnFiles(t, db, files, options...)
}

// newEnvOn starts an API on db, as another unit of the same deployment.
func newEnvOn(t testing.TB, db *postgres.DB, options ...func(*httpapi.Options)) *env {
	t.Helper()
	return newEnvOnFiles(t, db, func(db *postgres.DB) server.PatchFiles { return patchstore.NewPostgres(db.SQL()) }, options...)
}

// newEnvOnFiles is newEnvOn with the patch storage files makes.
func newEnvOnFiles(t testing.TB, db *postgres.DB, files func(*postgres.DB) server.PatchFiles, options ...func(*httpapi.Options)) *env {
	t.Helper()
	if cachedEntry == "" {
		cachedEntry = htpasswdEntry(t, adminUser, adminPass)
	}
	ctx := context.Background()
	e := &env{t: t, db: db, now: time.Now().UTC(), logBuf: &syncbuf.Buffer{}}
	opts := httpapi.Options{
		Version:     "9.9.9",
		URLTemplate: "http://lp.example/patches/{filename}",
		BasicUsers:  []string{cachedEntry},
		Now:         func() time.Time { return e.now },
		Logger:      slog.New(slog.NewJSONHandler(e.logBuf, nil)),
	}
	for _, o := range options {
		o(&opts)
	}
	api, err := httpapi.New(db, files(db), opts)
	if err != nil {
		t.Fatal(err)
	}
	e.api = api
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { api.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a request and returns the status and body; auth is "basic", "session", "" or
// "Bearer <token>".
func (e *env) do(method, path, auth string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if r != nil {
		// As the client sends them: uploads are raw bytes, everything else JSON.
		req.Header.Set("Content-Type", "application/json")
		if method == "PUT" && strings.Contains(path, "/files/") {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
	}
	switch {
	case auth == "basic":
		req.SetBasicAuth(adminUser, adminPass)
	case auth == "session":
		req.Header.Set("Authorization", "Bearer "+e.login())
	case auth != "":
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *env) login() string {
	e.t.Helper()
	if e.token == "" {
		status, body := e.do("POST", "/v1/admin/login", "basic", nil)
		if status != 200 {
			e.t.Fatalf("login: %d %s", status, body)
		}
		var out struct{ Token string }
		json.Unmarshal(body, &out)
		e.token = out.Token
	}
	return e.token
}

// must sends a request that must answer want and decodes the JSON answer into out.
func (e *env) must(want int, method, path, auth string, body, out any) {
	e.t.Helper()
	status, data := e.do(method, path, auth, body)
	if status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: cannot decode %s: %v", method, path, data, err)
		}
	}
}

// wantError checks an error answer's status and that its message contains want.
func (e *env) wantError(status int, want, method, path, auth string, body any) {
	e.t.Helper()
	got, data := e.do(method, path, auth, body)
	var eb struct{ Code, Message string }
	json.Unmarshal(data, &eb)
	if got != status || !strings.Contains(eb.Message, want) {
		e.t.Errorf("%s %s: got %d %s; want %d with %q", method, path, got, data, status, want)
	}
}

var archives sync.Map // "kernel flavour version arch size" -> []byte

// patchArchive returns a generated patch archive, made once per test binary: compressing
// megabytes is slow under the race detector.
func patchArchive(t testing.TB, kernel, flavour, version, arch string, size int) (string, []byte) {
	t.Helper()
	name := server.PatchName{Kernel: kernel, Flavour: flavour, Version: version, Architecture: arch}.Filename()
	key := fmt.Sprint(name, size)
	if data, ok := archives.Load(key); ok {
		return name, data.([]byte)
	}
	var buf bytes.Buffer
	if err := patchfile.Generate(&buf, patchfile.Metadata(kernel, flavour, version, arch), size); err != nil {
		t.Fatal(err)
	}
	archives.Store(key, buf.Bytes())
	return name, buf.Bytes()
}

func (e *env) upload(kernel, flavour, version, arch string) server.Patch {
	e.t.Helper()
	name, data := patchArchive(e.t, kernel, flavour, version, arch, 4096)
	var p server.Patch
	e.must(201, "PUT", "/v1/admin/patches/files/"+name, "session", data, &p)
	return p
}

func (e *env) authToken(id, tier string, maxMachines int) string {
	e.t.Helper()
	var tok server.AuthToken
	e.must(201, "POST", "/v1/admin/auth-tokens", "session", map[string]any{"id": id, "tier": tier, "max-machines": maxMachines}, &tok)
	return tok.Token
}

func (e *env) enable(machine, token string) string {
	e.t.Helper()
	var out struct {
		MachineToken string `json:"machine-token"`
		Tier         string
	}
	e.must(200, "POST", "/v1/client/"+machine, "Bearer "+token, nil, &out)
	return out.MachineToken
}

func status(kernel string) server.Status {
	return server.Status{Kernel: kernel, Architecture: "amd64", CPUModel: "Intel Xeon", Uptime: 100, ClientVersion: "10.0", PatchState: server.StateNothingToApply}
}

func TestRouteTableGolden(t *testing.T) {
	api, err := httpapi.New(nil, nil, httpapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range api.Routes() {
		fmt.Fprintf(&b, "%-52s %s\n", r.Pattern, r.Access)
	}
	golden := filepath.Join("testdata", "routes.golden")
	if *update {
		os.WriteFile(golden, []byte(b.String()), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("route table changed (-golden +now); run go test -update if intended:\n%s", diff)
	}
}

// TestAdminRoutesRefuseUnauthenticated derives its cases from the route table, so a new
// admin route cannot escape the check.
func TestAdminRoutesRefuseUnauthenticated(t *testing.T) {
	e := newEnv(t, trustLoopback)
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for _, r := range e.api.Routes() {
		method, path, _ := strings.Cut(r.Pattern, " ")
		if !strings.HasPrefix(path, "/v1/admin/") {
			continue
		}
		if r.Access.String() != "admin" && r.Access.String() != "basic" {
			t.Errorf("admin route %s has access %s", r.Pattern, r.Access)
		}
		n++
		path = param.ReplaceAllString(path, "x")
		auths := []string{"", "Bearer not-a-session"}
		if n%8 == 1 {
			// A wrong password costs a bcrypt comparison (slow under -race), so it is
			// checked on a sample of routes; it takes a fresh user and source address so the
			// login lockout (tested on its own) does not answer 429 instead.
			auths = append(auths, "Basic "+base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "user%d:wrong", n)))
		}
		for _, auth := range auths {
			req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader("{}"))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("192.0.2.%d", n))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("%s with auth %q: status %d, WWW-Authenticate %q; want 401 with Basic challenge",
					r.Pattern, auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d admin routes found", n)
	}
}

func TestLoginSessions(t *testing.T) {
	e := newEnv(t)
	var out struct {
		Token     string
		User      string
		ExpiresAt time.Time `json:"expires-at"`
	}
	e.must(200, "POST", "/v1/admin/login", "basic", nil, &out)
	if out.User != adminUser || out.Token == "" || out.ExpiresAt.Sub(e.now) < 239*time.Hour {
		t.Errorf("login answer = %+v", out)
	}
	e.must(200, "GET", "/v1/admin/tiers", "Bearer "+out.Token, nil, nil)
	e.must(200, "GET", "/v1/admin/tiers", "basic", nil, nil)
	// The session expires.
	e.now = e.now.Add(241 * time.Hour)
	e.wantError(401, "session expired", "GET", "/v1/admin/tiers", "Bearer "+out.Token, nil)
	e.now = e.now.Add(-241 * time.Hour)
	e.must(204, "POST", "/v1/admin/logout", "Bearer "+out.Token, nil, nil)
	e.wantError(401, "session expired", "GET", "/v1/admin/tiers", "Bearer "+out.Token, nil)
	// Secrets never reach the log.
	if strings.Contains(e.logBuf.String(), out.Token) || strings.Contains(e.logBuf.String(), adminPass) {
		t.Errorf("log holds a secret:\n%s", e.logBuf)
	}
	if !strings.Contains(e.logBuf.String(), `"event":"login"`) {
		t.Errorf("login is not a security event:\n%s", e.logBuf)
	}
}

func TestTiers(t *testing.T) {
	e := newEnv(t)
	var tiers struct{ Tiers []server.Tier }
	e.must(200, "GET", "/v1/admin/tiers", "session", nil, &tiers)
	want := []server.Tier{{Name: "edge", Position: 1}, {Name: "beta", Position: 2}, {Name: "candidate", Position: 3}, {Name: "stable", Position: 4}}
	if diff := cmp.Diff(want, tiers.Tiers); diff != "" {
		t.Fatalf("default tiers (-want +got):\n%s", diff)
	}
	e.must(201, "POST", "/v1/admin/tiers", "session", map[string]any{"name": "canary", "first": true}, nil)
	e.must(201, "POST", "/v1/admin/tiers", "session", map[string]any{"name": "qa", "after": "beta"}, nil)
	e.must(201, "POST", "/v1/admin/tiers", "session", map[string]any{"name": "prod"}, nil)
	e.must(200, "GET", "/v1/admin/tiers", "session", nil, &tiers)
	var names []string
	for _, t := range tiers.Tiers {
		names = append(names, t.Name)
	}
	if diff := cmp.Diff([]string{"canary", "edge", "beta", "qa", "candidate", "stable", "prod"}, names); diff != "" {
		t.Errorf("tier order (-want +got):\n%s", diff)
	}
	e.wantError(409, "qa", "POST", "/v1/admin/tiers", "session", map[string]any{"name": "qa"})
	e.wantError(400, "invalid tier name", "POST", "/v1/admin/tiers", "session", map[string]any{"name": "Bad Name"})
	e.wantError(404, "nosuch", "POST", "/v1/admin/tiers", "session", map[string]any{"name": "x", "after": "nosuch"})
	e.must(204, "DELETE", "/v1/admin/tiers/qa", "session", nil, nil)
	e.wantError(404, "qa", "DELETE", "/v1/admin/tiers/qa", "session", nil)
	// A tier in use by a token cannot be deleted.
	e.authToken("web", "prod", 0)
	e.wantError(409, "prod", "DELETE", "/v1/admin/tiers/prod", "session", nil)
}

// TestTiersMirrored: while the tiers mirror the upstream's, the admin API refuses what
// sync decides (tiers, promotions) and still lets an administrator block a patch.
func TestTiersMirrored(t *testing.T) {
	e := newEnv(t, func(o *httpapi.Options) { o.SyncTiers = true })
	p := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	const mirrored = "the tiers of this server mirror the upstream's (patch-sync.sync-tiers): change tiers and promotions on the upstream, or turn patch-sync.sync-tiers off"
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/admin/tiers", map[string]any{"name": "canary", "first": true}},
		{"DELETE", "/v1/admin/tiers/beta", nil},
		{"POST", "/v1/admin/patches/107.1/promote", map[string]string{"tier": "stable"}},
		{"POST", "/v1/admin/tiers/edge/promote-all", map[string]string{"to": "beta"}},
	} {
		e.wantError(409, mirrored, req.method, req.path, "session", req.body)
	}
	var tiers struct{ Tiers []server.Tier }
	e.must(200, "GET", "/v1/admin/tiers", "session", nil, &tiers)
	if len(tiers.Tiers) != 4 {
		t.Errorf("tiers changed: %+v", tiers.Tiers)
	}
	var blocked, unblocked map[string]int
	e.must(200, "POST", "/v1/admin/patches/107.1/block", "session", map[string]string{"reason": "crashes here"}, &blocked)
	e.must(200, "POST", "/v1/admin/patches/107.1/unblock", "session", nil, &unblocked)
	if blocked["blocked"] != 1 || unblocked["unblocked"] != 1 {
		t.Errorf("block %v, unblock %v", blocked, unblocked)
	}
	var listed struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/patches", "session", nil, &listed)
	if len(listed.Patches) != 1 || listed.Patches[0].Filename != p.Filename || listed.Patches[0].Tier != "edge" {
		t.Errorf("patches = %+v, want %s still in edge", listed.Patches, p.Filename)
	}
}

func TestPatchLifecycleAndCheckIn(t *testing.T) {
	e := newEnv(t)
	p1 := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	// Uploading the same bytes again is fine; other bytes under the name conflict.
	name, data := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	e.must(200, "PUT", "/v1/admin/patches/files/"+name, "session", data, nil)
	_, other := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 8192)
	e.wantError(409, "already recorded with different contents", "PUT", "/v1/admin/patches/files/"+name, "session", other)
	if p1.Tier != "edge" || p1.Size == 0 || len(p1.SHA256) != 64 || p1.Source != "upload" {
		t.Fatalf("uploaded patch = %+v", p1)
	}
	e.upload("5.15.0-107.117", "generic", "107.2", "amd64")
	e.upload("5.15.0-107.117", "lowlatency", "107.2", "amd64")

	edgeTok := e.authToken("lab", "edge", 0)
	stableTok := e.authToken("prod", "stable", 0)
	mEdge := e.enable("m-edge", edgeTok)
	mStable := e.enable("m-stable", stableTok)

	checkIn := func(machine, token string, st server.Status) server.Update {
		t.Helper()
		var up server.Update
		e.must(200, "POST", "/v1/client/"+machine+"/updates", "Bearer "+token, st, &up)
		return up
	}
	up := checkIn("m-edge", mEdge, status("5.15.0-107-generic"))
	if up.Tier != "edge" || up.Patch == nil || up.Patch.Version != "107.2" || up.KernelState != server.KernelSupported {
		t.Fatalf("edge check-in = %+v", up)
	}
	if up := checkIn("m-edge", mEdge, status("5.15.0-91-generic")); up.Patch != nil || up.KernelState != server.KernelUpgradeRequired {
		t.Errorf("check-in on an old kernel = %+v, want kernel-upgrade-required", up)
	}
	if want := "http://lp.example/patches/livepatch-5.15.0-107.117-generic-107.2-amd64.tar.bz2"; up.Patch.URL != want {
		t.Errorf("URL = %q, want %q", up.Patch.URL, want)
	}
	if up := checkIn("m-stable", mStable, status("5.15.0-107-generic")); up.Patch != nil {
		t.Fatalf("stable machine got %+v before promotion", up.Patch)
	}
	var promoted map[string]int
	e.must(200, "POST", "/v1/admin/patches/107.1/promote", "session", map[string]string{"tier": "stable"}, &promoted)
	if promoted["promoted"] != 1 {
		t.Errorf("promoted = %v", promoted)
	}
	if up := checkIn("m-stable", mStable, status("5.15.0-107-generic")); up.Patch == nil || up.Patch.Version != "107.1" {
		t.Fatalf("stable check-in after promotion = %+v", up)
	}
	// Blocking hides a version; unblocking restores it.
	e.must(200, "POST", "/v1/admin/patches/107.2/block", "session", map[string]string{"reason": "regression"}, nil)
	if up := checkIn("m-edge", mEdge, status("5.15.0-107-generic")); up.Patch == nil || up.Patch.Version != "107.1" {
		t.Fatalf("edge check-in with 107.2 blocked = %+v", up)
	}
	e.must(200, "POST", "/v1/admin/patches/107.2/unblock", "session", nil, nil)
	e.must(200, "POST", "/v1/admin/tiers/edge/promote-all", "session", map[string]string{"to": "beta"}, &promoted)
	if promoted["promoted"] != 2 {
		t.Errorf("promote-all = %v, want 2", promoted)
	}
	var list struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/tiers/beta/patches", "session", nil, &list)
	if len(list.Patches) != 3 {
		t.Errorf("beta patches = %d, want 3", len(list.Patches))
	}
	e.must(200, "GET", "/v1/admin/patches?kernel=5.15.0-107&version=107.2", "session", nil, &list)
	if len(list.Patches) != 2 {
		t.Errorf("filtered patches = %d, want 2", len(list.Patches))
	}
	e.must(200, "GET", "/v1/admin/patches/107.2", "session", nil, &list)
	e.wantError(404, "107.9", "GET", "/v1/admin/patches/107.9", "session", nil)

	// Reports.
	st := status("5.15.0-107-generic")
	st.PatchState, st.PatchVersion = server.StateApplied, "107.1"
	checkIn("m-stable", mStable, st)
	var machines struct {
		Machines []server.Machine
		Next     string
	}
	e.must(200, "GET", "/v1/admin/reports/machines?tier=stable", "session", nil, &machines)
	if len(machines.Machines) != 1 || machines.Machines[0].ID != "m-stable" || machines.Machines[0].PatchState != "applied" {
		t.Errorf("machines report = %+v", machines)
	}
	var health struct {
		Total  int
		States map[string]int
	}
	e.must(200, "GET", "/v1/admin/reports/patch-health?tier=stable&version=107.1", "session", nil, &health)
	if health.Total != 1 || health.States["applied"] != 1 {
		t.Errorf("patch health = %+v", health)
	}
	var kernels struct{ Kernels []server.KernelCount }
	e.must(200, "GET", "/v1/admin/reports/kernels", "session", nil, &kernels)
	if len(kernels.Kernels) != 1 || kernels.Kernels[0].Machines != 2 {
		t.Errorf("kernels = %+v", kernels)
	}
	// The unit answers from its count for kernelsTTL (30s), then counts again.
	checkIn("m-edge", mEdge, status("5.15.0-105-generic"))
	e.must(200, "GET", "/v1/admin/reports/kernels", "session", nil, &kernels)
	if len(kernels.Kernels) != 1 || kernels.Kernels[0].Machines != 2 {
		t.Errorf("kernels within the TTL = %+v, want the count of before", kernels)
	}
	e.now = e.now.Add(31 * time.Second)
	e.must(200, "GET", "/v1/admin/reports/kernels", "session", nil, &kernels)
	if len(kernels.Kernels) != 2 || kernels.Kernels[0].Machines != 1 || kernels.Kernels[1].Machines != 1 {
		t.Errorf("kernels after the TTL = %+v, want one machine on each kernel", kernels)
	}

	// Disable: the machine token stops working.
	e.must(204, "DELETE", "/v1/client/m-edge", "Bearer "+mEdge, nil, nil)
	e.wantError(401, "", "POST", "/v1/client/m-edge/updates", "Bearer "+mEdge, status("5.15.0-107-generic"))
}

func TestDownload(t *testing.T) {
	t.Run("storage", func(t *testing.T) { testDownload(t, newEnv(t)) })
	t.Run("patch cache", func(t *testing.T) {
		e := newEnv(t, func(o *httpapi.Options) { o.PatchCacheSize = 2; o.PatchCacheTTL = time.Hour })
		testDownload(t, e)
		_, body := e.do("GET", "/metrics", "", nil)
		if !strings.Contains(string(body), "livepatch_server_patch_cache_hits_total 3") || !strings.Contains(string(body), "livepatch_server_patch_cache_misses_total 1") {
			t.Errorf("cache hits not counted:\n%s", body)
		}
	})
}

// testDownload serves a 3 MiB file. It is put in storage and recorded directly: a valid
// archive that large takes long to compress under the race detector, and the download
// path does not look inside the file.
func testDownload(t *testing.T, e *env) {
	ctx := context.Background()
	name := "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	data := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if _, err := patchstore.NewPostgres(e.db.SQL()).Put(ctx, name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	p, err := e.db.AddPatch(ctx, server.Patch{
		Filename: name, Version: "107.1", Kernel: "5.15.0-107.117", Flavour: "generic", Architecture: "amd64",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Module: "lkp", Source: server.SourceUpload,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/patches/" + name, "/v1/patches/" + name} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, data) || resp.Header.Get("ETag") != `"`+p.SHA256+`"` {
			t.Fatalf("GET %s: %d, %d bytes, ETag %q", path, resp.StatusCode, len(got), resp.Header.Get("ETag"))
		}
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/patches/"+name, nil)
	req.Header.Set("Range", "bytes=1048570-1048589")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(got, data[1048570:1048590]) {
		t.Errorf("range across a chunk boundary: %d, %q", resp.StatusCode, got)
	}
	req, _ = http.NewRequest("GET", e.srv.URL+"/patches/"+name, nil)
	req.Header.Set("If-None-Match", `"`+p.SHA256+`"`)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 304 {
		t.Errorf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	e.wantError(404, "does not exist", "GET", "/patches/livepatch-5.15.0-1.1-generic-1.1-amd64.tar.bz2", "", nil)
}

func TestStorageRefresh(t *testing.T) {
	e := newEnv(t)
	files := patchstore.NewPostgres(e.db.SQL())
	ctx := context.Background()
	name, data := patchArchive(t, "6.8.0-31.31", "generic", "31.1", "arm64", 2048)
	if _, err := files.Put(ctx, name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := files.Put(ctx, "livepatch-6.8.0-31.31-generic-31.2-arm64.tar.bz2", strings.NewReader("garbage")); err != nil {
		t.Fatal(err)
	}
	gone := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	if err := files.Delete(ctx, gone.Filename); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Added, Removed []string
		Invalid        []struct{ Filename, Error string }
	}
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", map[string]bool{"prune": true}, &out)
	if diff := cmp.Diff([]string{name}, out.Added); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{gone.Filename}, out.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if len(out.Invalid) != 1 || !strings.Contains(out.Invalid[0].Error, "not a bzip2") {
		t.Errorf("invalid = %+v", out.Invalid)
	}
	var stored struct {
		Files []struct {
			Filename string
			Recorded bool
		}
	}
	e.must(200, "GET", "/v1/admin/storage/patches", "session", nil, &stored)
	if len(stored.Files) != 2 {
		t.Errorf("stored files = %+v", stored.Files)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	tok := e.authToken("lab", "edge", 1)
	machineTok := e.enable("m1", tok)
	name, data := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 1024)
	otherName := strings.Replace(name, "107.1-amd64", "107.2-amd64", 1)

	tests := []struct {
		name, method, path, auth string
		body                     any
		status                   int
		want                     string
	}{
		{"malformed archive", "PUT", "/v1/admin/patches/files/" + name, "session", []byte("not a tarball"), 400, "not a bzip2-compressed tar"},
		{"name disagrees with metadata", "PUT", "/v1/admin/patches/files/" + otherName, "session", data, 400, `version is "107.1" in metadata.json but "107.2" in the filename`},
		{"bad filename", "PUT", "/v1/admin/patches/files/evil.tar.bz2", "session", data, 400, "invalid patch filename"},
		{"oversized JSON body", "POST", "/v1/admin/tiers", "session", `{"name":"` + strings.Repeat("a", 70000) + `"}`, 413, "larger than"},
		{"malformed JSON", "POST", "/v1/admin/tiers", "session", `{"name":`, 400, "invalid request body"},
		{"unknown field", "POST", "/v1/admin/tiers", "session", `{"name":"x","colour":"red"}`, 400, `unknown field "colour"`},
		{"wrong type", "POST", "/v1/admin/auth-tokens", "session", `{"id":"x","tier":"edge","max-machines":"many"}`, 400, `field "max-machines"`},
		{"unknown tier for token", "POST", "/v1/admin/auth-tokens", "session", map[string]any{"id": "x", "tier": "nosuch"}, 404, "nosuch"},
		{"unknown tier report", "GET", "/v1/admin/reports/machines?tier=nosuch", "session", nil, 404, "nosuch"},
		{"bad state", "GET", "/v1/admin/reports/machines?state=happy", "session", nil, 400, "invalid patch state"},
		{"promote to unknown tier", "POST", "/v1/admin/patches/107.1/promote", "session", map[string]string{"tier": "nosuch"}, 404, ""},
		{"unknown auth token", "POST", "/v1/client/m2", "Bearer 00000000-0000-4000-8000-000000000000", nil, 401, ""},
		{"no bearer", "POST", "/v1/client/m2", "", nil, 401, "bearer token"},
		{"over machine limit", "POST", "/v1/client/m2", "Bearer " + tok, nil, 403, ""},
		{"bad machine id", "POST", "/v1/client/bad%20id/updates", "Bearer " + machineTok, status("5.15.0-107-generic"), 400, "invalid machine id"},
		{"bad kernel", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, status("linux"), 400, "kernel release"},
		{"bad state in check-in", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, map[string]any{"kernel": "5.15.0-107-generic", "architecture": "amd64", "patch-state": "great"}, 400, "invalid patch state"},
		{"wrong machine token", "POST", "/v1/client/m1/updates", "Bearer wrong", status("5.15.0-107-generic"), 401, ""},
		{"empty check-in", "POST", "/v1/client/m1/updates", "Bearer " + machineTok, "", 400, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			e.wantError(tt.status, tt.want, tt.method, tt.path, tt.auth, tt.body)
		})
	}
	e.t = t

	// Re-enabling the same machine (with its machine token) is allowed at the limit;
	// revoked and expired tokens are refused.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/client/m1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Livepatch-Machine-Token", machineTok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("re-enable m1 at the limit: %v %v", resp.Status, err)
	}
	e.must(204, "DELETE", "/v1/admin/auth-tokens/lab", "session", nil, nil)
	e.wantError(401, "", "POST", "/v1/client/m3", "Bearer "+tok, nil)
	exp := e.now.Add(time.Hour)
	var short server.AuthToken
	e.must(201, "POST", "/v1/admin/auth-tokens", "session", map[string]any{"id": "short", "tier": "edge", "expires-at": exp}, &short)
	e.now = e.now.Add(2 * time.Hour)
	e.wantError(401, "", "POST", "/v1/client/m4", "Bearer "+short.Token, nil)
	e.wantError(400, "in the past", "POST", "/v1/admin/auth-tokens", "session", map[string]any{"id": "old", "tier": "edge", "expires-at": exp})
}

func TestOperations(t *testing.T) {
	e := newEnv(t)
	status, body := e.do("GET", "/", "", nil)
	if status != 200 || string(body) != "Canonical Livepatch on-prem server, version 9.9.9\n" {
		t.Errorf("banner: %d %q", status, body)
	}
	var st map[string]any
	e.must(200, "GET", "/debug/status", "", nil, &st)
	if st["status"] != "OK" || st["database"].(map[string]any)["status"] != "OK" {
		t.Errorf("debug status = %v", st)
	}
	e.do("GET", "/debug/info", "", nil)
	status, body = e.do("GET", "/metrics", "", nil)
	if status != 200 || !strings.Contains(string(body), `livepatch_server_http_request_duration_seconds_count{code="200",handler="/debug/info",method="GET"} 1`) {
		t.Errorf("metrics: %d\n%s", status, body)
	}
}

// trustLoopback makes the test server trust its loopback peer as haproxy.
func trustLoopback(o *httpapi.Options) {
	o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
}

// forwardedLogin logs in as admin with pass, through a proxy that says the client is
// forwarded ("" sends no X-Forwarded-For), and returns the status.
func (e *env) forwardedLogin(pass, forwarded string) int {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/admin/login", nil)
	req.SetBasicAuth(adminUser, pass)
	if forwarded != "" {
		req.Header.Set("X-Forwarded-For", forwarded)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestForwardedForTrust checks that X-Forwarded-For counts only from a trusted proxy, and
// then only the entry the proxy appended.
func TestForwardedForTrust(t *testing.T) {
	t.Run("untrusted peer", func(t *testing.T) {
		e := newEnv(t)
		// A client rotating the header is still one address: the peer.
		for i := range 5 {
			if got := e.forwardedLogin("wrong", fmt.Sprintf("203.0.113.%d", i)); got != 401 {
				t.Fatalf("failure %d: %d, want 401", i, got)
			}
		}
		if got := e.forwardedLogin(adminPass, "198.51.100.77"); got != 429 {
			t.Errorf("a rotated X-Forwarded-For escapes the lock: %d, want 429", got)
		}
		if strings.Contains(e.logBuf.String(), "203.0.113.") {
			t.Errorf("the log believes an untrusted X-Forwarded-For")
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		e := newEnv(t, trustLoopback)
		// The attacker's own claims sit left of what haproxy appended: rotating them
		// changes nothing.
		for i := range 5 {
			if got := e.forwardedLogin("wrong", fmt.Sprintf("10.9.9.%d, 203.0.113.7", i)); got != 401 {
				t.Fatalf("failure %d: %d, want 401", i, got)
			}
		}
		if got := e.forwardedLogin(adminPass, "10.1.1.1,203.0.113.7"); got != 429 {
			t.Errorf("rotating the client's own X-Forwarded-For entries escapes the lock: %d", got)
		}
		// The proxy's address itself is not locked: the administrator behind it logs in.
		if got := e.forwardedLogin(adminPass, "192.0.2.20"); got != 200 {
			t.Errorf("administrator through the same proxy: %d, want 200", got)
		}
		if !strings.Contains(e.logBuf.String(), `"remote":"203.0.113.7 via 127.0.0.1"`) {
			t.Errorf("security events do not name the forwarded client")
		}
	})
}

func TestLoginLockout(t *testing.T) {
	e := newEnv(t, trustLoopback)
	login := func(pass, forwarded string) int {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/admin/login", nil)
		req.SetBasicAuth(adminUser, pass)
		if forwarded != "" {
			req.Header.Set("X-Forwarded-For", forwarded)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 5 {
		if got := login("wrong", "203.0.113.7"); got != 401 {
			t.Fatalf("failure %d: status %d, want 401", i, got)
		}
	}
	// The user is locked from that address, even with the right password...
	if got := login(adminPass, "203.0.113.7"); got != 429 {
		t.Errorf("locked user from the failing address: %d, want 429", got)
	}
	// ...and still logs in from another.
	if got := login(adminPass, "198.51.100.1"); got != 200 {
		t.Errorf("user from another address: %d, want 200", got)
	}
	// The lock lifts after the window.
	e.now = e.now.Add(16 * time.Minute)
	if got := login(adminPass, "203.0.113.7"); got != 200 {
		t.Errorf("after the lockout window: %d, want 200", got)
	}
	// An address spraying many users is locked too: see TestLockoutAddress.
	logs := e.logBuf.String()
	for _, want := range []string{`"event":"basicauth_authn_failed"`, `"event":"basicauth_authn_locked"`, `"remote":"203.0.113.7 via 127.0.0.1"`, `"event":"authz_admin"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(logs, adminPass) || strings.Contains(logs, `"wrong"`) {
		t.Errorf("log holds a password")
	}
}

// TestLoginHostileUserNames sends what an attacker or a careless admin sends as user name:
// huge names, and a password typed into the user field.
func TestLoginHostileUserNames(t *testing.T) {
	e := newEnv(t)
	login := func(user, pass string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/admin/login", nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	huge := strings.Repeat("x", 300<<10)
	for i := range 3 {
		if got := login(fmt.Sprint(huge, i), "pw"); got != 401 {
			t.Fatalf("huge user name: status %d, want 401", got)
		}
	}
	const typedPassword = "Correct.Horse-Battery+Staple9"
	if got := login(typedPassword, ""); got != 401 {
		t.Fatalf("password as user name: status %d, want 401", got)
	}
	logs := e.logBuf.String()
	if strings.Contains(logs, "xxxxxxxxxxxxxxxx") || strings.Contains(logs, typedPassword) {
		t.Errorf("log holds a user name that is no user:\n%.2000s", logs)
	}
	if len(logs) > 16<<10 {
		t.Errorf("4 failed logins wrote %d bytes of log", len(logs))
	}
	if !strings.Contains(logs, `"user-ref":"`) {
		t.Errorf("failed logins of unknown users carry no user-ref:\n%s", logs)
	}
	// Known users stay named in the log.
	login(adminUser, "wrong")
	if !strings.Contains(e.logBuf.String(), `"user":"admin"`) {
		t.Errorf("a known user's failed login does not name the user")
	}
}

// TestEnableTakeover: any auth token holder knows other machines' ids; re-enabling one
// must not hand over its identity.
func TestEnableTakeover(t *testing.T) {
	e := newEnv(t)
	victimToken := e.enable("victim", e.authToken("web", "stable", 0))
	attackerAuth := e.authToken("lab", "stable", 0)
	e.wantError(409, `machine "victim" is enabled already`, "POST", "/v1/client/victim", "Bearer "+attackerAuth, nil)
	// A guessed proof is no proof.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/client/victim", nil)
	req.Header.Set("Authorization", "Bearer "+attackerAuth)
	req.Header.Set("Livepatch-Machine-Token", "guess")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 409 {
		t.Errorf("re-enable with a wrong machine token: %v %v", resp.Status, err)
	}
	e.must(200, "POST", "/v1/client/victim/updates", "Bearer "+victimToken, status("5.15.0-107-generic"), nil)
	// The machine itself re-enables with its token.
	req, _ = http.NewRequest("POST", e.srv.URL+"/v1/client/victim", nil)
	req.Header.Set("Authorization", "Bearer "+attackerAuth)
	req.Header.Set("Livepatch-Machine-Token", victimToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("re-enable with the machine token: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	// An administrator frees the id of a machine that lost its token.
	e.must(204, "DELETE", "/v1/admin/machines/victim", "session", nil, nil)
	e.wantError(404, `machine "victim" not found`, "DELETE", "/v1/admin/machines/victim", "session", nil)
	e.enable("victim", attackerAuth)
	if !strings.Contains(e.logBuf.String(), `"event":"machine_remove"`) {
		t.Errorf("machine removal is not a security event")
	}
}

// TestSessionsEndWithTheirUser checks that a session stops working when its user is
// removed or changes password, on any unit (another API on the same database stands for
// another unit), and that sessions can be listed and revoked.
func TestSessionsEndWithTheirUser(t *testing.T) {
	e := newEnv(t)
	var login struct{ Token string }
	e.must(200, "POST", "/v1/admin/login", "basic", nil, &login)
	other := e.login()

	var list struct{ Sessions []server.Session }
	e.must(200, "GET", "/v1/admin/sessions", "Bearer "+login.Token, nil, &list)
	if len(list.Sessions) != 2 || list.Sessions[0].User != adminUser || !list.Sessions[0].Current || list.Sessions[1].Current || !list.Sessions[0].Valid {
		t.Fatalf("sessions = %+v", list.Sessions)
	}
	if strings.Contains(fmt.Sprint(list), login.Token) {
		t.Errorf("the listing shows a token")
	}
	// Revoking one session by id ends it, on every unit.
	e.must(204, "DELETE", "/v1/admin/sessions/"+list.Sessions[1].ID, "Bearer "+login.Token, nil, nil)
	e.wantError(401, "session expired", "GET", "/v1/admin/tiers", "Bearer "+other, nil)
	e.wantError(404, "not found", "DELETE", "/v1/admin/sessions/"+list.Sessions[1].ID, "Bearer "+login.Token, nil)

	// Another unit whose configuration has a new password for admin refuses the session.
	newPassword := htpasswdEntry(t, adminUser, "n3w-Passw0rd")
	unit2 := newEnvOn(t, e.db, func(o *httpapi.Options) { o.BasicUsers = []string{newPassword} })
	unit2.wantError(401, "session ended: the user was removed or its password changed", "GET", "/v1/admin/tiers", "Bearer "+login.Token, nil)
	// The refusal deleted it: the unit with the old configuration refuses it too.
	e.wantError(401, "session expired", "GET", "/v1/admin/tiers", "Bearer "+login.Token, nil)

	// A removed user's sessions end.
	bob := htpasswdEntry(t, "bob", "b0b-Passw0rd")
	unit3 := newEnvOn(t, e.db, func(o *httpapi.Options) { o.BasicUsers = []string{cachedEntry, bob} })
	req, _ := http.NewRequest("POST", unit3.srv.URL+"/v1/admin/login", nil)
	req.SetBasicAuth("bob", "b0b-Passw0rd")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bob's login: %v %v", resp.Status, err)
	}
	json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	e.wantError(401, "session ended", "GET", "/v1/admin/tiers", "Bearer "+login.Token, nil)

	// Every session of a user at once.
	unit3.token = ""
	unit3.login()
	var revoked struct{ Revoked int }
	e.must(200, "DELETE", "/v1/admin/sessions?user=admin", "basic", nil, &revoked)
	if revoked.Revoked != 1 {
		t.Errorf("revoked %d sessions of admin, want 1", revoked.Revoked)
	}
	unit3.wantError(401, "session expired", "GET", "/v1/admin/tiers", "Bearer "+unit3.token, nil)
	e.wantError(400, "?user=NAME", "DELETE", "/v1/admin/sessions", "basic", nil)
}

// TestCrossSiteRequestsRefused sends admin requests as a browser does when a page of
// another site makes them while the administrator's basic credentials are cached: a form
// post, a simple fetch with a text/plain body, and a fetch marked cross-site.
func TestCrossSiteRequestsRefused(t *testing.T) {
	e := newEnv(t)
	p := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	browser := func(method, path, ctype, body string, headers map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		if body == "" {
			req.Body = http.NoBody
		}
		req.SetBasicAuth(adminUser, adminPass)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb struct{ Code, Message string }
		json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb.Code
	}
	promote := "/v1/admin/patches/" + p.Version + "/promote"
	crossSite := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
	for _, tt := range []struct {
		name, method, path, ctype, body string
		headers                         map[string]string
		status                          int
		code                            string
	}{
		{"simple fetch, text/plain", "POST", promote, "text/plain;charset=UTF-8", `{"tier":"stable"}`, crossSite, 403, "forbidden"},
		{"text/plain, no browser headers", "POST", promote, "text/plain", `{"tier":"stable"}`, nil, 415, "unsupported-type"},
		{"form post", "POST", promote, "application/x-www-form-urlencoded", `{"tier":"stable"}=`, nil, 415, "unsupported-type"},
		{"multipart form", "POST", promote, "multipart/form-data; boundary=x", "--x--", nil, 415, "unsupported-type"},
		{"JSON body without a type", "POST", promote, "", `{"tier":"stable"}`, nil, 415, "unsupported-type"},
		{"bodiless post from another origin", "POST", "/v1/admin/storage/refresh", "", "", map[string]string{"Origin": "http://evil.example"}, 403, "forbidden"},
		{"bodiless post marked cross-site", "POST", "/v1/admin/storage/refresh", "", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "forbidden"},
		{"same-site is another origin", "DELETE", "/v1/admin/tiers/edge", "", "", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "forbidden"},
		{"upload as text/plain", "PUT", "/v1/admin/patches/files/" + p.Filename, "text/plain", "x", nil, 415, "unsupported-type"},
		{"login from another origin", "POST", "/v1/admin/login", "", "", map[string]string{"Origin": "http://evil.example"}, 403, "forbidden"},
	} {
		if status, code := browser(tt.method, tt.path, tt.ctype, tt.body, tt.headers); status != tt.status || code != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, status, code, tt.status, tt.code)
		}
	}
	var got struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/patches/"+p.Version, "basic", nil, &got)
	if len(got.Patches) != 1 || got.Patches[0].Tier != p.Tier {
		t.Fatalf("a refused request promoted the patch: %+v", got.Patches)
	}
	// The same page's own requests, and the CLI's (no browser headers), pass.
	sameOrigin := map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "same-origin"}
	if status, _ := browser("POST", promote, "application/json", `{"tier":"beta"}`, sameOrigin); status != 200 {
		t.Errorf("same-origin JSON promote: %d, want 200", status)
	}
	if status, _ := browser("POST", "/v1/admin/storage/refresh", "", "", nil); status != 200 {
		t.Errorf("bodiless CLI post: %d, want 200", status)
	}
	if status, _ := browser("GET", "/v1/admin/tiers", "", "", crossSite); status != 200 {
		t.Errorf("cross-site GET (cannot read the answer, changes nothing): %d, want 200", status)
	}
}
