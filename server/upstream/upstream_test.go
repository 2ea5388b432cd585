package upstream_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/syncbuf"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// node is one livepatch server: its own database and patch storage, its API on a
// loopback httptest server (an upstream when it has a signing key), and, when it syncs,
// a Syncer.
type node struct {
	t     *testing.T
	name  string
	dsn   string
	db    *postgres.DB
	files server.PatchFiles
	srv   *httptest.Server
	key   ed25519.PrivateKey
	log   *syncbuf.Buffer
	// wrap, when set before start, wraps the API handler (to tamper with answers).
	wrap func(http.Handler) http.Handler
}

// newNode starts a server named name with a signing key, patch URLs under its own
// address, and options applied to its API options. Under -short it skips the test: the
// tests of servers syncing from one another take seconds each.
func newNode(t *testing.T, name string, options ...func(*httpapi.Options)) *node {
	t.Helper()
	if testing.Short() {
		t.Skip("starts servers on PostgreSQL: skipped with -short")
	}
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	db, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: name, dsn: dsn, db: db, files: patchstore.NewPostgres(db.SQL()), key: key, log: &syncbuf.Buffer{}}
	n.srv = httptest.NewUnstartedServer(nil)
	opts := httpapi.Options{
		Version:     "test",
		URLTemplate: "http://" + n.srv.Listener.Addr().String() + "/v1/patches/{filename}",
		SigningKey:  key,
		Logger:      slog.New(slog.NewJSONHandler(n.log, nil)),
	}
	for _, o := range options {
		o(&opts)
	}
	api, err := httpapi.New(db, n.files, opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { api.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	n.srv.Config.Handler = api
	return n
}

// tamper makes the node answer sync list requests with what edit makes of the signed
// list it would answer. Call it before start.
func (n *node) tamper(edit func(server.SignedSyncList) server.SignedSyncList) {
	n.wrap = func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/sync/patches" {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			var signed server.SignedSyncList
			if err := json.Unmarshal(rec.Body.Bytes(), &signed); err != nil {
				n.t.Errorf("cannot decode the signed list: %v", err)
			}
			w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
			json.NewEncoder(w).Encode(edit(signed))
		})
	}
}

// relist makes the node's sync lists pass through edit, signed again with its own key:
// an upstream that lists what it should not, properly signed. Call it before start.
func (n *node) relist(edit func(*server.SyncList)) {
	n.tamper(func(signed server.SignedSyncList) server.SignedSyncList {
		list, err := signed.Verify(n.pub())
		if err != nil {
			n.t.Errorf("%s's list: %v", n.name, err)
		}
		edit(&list)
		resigned, err := server.SignSyncList(list, n.key)
		if err != nil {
			n.t.Error(err)
		}
		return resigned
	})
}

// start serves the node's API.
func (n *node) start() *node {
	if n.wrap != nil {
		n.srv.Config.Handler = n.wrap(n.srv.Config.Handler)
	}
	n.srv.Start()
	n.t.Cleanup(n.srv.Close)
	return n
}

func (n *node) pub() ed25519.PublicKey { return n.key.Public().(ed25519.PublicKey) }

// archive returns a generated patch archive and its filename.
func archive(t *testing.T, kernel, flavour, version, arch string) (string, []byte) {
	return archiveSized(t, kernel, flavour, version, arch, 4096)
}

func archiveSized(t *testing.T, kernel, flavour, version, arch string, moduleSize int) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := patchfile.Generate(&buf, patchfile.Metadata(kernel, flavour, version, arch), moduleSize); err != nil {
		t.Fatal(err)
	}
	return server.PatchName{Kernel: kernel, Flavour: flavour, Version: version, Architecture: arch}.Filename(), buf.Bytes()
}

// upload stores and records a generated patch as an admin upload does, in tier ("" =
// first).
func (n *node) upload(kernel, flavour, version, arch, tier string) server.Patch {
	n.t.Helper()
	name, data := archive(n.t, kernel, flavour, version, arch)
	return n.record(name, data, tier)
}

