package upstream_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/offline"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

const adminPassword = "bundle-s3cret"

// withAdmin gives a node the administrator admin / adminPassword.
func withAdmin(t *testing.T) func(*httpapi.Options) {
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return func(o *httpapi.Options) { o.BasicUsers = []string{"admin:" + string(hash)} }
}

// admin returns a client of n logged in as its administrator.
func (n *node) admin() *client.Client {
	n.t.Helper()
	login, err := mustClient(n.t, n).Login(n.t.Context(), "admin", adminPassword)
	if err != nil {
		n.t.Fatal(err)
	}
	return mustClient(n.t, n).WithToken(login.Token)
}

// export returns the offline bundle of tier that n's admin API answers.
func (n *node) export(tier string) []byte {
	n.t.Helper()
	var buf bytes.Buffer
	size, err := n.admin().ExportBundle(n.t.Context(), tier, &buf)
	if err != nil {
		n.t.Fatal(err)
	}
	if size != int64(buf.Len()) {
		n.t.Fatalf("export of %d bytes announced, %d received", size, buf.Len())
	}
	return buf.Bytes()
}

// airGapped is the patch-sync config of a server with no upstream that imports the
// bundles of tier signed by up.
func airGapped(up *node, tier string) config.PatchSync {
	cfg := config.Default().PatchSync
	cfg.UpstreamURL, cfg.Token = "", ""
	cfg.UpstreamTier = tier
	cfg.TrustedKey = server.MarshalPublicKey(up.pub())
	return cfg
}

// patchView is what a recorded patch must agree on between a synced and an imported
// copy.
type patchView struct {
	SHA256, Tier, Source, Module, Description string
	Size                                      int64
	Signature                                 *server.PatchSignature
	Fixes                                     []server.Fix
}

func (n *node) views() map[string]patchView {
	out := map[string]patchView{}
	for name, p := range n.patches() {
		out[name] = patchView{p.SHA256, p.Tier, p.Source, p.Module, p.Description, p.Size, p.Signature, p.Fixes}
	}
	return out
}

// TestBundleImport: an air-gapped server that imports a tier's bundle records the same
// patches, tiers and origin signatures as a server that syncs the tier, leaves sync
// reports, and a second import of the same bundle adds nothing.
func TestBundleImport(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "central", withAdmin(t)).start()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("6.8.0-31.31", "generic", "31.1", "arm64", "stable")
	a.upload("6.8.0-35.35", "generic", "35.1", "amd64", "edge") // not in stable
	a.upload("6.8.0-35.35", "aws", "35.1", "amd64", "stable")   // filtered out below

	for _, mirror := range []bool{false, true} {
		name := map[bool]string{false: "landing tier", true: "sync-tiers"}[mirror]
		t.Run(name, func(t *testing.T) {
			// c syncs from a over the network; b, air-gapped, imports a's bundle.
			c := newNode(t, "c").start()
			cfgC := follow(a, a.syncToken("c-"+strings.ReplaceAll(name, " ", "-"), "stable", nil), "stable")
			cfgC.Flavors, cfgC.SyncTiers = []string{"generic"}, mirror
			wantReport(t, c.syncer(cfgC).SyncOnce(ctx), server.SyncSuccess, 2, "")

			b := newNode(t, "b").start()
			cfgB := airGapped(a, "stable")
			cfgB.Flavors, cfgB.SyncTiers = []string{"generic"}, mirror
			sb := b.syncer(cfgB)
			bundle := a.export("stable")
			r, err := sb.Import(ctx, bytes.NewReader(bundle))
			if err != nil {
				t.Fatal(err)
			}
			wantReport(t, r, server.SyncSuccess, 2, "")
			if r.Source != server.SyncFromBundle || r.Bytes != p1.Size+p2.Size {
				t.Errorf("report source %q bytes %d, want %q and %d", r.Source, r.Bytes, server.SyncFromBundle, p1.Size+p2.Size)
			}
			if diff := cmp.Diff(c.views(), b.views()); diff != "" {
				t.Errorf("imported patches differ from synced ones (-synced +imported):\n%s", diff)
			}
			if diff := cmp.Diff(c.tierNames(), b.tierNames()); diff != "" {
				t.Errorf("tiers differ (-synced +imported):\n%s", diff)
			}
			for _, p := range b.patches() {
				if p.Signature == nil || p.Signature.KeyID != server.KeyID(a.pub()) {
					t.Errorf("%s carries %+v, want a's origin signature", p.Filename, p.Signature)
				}
				if !bytes.Equal(b.get("/v1/patches/"+p.Filename), a.get("/v1/patches/"+p.Filename)) {
					t.Errorf("%s differs between a and b", p.Filename)
				}
			}
			// Idempotent: the same bundle again adds nothing and changes nothing.
			version, _ := b.db.CatalogVersion(ctx)
			r, err = sb.Import(ctx, bytes.NewReader(bundle))
			if err != nil {
				t.Fatal(err)
			}
			wantReport(t, r, server.SyncSuccess, 0, "")
			if v, _ := b.db.CatalogVersion(ctx); v != version {
				t.Errorf("a second import changed the catalog: version %d -> %d", version, v)
			}
			reports, err := b.db.SyncReports(ctx, server.SyncReportFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) != 2 || reports[0].Source != server.SyncFromBundle || reports[1].Source != server.SyncFromBundle {
				t.Errorf("b's sync reports = %+v, want two from offline bundles", reports)
			}
			st, err := sb.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Enabled || st.LastSuccess == nil || st.LastRun.Source != server.SyncFromBundle || st.SyncTiers != mirror {
				t.Errorf("b's sync status = %+v, want disabled with its last success from a bundle", st)
			}
		})
	}
}