// record stores and records the archive data as name.
func (n *node) record(name string, data []byte, tier string) server.Patch {
	n.t.Helper()
	ctx := n.t.Context()
	info, err := patchfile.Check(bytes.NewReader(data), name)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := n.files.Put(ctx, name, bytes.NewReader(data)); err != nil {
		n.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	m := info.Metadata
	p, err := n.db.AddPatch(ctx, server.Patch{
		Filename: name, Version: m.Version, Kernel: m.Kernel, Flavour: m.Flavour, Architecture: m.Architecture,
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Module: m.Module,
		Description: m.Description, Fixes: m.Fixes, Tier: tier, Source: server.SourceUpload,
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return p
}

// syncToken issues a sync token for tier, valid until until (nil: forever).
func (n *node) syncToken(name, tier string, until *time.Time) string {
	n.t.Helper()
	token := server.NewUUID()
	if _, err := n.db.CreateSyncToken(n.t.Context(), server.NewSyncToken{Name: name, Tier: tier, Hash: server.HashToken(token), ValidUntil: until}); err != nil {
		n.t.Fatal(err)
	}
	return token
}

// follow returns the patch-sync config of a server that syncs tier of up with token.
func follow(up *node, token, tier string) config.PatchSync {
	cfg := config.Default().PatchSync
	cfg.Enabled = true
	cfg.UpstreamURL = up.srv.URL
	cfg.Token = token
	cfg.UpstreamTier = tier
	cfg.TrustedKey = server.MarshalPublicKey(up.pub())
	return cfg
}

// syncer returns a Syncer of n with cfg.
func (n *node) syncer(cfg config.PatchSync, options ...func(*upstream.Options)) *upstream.Syncer {
	opts := upstream.Options{Unit: n.name, Logger: slog.New(slog.NewJSONHandler(n.log, nil)), TempDir: n.t.TempDir()}
	for _, o := range options {
		o(&opts)
	}
	return upstream.New(n.db, n.files, cfg, opts)
}

// patches returns n's recorded patches by filename.
func (n *node) patches() map[string]server.Patch {
	n.t.Helper()
	ps, err := n.db.Patches(n.t.Context(), server.PatchFilter{})
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]server.Patch{}
	for _, p := range ps {
		out[p.Filename] = p
	}
	return out
}

// stored returns the names of the files in n's patch storage.
func (n *node) stored() []string {
	n.t.Helper()
	files, err := n.files.List(n.t.Context())
	if err != nil {
		n.t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Filename)
	}
	slices.Sort(names)
	return names
}

// names returns the sorted keys of a patch map.
func names(ps map[string]server.Patch) []string {
	var out []string
	for name := range ps {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// wantReport checks a report's outcome, count and that its error contains want.
func wantReport(t *testing.T, r server.SyncReport, outcome string, added int, want string) {
	t.Helper()
	if r.Outcome != outcome || r.PatchesAdded != added || !strings.Contains(r.Error, want) || (want == "" && r.Error != "") {
		t.Errorf("report = %+v; want outcome %s, %d added, error containing %q", r, outcome, added, want)
	}
	if r.ID == 0 || r.Unit == "" || r.StartedAt.IsZero() || r.EndedAt.Before(r.StartedAt) {
		t.Errorf("report %+v is not recorded with id, unit and times", r)
	}
}

// get downloads path from n's API.
func (n *node) get(path string) []byte {
	n.t.Helper()
	resp, err := http.Get(n.srv.URL + path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		n.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, data)
	}
	return data
}

func TestSyncFromUpstream(t *testing.T) {
	t.Parallel()
	a := newNode(t, "a").start()
	b := newNode(t, "b")
	b.start()
	ctx := t.Context()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("5.15.0-107.117", "generic", "107.1", "arm64", "stable")
	a.upload("5.15.0-108.118", "generic", "108.1", "amd64", "edge") // not promoted to stable
	blocked := a.upload("5.15.0-108.118", "lowlatency", "108.1", "amd64", "stable")
	if _, err := a.db.SetBlocked(ctx, "108.1", true, "regression"); err != nil {
		t.Fatal(err)
	}

	cfg := follow(a, a.syncToken("region-b", "stable", nil), "stable")
	cfg.ID = "dep-b"
	reg := prometheus.NewRegistry()
	s := b.syncer(cfg, func(o *upstream.Options) { o.Registry = reg })
	r := s.SyncOnce(ctx)
	wantReport(t, r, server.SyncSuccess, 2, "")
	if r.Bytes != p1.Size+p2.Size || r.Unit != "b" {
		t.Errorf("report bytes %d unit %q, want %d and b", r.Bytes, r.Unit, p1.Size+p2.Size)
	}
	got := b.patches()
	if diff := cmp.Diff([]string{p1.Filename, p2.Filename}, names(got)); diff != "" {
		t.Fatalf("synced patches (-want +got):\n%s", diff)
	}
	for _, want := range []server.Patch{p1, p2} {
		g := got[want.Filename]
		if g.SHA256 != want.SHA256 || g.Size != want.Size || g.Tier != "edge" || g.Source != server.SourceSync ||
			g.Module != want.Module || !cmp.Equal(g.Fixes, want.Fixes) || g.Description != want.Description {
			t.Errorf("synced %s = %+v, want %+v in edge from sync", want.Filename, g, want)
		}
		// b serves the file as a's clients get it.
		if data := b.get("/v1/patches/" + want.Filename); !bytes.Equal(data, a.get("/v1/patches/"+want.Filename)) {
			t.Errorf("%s differs between a and b", want.Filename)
		}
	}
	if _, ok := got[blocked.Filename]; ok {
		t.Errorf("a blocked patch was synced")
	}
	// Telemetry: the deployment id and the machine count (bucketed) reached a.
	if !strings.Contains(a.log.String(), `"event":"sync_list","user":"sync-token:region-b"`) ||
		!strings.Contains(a.log.String(), `"deployment":"dep-b","machines":0`) {
		t.Errorf("a's log lacks the sync event with telemetry:\n%s", a.log)
	}

	// Re-syncing changes nothing.
	version, _ := b.db.CatalogVersion(ctx)
	r = s.SyncOnce(ctx)
	wantReport(t, r, server.SyncSuccess, 0, "")
	if v, _ := b.db.CatalogVersion(ctx); v != version {
		t.Errorf("a no-op sync changed the catalog: version %d -> %d", version, v)
	}

	// A new upstream patch arrives alone.
	p3 := a.upload("6.8.0-31.31", "generic", "31.1", "amd64", "stable")
	r = s.SyncOnce(ctx)
	wantReport(t, r, server.SyncSuccess, 1, "")
	if _, ok := b.patches()[p3.Filename]; !ok {
		t.Errorf("%s was not synced", p3.Filename)
	}

	// Status and metrics.
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Upstream != a.srv.URL || st.UpstreamTier != "stable" || st.Tier != "edge" ||
		st.LastRun == nil || st.LastRun.ID != r.ID || st.LastSuccess == nil || !st.LastSuccess.Equal(r.EndedAt) || len(st.Warnings) != 0 {
		t.Errorf("status = %+v", st)
	}
	if got := s.Health(ctx); got.Status != "OK" || !got.Enabled {
		t.Errorf("debug status = %v", got)
	}
	wantMetric(t, reg, "livepatch_server_sync_runs_total", `outcome="success"`, 3)
	wantMetric(t, reg, "livepatch_server_sync_runs_total", `outcome="failed"`, 0)
	wantMetric(t, reg, "livepatch_server_sync_patches_added_total", "", 3)
	wantMetric(t, reg, "livepatch_server_sync_last_success_timestamp_seconds", "", float64(r.EndedAt.UnixNano())/1e9)
}

// wantMetric checks one sample of a gathered metric; label is "name=\"value\"" or "".
func wantMetric(t *testing.T, reg *prometheus.Registry, name, label string, want float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if strings.Join(labels, ",") != label {
				continue
			}
			var got float64
			switch {
			case m.GetCounter() != nil:
				got = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got = m.GetGauge().GetValue()
			}
			if got != want {
				t.Errorf("%s{%s} = %v, want %v", name, label, got, want)
			}
			return
		}
	}
	t.Errorf("metric %s{%s} not found", name, label)
}

func TestChaining(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	c := newNode(t, "c").start()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("6.8.0-31.31", "generic", "31.1", "arm64", "stable")

	// b follows a's stable tier; its patches land in its first tier, edge.
	wantReport(t, b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable")).SyncOnce(ctx), server.SyncSuccess, 2, "")
	// c follows b's edge tier, trusting b's key. a is gone by then: c needs only b.
	a.srv.Close()
	sc := c.syncer(follow(b, b.syncToken("c", "edge", nil), "edge"))
	wantReport(t, sc.SyncOnce(ctx), server.SyncSuccess, 2, "")
	got := c.patches()
	for _, want := range []server.Patch{p1, p2} {
		if g := got[want.Filename]; g.SHA256 != want.SHA256 || g.Source != server.SourceSync || g.Tier != "edge" {
			t.Errorf("c has %s as %+v, want sha256 %s from sync", want.Filename, g, want.SHA256)
		}
	}
	if diff := cmp.Diff([]string{p1.Filename, p2.Filename}, c.stored()); diff != "" {
		t.Errorf("c's storage (-want +got):\n%s", diff)
	}
	wantReport(t, sc.SyncOnce(ctx), server.SyncSuccess, 0, "")

	// c cannot take b's list as a's: the key differs.
	cfg := follow(b, b.syncToken("c2", "edge", nil), "edge")
	cfg.TrustedKey = server.MarshalPublicKey(a.pub())
	wantReport(t, c.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0, "bad signature")
}

func TestFilters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	keep := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	keep2 := a.upload("6.8.0-31.31", "aws", "31.1", "amd64", "stable")
	a.upload("5.15.0-107.117", "lowlatency", "107.1", "amd64", "stable") // flavour
	a.upload("5.15.0-107.117", "generic", "107.1", "arm64", "stable")    // architecture
	a.upload("5.4.0-150.167", "generic", "150.1", "amd64", "stable")     // kernel too old

	cfg := follow(a, a.syncToken("b", "stable", nil), "stable")
	cfg.Flavors = []string{"generic", "aws"}
	cfg.Architectures = []string{"amd64"}
	cfg.MinimumKernelVersion = "5.15.0"
	cfg.Tier = "beta"
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncSuccess, 2, "")
	got := b.patches()
	if diff := cmp.Diff([]string{keep.Filename, keep2.Filename}, names(got)); diff != "" {
		t.Errorf("filtered sync (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if p.Tier != "beta" {
			t.Errorf("%s landed in %q, want beta (patch-sync.tier)", p.Filename, p.Tier)
		}
	}

	// A landing tier that does not exist is a failure that says so.
	cfg.Tier = "nosuch"
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0, `patch-sync.tier "nosuch" is not a tier of this server (tiers: edge, beta, candidate, stable)`)
}

func TestTamperedUpstreamFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	good := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	bad := a.upload("6.8.0-31.31", "generic", "31.1", "amd64", "stable")
	short := a.upload("6.8.0-40.40", "generic", "40.1", "amd64", "stable")
	// Change bytes in a's storage after recording: same size, and shorter.
	_, data := archive(t, "6.8.0-31.31", "generic", "31.1", "amd64")
	data[len(data)/2] ^= 0xff
	if _, err := a.files.Put(ctx, bad.Filename, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	_, data = archive(t, "6.8.0-40.40", "generic", "40.1", "amd64")
	if _, err := a.files.Put(ctx, short.Filename, bytes.NewReader(data[:len(data)-10])); err != nil {
		t.Fatal(err)
	}

	s := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable"))
	r := s.SyncOnce(ctx)
	wantReport(t, r, server.SyncFailed, 1, "checksum mismatch for "+bad.Filename+": want sha256 "+bad.SHA256+", got "+hex.EncodeToString(sum[:]))
	if !strings.Contains(r.Error, "size mismatch for "+short.Filename) {
		t.Errorf("report error %q does not name the short file", r.Error)
	}
	// The good patch is in; nothing of the bad ones is stored or recorded.
	if diff := cmp.Diff([]string{good.Filename}, names(b.patches())); diff != "" {
		t.Errorf("b's patches (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{good.Filename}, b.stored()); diff != "" {
		t.Errorf("b's storage (-want +got):\n%s", diff)
	}
	// The next run fails the same way: nothing is retried into place.
	wantReport(t, s.SyncOnce(ctx), server.SyncFailed, 0, "checksum mismatch")
	if st := s.Health(ctx); !strings.HasPrefix(st.Status, "last sync failed: ") || !strings.Contains(st.Status, "checksum mismatch") {
		t.Errorf("debug status = %v", st)
	}

}

func TestLocalFileNeverReplaced(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	theirs := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	// b has a file of the same name with other contents (a module of another size).
	name, data := archiveSized(t, "5.15.0-107.117", "generic", "107.1", "amd64", 5000)
	mine := b.record(name, data, "")
	r := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable")).SyncOnce(ctx)
	wantReport(t, r, server.SyncFailed, 0, "patch "+name+" is recorded here with sha256 "+mine.SHA256+" but the upstream lists sha256 "+theirs.SHA256+": it was not replaced")
	if got := b.patches()[name]; got.SHA256 != mine.SHA256 || got.Source != server.SourceUpload {
		t.Errorf("b's record became %+v", got)
	}
	if got := b.get("/v1/patches/" + name); !bytes.Equal(got, data) {
		t.Errorf("b's file was replaced")
	}
}

func TestBadSignature(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a")
	// A middleman adds a patch to the signed list: the payload no longer verifies.
	a.tamper(func(signed server.SignedSyncList) server.SignedSyncList {
		signed.Payload = bytes.Replace(signed.Payload, []byte(`"patches":[`), []byte(`"patches":[{"filename":"evil"},`), 1)
		return signed
	})
	a.start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	cfg := follow(a, a.syncToken("b", "stable", nil), "stable")
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0,
		"bad signature on the patch list from "+a.srv.URL+": the list does not verify with the trusted key "+server.KeyID(a.pub())+"; check patch-sync.trusted-key")

	// Signed by another key.
	_, other, _ := ed25519.GenerateKey(nil)
	cfg.TrustedKey = server.MarshalPublicKey(other.Public().(ed25519.PublicKey))
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0,
		"the list is signed by key "+server.KeyID(a.pub())+", not by the trusted key "+server.KeyID(other.Public().(ed25519.PublicKey)))
	if len(b.patches()) != 0 || len(b.stored()) != 0 {
		t.Errorf("b stored %v", b.stored())
	}

	// Without a trusted key the list is taken unverified, with a warning in the status.
	cfg.TrustedKey = ""
	s := b.syncer(cfg)
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"patch-sync.trusted-key is empty: the signatures of upstream patch lists are not verified"}, st.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	// The evil entry is refused on its own merits; the real patch comes in.
	wantReport(t, s.SyncOnce(ctx), server.SyncFailed, 1, `the upstream lists an invalid patch: invalid patch filename "evil"`)
}

func TestTokenRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	past := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	expired := a.syncToken("old", "stable", &past)
	revoked := a.syncToken("gone", "stable", nil)
	if err := a.db.RevokeSyncToken(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	edge := a.syncToken("edge-only", "edge", nil)
	prefix := "the upstream at " + a.srv.URL + " refused patch-sync.token: "
	for _, tc := range []struct{ name, token, want string }{
		{"expired", expired, prefix + `401 sync token "old" expired at ` + past.Format(time.RFC3339) + ": ask the upstream's administrator for a new one"},
		{"revoked", revoked, prefix + `401 sync token "gone" has been revoked`},
		{"unknown", server.NewUUID(), prefix + "401 unknown sync token"},
		{"other tier", edge, prefix + `403 sync token "edge-only" is for tier "edge", not "stable": set patch-sync.upstream-tier to "edge"`},
		{"not a uuid", "not-a-sync-token", prefix + "401 unknown sync token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReport(t, b.syncer(follow(a, tc.token, "stable")).SyncOnce(ctx), server.SyncFailed, 0, tc.want)
		})
	}
	if len(b.patches()) != 0 || len(b.stored()) != 0 {
		t.Errorf("b stored %v", b.stored())
	}
	if strings.Contains(a.log.String(), expired) || strings.Contains(b.log.String(), expired) {
		t.Errorf("a token reached a log")
	}
}

func TestUnreachableUpstream(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	cfg := follow(a, a.syncToken("b", "stable", nil), "stable")
	a.srv.Close()
	s := b.syncer(cfg)
	wantReport(t, s.SyncOnce(ctx), server.SyncFailed, 0, "cannot reach the upstream at "+a.srv.URL+"/v1/sync/patches?tier=stable: dial tcp ")

	// An upstream without a signing key says so.
	c := newNode(t, "c", func(o *httpapi.Options) { o.SigningKey = nil }).start()
	cfg = follow(c, c.syncToken("b", "stable", nil), "stable")
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0,
		"the upstream at "+c.srv.URL+"/v1/sync/patches?tier=stable answered 503 this server is not configured as a sync upstream (sync-server.signing-key)")

	// Configuration problems fail every run with what to fix.
	cfg.Token = ""
	cfg.TrustedKey = "/nonexistent/signing.pub"
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0,
		"invalid sync configuration: patch-sync.token is empty: set a resource token (action get-resource-token) or a sync token from the upstream server (livepatch-admin sync-tokens add); "+
			"patch-sync.trusted-key is neither an ed25519 public key nor a readable file: open /nonexistent/signing.pub: no such file or directory")
}