// TestBundleNewer: a newer bundle adds what the tier gained, and with sync-tiers blocks
// what it lost, as a sync does.
func TestBundleNewer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "central", withAdmin(t)).start()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	b := newNode(t, "b").start()
	cfg := airGapped(a, "stable")
	cfg.SyncTiers = true
	s := b.syncer(cfg)
	if r, err := s.Import(ctx, bytes.NewReader(a.export("stable"))); err != nil || r.PatchesAdded != 1 {
		t.Fatalf("first import: %+v, %v", r, err)
	}
	p2 := a.upload("6.8.0-31.31", "generic", "31.1", "amd64", "stable")
	if _, err := a.db.SetBlocked(ctx, p1.Version, true, "regression"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Import(ctx, bytes.NewReader(a.export("stable")))
	if err != nil {
		t.Fatal(err)
	}
	wantReport(t, r, server.SyncSuccess, 1, "")
	got := b.patches()
	if _, ok := got[p2.Filename]; !ok {
		t.Errorf("%s was not imported", p2.Filename)
	}
	if q := got[p1.Filename]; !q.Blocked || !strings.Contains(q.BlockReason, `the offline bundle of tier "stable" generated at `) {
		t.Errorf("%s = blocked %v (%q), want blocked by the bundle that no longer lists it", p1.Filename, q.Blocked, q.BlockReason)
	}
}