func TestInterruptedSync(t *testing.T) {
	t.Parallel()
	a := newNode(t, "a")
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("6.8.0-31.31", "generic", "31.1", "amd64", "stable")
	// The download of p2 stalls half way until the sync is cancelled.
	stalled := make(chan struct{})
	var once sync.Once
	var stall atomicBool
	stall.set(true)
	a.wrap = func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/patches/"+p2.Filename || !stall.get() {
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Length", strconv.FormatInt(p2.Size, 10))
			w.Write(make([]byte, p2.Size/2))
			w.(http.Flusher).Flush()
			once.Do(func() { close(stalled) })
			<-r.Context().Done()
		})
	}
	a.start()
	b := newNode(t, "b").start()
	s := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable"))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan server.SyncReport)
	go func() { done <- s.SyncOnce(ctx) }()
	select {
	case <-stalled:
	case <-time.After(time.Minute):
		t.Fatal("the download did not start within a minute")
	}
	cancel()
	r := <-done
	wantReport(t, r, server.SyncFailed, 1, "download of "+p2.Filename)
	if diff := cmp.Diff([]string{p1.Filename}, names(b.patches())); diff != "" {
		t.Errorf("b's patches after the interruption (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{p1.Filename}, b.stored()); diff != "" {
		t.Errorf("b's storage after the interruption (-want +got):\n%s", diff)
	}
	// The next run resumes.
	stall.set(false)
	wantReport(t, s.SyncOnce(t.Context()), server.SyncSuccess, 1, "")
	if diff := cmp.Diff([]string{p1.Filename, p2.Filename}, names(b.patches())); diff != "" {
		t.Errorf("b's patches after resuming (-want +got):\n%s", diff)
	}
}

type atomicBool struct {
	mu sync.Mutex
	v  bool
}

func (b *atomicBool) set(v bool) { b.mu.Lock(); b.v = v; b.mu.Unlock() }
func (b *atomicBool) get() bool  { b.mu.Lock(); defer b.mu.Unlock(); return b.v }

func TestOneUnitAtATime(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	s := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable"))
	// Another unit of b's deployment holds the sync lock.
	other, err := postgres.Open(ctx, b.dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	holding, release := make(chan struct{}), make(chan struct{})
	held := make(chan error)
	go func() {
		_, err := other.RunExclusive(ctx, upstream.LockName, func(context.Context) error {
			close(holding)
			<-release
			return nil
		})
		held <- err
	}()
	<-holding
	r := s.SyncOnce(ctx)
	if r.Outcome != server.SyncSkipped || r.Error != "another unit is running a sync: this one was not started" || r.ID == 0 {
		t.Errorf("report while another unit syncs = %+v", r)
	}
	close(release)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 1, "")
}

func TestMachineReports(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	// A machine enrolled on b.
	const machineID = "4c4c4544003957108052b4c04f384e32"
	if _, err := b.db.CreateAuthToken(ctx, server.NewAuthToken{ID: "web", Tier: "stable", Hash: server.HashToken("auth")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("auth"), MachineID: machineID, MachineTokenHash: server.HashToken("m")}, time.Now()); err != nil {
		t.Fatal(err)
	}
	st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied, PatchVersion: "107.1"}
	if _, err := b.db.CheckIn(ctx, server.CheckIn{MachineID: machineID, MachineTokenHash: server.HashToken("m"), Status: st}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := follow(a, a.syncToken("b", "stable", nil), "stable")
	cfg.ID = "model-uuid-b"
	cfg.MachineCount = "exact"
	// Off by default: nothing is sent.
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncSuccess, 0, "")
	if !strings.Contains(a.log.String(), `"deployment":"model-uuid-b","machines":1`) {
		t.Errorf("a's log lacks the exact machine count:\n%s", a.log)
	}
	if got := syncMachines(t, a); len(got) != 0 {
		t.Fatalf("machines reported without send-machine-reports: %v", got)
	}
	cfg.SendMachineReports = true
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncSuccess, 0, "")
	mac := hmac.New(sha256.New, []byte("model-uuid-b"))
	mac.Write([]byte(machineID))
	want := []string{"model-uuid-b " + hex.EncodeToString(mac.Sum(nil)) + " stable applied 107.1"}
	if diff := cmp.Diff(want, syncMachines(t, a)); diff != "" {
		t.Errorf("a's machine reports (-want +got):\n%s", diff)
	}
	if strings.Contains(a.log.String(), machineID) {
		t.Errorf("the real machine id reached the upstream")
	}
}

// syncMachines lists the machines n recorded from downstream reports.
func syncMachines(t *testing.T, n *node) []string {
	t.Helper()
	rows, err := n.db.SQL().QueryContext(t.Context(), `
		SELECT deployment_id, machine_id, tier, status->>'patch-state', status->>'patch-version'
		FROM sync_machines ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var dep, id, tier, state, version string
		if err := rows.Scan(&dep, &id, &tier, &state, &version); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.Join([]string{dep, id, tier, state, version}, " "))
	}
	return out
}

func TestResourceToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// A stand-in of the contracts server's resource token check.
	const goodToken = "MDAxNGxvY2F0aW9uIGNvbnRyYWN0cw-resource-token"
	var mu sync.Mutex
	calls := 0
	contractsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		if r.URL.Path != "/v1/resources/livepatch-onprem/context/token" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+goodToken {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		io.WriteString(w, `{"valid":true,"expires":"2999-01-01T00:00:00Z"}`)
	}))
	t.Cleanup(contractsSrv.Close)
	contracts, err := upstream.NewContracts(contractsSrv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := newNode(t, "a", func(o *httpapi.Options) { o.ResourceTokens = contracts.CheckResourceToken }).start()
	b := newNode(t, "b").start()
	p := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "candidate")
	// A resource token may follow any tier, named in the request.
	s := b.syncer(follow(a, goodToken, "candidate"))
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 1, "")
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	if _, ok := b.patches()[p.Filename]; !ok {
		t.Errorf("%s not synced", p.Filename)
	}
	mu.Lock()
	if calls != 1 {
		t.Errorf("contracts server called %d times for two syncs, want 1 (cached)", calls)
	}
	mu.Unlock()
	wantReport(t, b.syncer(follow(a, "some-other-resource-token", "candidate")).SyncOnce(ctx), server.SyncFailed, 0,
		"refused patch-sync.token: 401 the contracts server refused the resource token")
	wantReport(t, b.syncer(follow(a, goodToken, "nosuch")).SyncOnce(ctx), server.SyncFailed, 0,
		`answered 404 tier "nosuch" does not exist`)
}

func TestRelativeURLs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Without a url-template, the upstream lists paths, resolved against its URL.
	a := newNode(t, "a", func(o *httpapi.Options) { o.URLTemplate = "" }).start()
	b := newNode(t, "b").start()
	p := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	wantReport(t, b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable")).SyncOnce(ctx), server.SyncSuccess, 1, "")
	if got := b.patches()[p.Filename]; got.SHA256 != p.SHA256 {
		t.Errorf("b has %+v", got)
	}
}

func TestTriggerAndSchedule(t *testing.T) {
	t.Parallel()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	s := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable"))
	// A trigger before Run starts is its first run.
	ch, err := s.Trigger(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { s.Run(ctx); close(stopped) }()
	r := <-ch
	if r.Outcome != server.SyncSuccess || r.PatchesAdded != 1 {
		t.Fatalf("triggered run = %+v", r)
	}
	// A trigger while Run waits gets a run of its own.
	ch, err = s.Trigger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r2 := <-ch; r2.Outcome != server.SyncSuccess || r2.ID <= r.ID {
		t.Fatalf("second triggered run = %+v", r2)
	}
	st, err := s.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.NextRun == nil || st.NextRun.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("next run %v is not an interval away after a success", st.NextRun)
	}
	cancel()
	<-stopped
	if _, err := s.Trigger(t.Context()); server.ErrorCode(err) != server.CodeUnavailable {
		t.Errorf("Trigger after Run stopped = %v, want unavailable", err)
	}
}

// TestOriginSignatures follows the origin's patch signatures down a chain a -> b -> c:
// each server passes on the signature of the server a patch originates from, signs what
// it originates itself, refuses a listed signature by its upstream's key that does not
// verify, and records signatures that arrive for patches it already holds.
func TestOriginSignatures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var corrupt atomicBool
	a := newNode(t, "a")
	// a lists a signature of its own key that does not match the patch, in a list it
	// signs properly: b must check the entry, not only the list.
	a.relist(func(list *server.SyncList) {
		for i := range list.Patches {
			if corrupt.get() {
				list.Patches[i].Signature.Signature[0] ^= 1
			}
		}
	})
	a.start()
	b := newNode(t, "b").start()
	c := newNode(t, "c", func(o *httpapi.Options) { o.CatalogRefresh = 5 * time.Millisecond }).start()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("6.8.0-31.31", "generic", "31.1", "arm64", "stable")
	// b held p2 before: synced from an upstream that did not sign it.
	name, data := archive(t, "6.8.0-31.31", "generic", "31.1", "arm64")
	if held := b.record(name, data, ""); held.Signature != nil || held.SHA256 != p2.SHA256 {
		t.Fatalf("b's copy of %s: %+v", name, held)
	}

	bSync := b.syncer(follow(a, a.syncToken("b", "stable", nil), "stable"))
	corrupt.set(true)
	wantReport(t, bSync.SyncOnce(ctx), server.SyncFailed, 0,
		"the upstream lists "+p1.Filename+" with a bad signature: bad signature: the patch signature does not verify with the trusted key "+server.KeyID(a.pub()))
	if got := b.patches(); got[p1.Filename].Filename != "" || got[p2.Filename].Signature != nil {
		t.Fatalf("b took a bad signature: %+v", got)
	}
	corrupt.set(false)
	wantReport(t, bSync.SyncOnce(ctx), server.SyncSuccess, 1, "")
	for _, p := range []server.Patch{p1, p2} {
		got := b.patches()[p.Filename]
		if err := server.VerifyPatch(a.pub(), got.Signature, got.Filename, got.SHA256, got.Size); err != nil {
			t.Errorf("b's %s: %v", p.Filename, err)
		}
	}

	// b originates a patch of its own; c follows b, trusting b's key for the lists.
	p3 := b.upload("5.15.0-108.118", "generic", "108.1", "amd64", "")
	wantReport(t, c.syncer(follow(b, b.syncToken("c", "edge", nil), "edge")).SyncOnce(ctx), server.SyncSuccess, 3, "")
	got := c.patches()
	for _, tt := range []struct {
		p      server.Patch
		origin *node
	}{{p1, a}, {p2, a}, {p3, b}} {
		g := got[tt.p.Filename]
		if err := server.VerifyPatch(tt.origin.pub(), g.Signature, g.Filename, g.SHA256, g.Size); err != nil {
			t.Errorf("c's %s, from %s: %v", tt.p.Filename, tt.origin.name, err)
		}
	}

	// A machine of c whose client trusts a's key gets a's signature in its offer.
	tok := server.NewUUID()
	if _, err := c.db.CreateAuthToken(ctx, server.NewAuthToken{ID: "fleet", Tier: "edge", Hash: server.HashToken(tok)}); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	machineToken, _, err := cl.Enable(ctx, "machine-1", tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	// c's API sees the synced patches at its next catalog refresh.
	var up server.Update
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for range 2000 {
		up, err = cl.CheckIn(ctx, "machine-1", machineToken, server.Status{
			Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateNeedsCheck})
		if err != nil {
			t.Fatal(err)
		}
		if up.Patch != nil {
			break
		}
		<-tick.C
	}
	if up.Patch == nil || up.Patch.Filename != p1.Filename {
		t.Fatalf("check-in at c = %+v, want an offer of %s", up, p1.Filename)
	}
	if err := server.VerifyPatch(a.pub(), up.Patch.Signature, up.Patch.Filename, up.Patch.SHA256, up.Patch.Size); err != nil {
		t.Errorf("offer at c: %v", err)
	}
}

// TestTrustedKeyRotation: a downstream trusting two keys (the upstream rotating its
// signing key) takes lists signed by either, and refuses others naming both.
func TestTrustedKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	oldPub, _, _ := ed25519.GenerateKey(nil)
	cfg := follow(a, a.syncToken("b", "stable", nil), "stable")
	cfg.TrustedKey = server.MarshalPublicKey(oldPub) + "," + server.MarshalPublicKey(a.pub())
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncSuccess, 1, "")

	otherPub, _, _ := ed25519.GenerateKey(nil)
	cfg.TrustedKey = server.MarshalPublicKey(oldPub) + "," + server.MarshalPublicKey(otherPub)
	wantReport(t, b.syncer(cfg).SyncOnce(ctx), server.SyncFailed, 0,
		"bad signature on the patch list from "+a.srv.URL+": the list is signed by key "+server.KeyID(a.pub())+
			", not by a trusted key ("+server.KeyID(oldPub)+", "+server.KeyID(otherPub)+")")
}