// TestBundleRefused: a bundle that is truncated, tampered with, signed by another key,
// older than one already applied, or not for this server's tier is refused with a
// message that says so, and nothing is recorded but a failed report.
func TestBundleRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "central", withAdmin(t)).start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	a.upload("6.8.0-31.31", "generic", "31.1", "arm64", "stable")
	a.upload("6.8.0-35.35", "generic", "35.1", "amd64", "stable")
	a.upload("6.8.0-35.35", "generic", "35.1", "amd64", "edge")
	good := a.export("stable")
	older := good
	newer := a.export("stable") // generated after good
	signed, list := readBundle(t, good, a.pub())
	other := newNode(t, "other")

	// rewrite writes the bundle of signed and list with the files of good, edited.
	rewrite := func(signed server.SignedSyncList, list server.SyncList, edit func(name string, data []byte) []byte) []byte {
		files := bundleFiles(t, good)
		var buf bytes.Buffer
		err := offline.Write(&buf, signed, list, func(p server.SyncPatch) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(edit(p.Filename, bytes.Clone(files[p.Filename])))), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	last := list.Patches[len(list.Patches)-1].Filename
	// The bundle cut right after its second file (a bundle of two files without its end).
	firstTwo := list
	firstTwo.Patches = list.Patches[:2]
	afterTwo, err := offline.Size(signed, firstTwo)
	if err != nil {
		t.Fatal(err)
	}
	tamperedFile := rewrite(signed, list, func(name string, data []byte) []byte {
		if name == last {
			data[len(data)/2] ^= 0xff
		}
		return data
	})
	tamperedList := func() []byte {
		s := signed
		s.Payload = bytes.Replace(bytes.Clone(s.Payload), []byte(`"stable"`), []byte(`"stablE"`), 1)
		return rewrite(s, list, func(_ string, data []byte) []byte { return data })
	}()
	resignedByOther := func() []byte {
		s, err := server.SignSyncList(list, other.key)
		if err != nil {
			t.Fatal(err)
		}
		return rewrite(s, list, func(_ string, data []byte) []byte { return data })
	}()
	extra := func() []byte {
		// A listed file given twice: the second is an entry the list does not expect.
		l := list
		l.Patches = append(append([]server.SyncPatch{}, list.Patches...), list.Patches[0])
		var buf bytes.Buffer
		files := bundleFiles(t, good)
		if err := offline.Write(&buf, signed, l, func(p server.SyncPatch) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(files[p.Filename])), nil
		}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()

	tests := []struct {
		name   string
		cfg    func(*config.PatchSync)
		before [][]byte // imported first, successfully
		bundle []byte
		code   server.Code
		want   string
	}{
		{name: "empty", bundle: nil, code: server.CodeInvalid, want: "cannot import the offline bundle: the bundle is empty"},
		{name: "not a bundle", bundle: []byte(strings.Repeat("<html>not found</html>", 100)), code: server.CodeInvalid, want: "not an offline bundle (a tar file)"},
		{name: "truncated in the list", bundle: good[:700], code: server.CodeInvalid, want: "the bundle is truncated"},
		{name: "truncated in a file", bundle: good[:len(good)*2/3], code: server.CodeInvalid, want: "the bundle is truncated"},
		{name: "truncated between files", bundle: good[:afterTwo-1024], code: server.CodeInvalid, want: "the bundle is truncated: 1 of its 3 listed patch files are missing, from " + last + " on"},
		{name: "tampered file", bundle: tamperedFile, code: server.CodeInvalid, want: "checksum mismatch for " + last + ": the list has sha256 "},
		{name: "tampered list", bundle: tamperedList, code: server.CodeInvalid, want: "bad signature on its patch list: the list does not verify with the trusted key " + server.KeyID(a.pub())},
		{name: "wrong key", bundle: resignedByOther, code: server.CodeInvalid, want: "bad signature on its patch list: the list is signed by key " + server.KeyID(other.pub()) + ", not by the trusted key " + server.KeyID(a.pub())},
		{name: "entry not listed", bundle: extra, code: server.CodeInvalid, want: "holds " + list.Patches[0].Filename + " twice"},
		{name: "replayed older", before: [][]byte{newer}, bundle: older, code: server.CodeInvalid, want: `its list of tier "stable" was generated at ` + list.GeneratedAt.Format(time.RFC3339Nano) + ", before the list already applied here"},
		{name: "other tier", cfg: func(c *config.PatchSync) { c.UpstreamTier = "edge" }, bundle: good, code: server.CodeInvalid, want: `it holds tier "stable", but patch-sync.upstream-tier is "edge"`},
		{name: "no trusted key", cfg: func(c *config.PatchSync) { c.TrustedKey = "" }, bundle: good, code: server.CodeConflict, want: "this server cannot verify offline bundles: patch-sync.trusted-key is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newNode(t, "b")
			cfg := airGapped(a, "stable")
			cfg.SyncTiers = true
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := b.syncer(cfg)
			for _, before := range tt.before {
				if _, err := s.Import(ctx, bytes.NewReader(before)); err != nil {
					t.Fatal(err)
				}
			}
			patches, tiers, stored := b.patches(), b.tierNames(), b.stored()
			r, err := s.Import(ctx, bytes.NewReader(tt.bundle))
			if server.ErrorCode(err) != tt.code || !strings.Contains(server.ErrorMessage(err), tt.want) {
				t.Errorf("import: %v (%s), want %s containing %q", err, server.ErrorCode(err), tt.code, tt.want)
			}
			wantReport(t, r, server.SyncFailed, 0, tt.want)
			if r.Source != server.SyncFromBundle {
				t.Errorf("report source %q", r.Source)
			}
			if diff := cmp.Diff(patches, b.patches()); diff != "" {
				t.Errorf("a refused bundle changed the patches (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(tiers, b.tierNames()); diff != "" {
				t.Errorf("a refused bundle changed the tiers (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(stored, b.stored()); diff != "" {
				t.Errorf("a refused bundle changed the patch storage (-before +after):\n%s", diff)
			}
		})
	}
}

// readBundle verifies a bundle with key and returns its signed list.
func readBundle(t *testing.T, bundle []byte, key ed25519.PublicKey) (server.SignedSyncList, server.SyncList) {
	t.Helper()
	b, err := offline.Read(bytes.NewReader(bundle), offline.Options{Verify: func(s server.SignedSyncList) (server.SyncList, error) { return s.Verify(key) }})
	if err != nil {
		t.Fatal(err)
	}
	return b.Signed, b.List
}

// bundleFiles returns the patch files of a bundle by filename.
func bundleFiles(t *testing.T, bundle []byte) map[string][]byte {
	t.Helper()
	b, err := offline.Read(bytes.NewReader(bundle), offline.Options{
		Verify: func(s server.SignedSyncList) (server.SyncList, error) { return s.Verify(nil) },
		Keep:   func(server.SyncPatch) bool { return true },
		Dir:    t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	out := map[string][]byte{}
	for _, p := range b.List.Patches {
		f, _, err := b.Open(p.Filename)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Filename], err = io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// lateSyncer lets a node's API reach the Syncer made after the API: it forwards to it.
type lateSyncer struct {
	mu sync.Mutex
	s  *upstream.Syncer
}

func (l *lateSyncer) get() *upstream.Syncer { l.mu.Lock(); defer l.mu.Unlock(); return l.s }
func (l *lateSyncer) Trigger(ctx context.Context) (<-chan server.SyncReport, error) {
	return l.get().Trigger(ctx)
}
func (l *lateSyncer) Status(ctx context.Context) (server.SyncStatus, error) {
	return l.get().Status(ctx)
}
func (l *lateSyncer) Import(ctx context.Context, r io.Reader) (server.SyncReport, error) {
	return l.get().Import(ctx, r)
}
func (l *lateSyncer) Health(ctx context.Context) server.SyncHealth { return l.get().Health(ctx) }

// TestBundleAdminAPI: export and import through the admin API, as livepatch-admin does
// them: a refused bundle is a 400 with its reason, a server without a signing key does
// not export.
func TestBundleAdminAPI(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "central", withAdmin(t)).start()
	p := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	// More patches, so that the bundle is larger than a JSON body may be and the import
	// route must stream its body.
	const patches = 12
	for i := 2; i <= patches; i++ {
		a.upload("5.15.0-107.117", "generic", fmt.Sprintf("107.%d", i), "amd64", "stable")
	}
	late := &lateSyncer{}
	b := newNode(t, "b", withAdmin(t), func(o *httpapi.Options) { o.Sync, o.SigningKey = late, nil }).start()
	late.s = b.syncer(airGapped(a, "stable"))

	bundle := a.export("stable")
	if len(bundle) <= 64<<10 {
		t.Fatalf("the bundle has %d bytes: the test needs one larger than 64 KiB", len(bundle))
	}
	var progress int64
	r, err := b.admin().ImportBundle(ctx, bytes.NewReader(bundle), int64(len(bundle)), client.OnProgress(func(sent, total int64) {
		if total != int64(len(bundle)) || sent < progress {
			t.Errorf("progress(%d, %d) after %d", sent, total, progress)
		}
		progress = sent
	}))
	if err != nil {
		t.Fatal(err)
	}
	wantReport(t, r, server.SyncSuccess, patches, "")
	if progress != int64(len(bundle)) {
		t.Errorf("progress ended at %d of %d", progress, len(bundle))
	}
	if _, ok := b.patches()[p.Filename]; !ok {
		t.Errorf("%s was not imported", p.Filename)
	}

	_, err = b.admin().ImportBundle(ctx, bytes.NewReader(bundle[:len(bundle)/2]), int64(len(bundle)/2))
	if apiErr, ok := errors.AsType[*client.APIError](err); !ok || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, "cannot import the offline bundle: the bundle is truncated") {
		t.Errorf("truncated import: %v, want a 400 saying it is truncated", err)
	}
	_, err = b.admin().ExportBundle(ctx, "stable", io.Discard)
	if server.ErrorCode(err) != server.CodeUnavailable || !strings.Contains(server.ErrorMessage(err), "not configured as a sync upstream") {
		t.Errorf("export from a server without a signing key: %v", err)
	}
	_, err = a.admin().ExportBundle(ctx, "nosuch", io.Discard)
	if server.ErrorCode(err) != server.CodeNotFound {
		t.Errorf("export of an unknown tier: %v, want not-found", err)
	}
	if !strings.Contains(a.log.String(), `"event":"sync_bundle_export","user":"admin"`) || !strings.Contains(b.log.String(), `"event":"sync_bundle_import","user":"admin"`) {
		t.Errorf("the security log lacks the bundle events")
	}
}
