package main

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
)

// newAdminCLI returns the built livepatch-admin set up for the server at url, with a
// configuration directory of its own, logged in as user.
func newAdminCLI(t *testing.T, bin, url, user, password string) *adminCLI {
	t.Helper()
	a := &adminCLI{t: t, bin: bin, env: []string{
		envURL + "=" + url,
		envConfigDir + "=" + filepath.Join(t.TempDir(), "config"),
		"HOME=" + t.TempDir(),
		"PATH=" + os.Getenv("PATH"),
	}}
	a.ok("login", "-a", user+":"+password)
	return a
}

// TestBundleCommands drives bundle export, verify and import with the built binaries: an
// upstream server with a signing key exports its stable tier, the file is verified with
// no server, and an air-gapped server (patch sync off, the upstream's key trusted)
// imports it. Truncated, tampered and foreign bundles are refused with exit 1 and the
// reason, and leave nothing recorded but the failed report; bad arguments exit 2.
func TestBundleCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: builds and runs two servers")
	}
	serverBin, adminBin := buildBinaries(t)
	keyDir := filepath.Join(t.TempDir(), "keys")
	if out, err := exec.CommandContext(t.Context(), serverBin, "keys", "generate", "--out", keyDir).CombinedOutput(); err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	pubData, err := os.ReadFile(filepath.Join(keyDir, "signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(string(pubData))
	pubKey, err := server.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other := server.MarshalPublicKey(otherPub)

	const user, password = "admin", "s3cret"
	upURL := startServerWith(t, serverBin, pgtest.DSN(t), user, password, `
sync-server:
  signing-key: `+filepath.Join(keyDir, "signing.key")+"\n")
	gapURL := startServerWith(t, serverBin, pgtest.DSN(t), user, password, `
patch-sync:
  enabled: false
  upstream-tier: stable
  trusted-key: `+pub+"\n")
	up := newAdminCLI(t, adminBin, upURL, user, password)
	gap := newAdminCLI(t, adminBin, gapURL, user, password)

	// Two files of 107.1 in stable, one of 108.1 left in edge.
	dir := t.TempDir()
	p1 := writePatch(t, dir, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	p2 := writePatch(t, dir, "5.15.0-107.117", "lowlatency", "107.1", "amd64", 4096)
	p3 := writePatch(t, dir, "5.15.0-108.118", "generic", "108.1", "amd64", 4096)
	up.ok("patch", "upload", p1, p2, p3)
	up.ok("patch", "promote", "107.1", "stable")

	// $ livepatch-admin bundle export stable stable.bundle --trusted-key "$(cat signing.pub)"
	bundle := filepath.Join(t.TempDir(), "stable.bundle")
	out := up.ok("bundle", "export", "stable", bundle, "--trusted-key", pub)
	keyID := server.KeyID(pubKey)
	for _, want := range []string{
		"Exported tier stable to " + bundle + "\n",
		"tier:         stable\n",
		"signature:    signed by key " + keyID + ": verified with the trusted key\n",
		"patches:      2 (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bundle export: lacks %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(bundle)); len(entries) != 1 {
		t.Errorf("bundle export left %d files beside the bundle, want it alone", len(entries)-1)
	}
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}

	// $ livepatch-admin bundle verify stable.bundle --trusted-key "$(cat signing.pub)"
	var sum bundleSummary
	up.jsonOf(&sum, "bundle", "verify", bundle, "--trusted-key", pub)
	if sum.Tier != "stable" || sum.KeyID != keyID || !sum.Verified || sum.Patches != 2 || sum.Size != int64(len(data)) {
		t.Errorf("bundle verify = %+v, want stable, key %s verified, 2 patches, %d bytes", sum, keyID, len(data))
	}
	if out := up.ok("bundle", "verify", bundle); !strings.Contains(out, "signature:    signed by key "+keyID+": NOT verified (give --trusted-key)\n") {
		t.Errorf("bundle verify without a key:\n%s", out)
	}

	// What is refused, and how.
	truncated := writeFile(t, "truncated.bundle", data[:len(data)*2/3])
	tamperedData, tamperedFile := tamperBundle(t, data)
	tampered := writeFile(t, "tampered.bundle", tamperedData)
	var listed server.Patch
	for _, p := range mustPatches(t, up) {
		if p.Filename == tamperedFile {
			listed = p
		}
	}
	mismatch := "checksum mismatch for " + tamperedFile + ": the list has sha256 " + listed.SHA256 + ", the bundle's file "
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{{
		name: "signed by another key",
		args: []string{"bundle", "verify", bundle, "--trusted-key", other},
		code: 1,
		want: "error: " + bundle + " is not a valid offline bundle: bad signature: the list is signed by key " + keyID + ", not by the trusted key " + server.KeyID(otherPub) + "\n",
	}, {
		name: "truncated",
		args: []string{"bundle", "verify", truncated, "--trusted-key", pub},
		code: 1,
		want: "error: " + truncated + " is not a valid offline bundle: the bundle is truncated in livepatch-",
	}, {
		name: "tampered",
		args: []string{"bundle", "verify", tampered, "--trusted-key", pub},
		code: 1,
		want: "error: " + tampered + " is not a valid offline bundle: " + mismatch,
	}, {
		name: "not a key",
		args: []string{"bundle", "verify", bundle, "--trusted-key", "not-a-key"},
		code: 2,
		want: "error: invalid --trusted-key: not an ed25519 public key: want the base64 or hex of its 32 bytes, or a PEM PUBLIC KEY block: give the content of the exporting server's signing.pub",
	}, {
		name: "no file",
		args: []string{"bundle", "verify"},
		code: 2,
		want: "error: missing argument <file>\n",
	}, {
		name: "missing file",
		args: []string{"bundle", "verify", filepath.Join(dir, "nosuch.bundle")},
		code: 1,
		want: "error: open " + filepath.Join(dir, "nosuch.bundle") + ": no such file or directory\n",
	}, {
		name: "import truncated",
		args: []string{"bundle", "import", truncated},
		code: 1,
		want: "error: cannot import the offline bundle: the bundle is truncated in livepatch-",
	}, {
		name: "import tampered",
		args: []string{"bundle", "import", tampered},
		code: 1,
		want: "error: cannot import the offline bundle: " + mismatch,
	}, {
		name: "export of a server without a signing key",
		args: []string{"bundle", "export", "stable", filepath.Join(dir, "gap.bundle")},
		code: 1,
		want: "error: this server is not configured as a sync upstream (sync-server.signing-key)\n",
	}}
	for _, tt := range tests {
		cli := up
		if tt.args[1] == "import" || tt.name == "export of a server without a signing key" {
			cli = gap
		}
		code, stdout, stderr := cli.run("", tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) || (code == 1 && stdout != "") {
			t.Errorf("%s: livepatch-admin %q: exit %d, stdout %q, stderr %q; want exit %d saying %q", tt.name, tt.args, code, stdout, stderr, tt.code, tt.want)
		}
	}
	// A refused import records nothing but its report; no file is left beside a failed
	// export's target.
	if patches := mustPatches(t, gap); len(patches) != 0 {
		t.Errorf("after refused imports the server holds %d patches, want none", len(patches))
	}
	if _, err := os.Stat(filepath.Join(dir, "gap.bundle")); !os.IsNotExist(err) {
		t.Errorf("a failed export left its file: %v", err)
	}
	var reports []server.SyncReport
	gap.jsonOf(&reports, "sync", "reports")
	if len(reports) != 2 {
		t.Errorf("%d sync reports after two refused imports, want 2: %+v", len(reports), reports)
	}
	for _, r := range reports {
		if r.Outcome != server.SyncFailed || r.Source != server.SyncFromBundle || r.Error == "" {
			t.Errorf("sync report after a refused import: %+v, want failed from the bundle with its reason", r)
		}
	}

	// $ livepatch-admin bundle import stable.bundle
	out = gap.ok("bundle", "import", bundle)
	if !strings.HasPrefix(out, "Imported "+bundle+" on ") || !strings.Contains(out, ": 2 patches added (") {
		t.Errorf("bundle import: %q, want 2 patches added", out)
	}
	patches := mustPatches(t, gap)
	if len(patches) != 2 {
		t.Errorf("after the import the server holds %d patches, want 2", len(patches))
	}
	for _, p := range patches {
		if p.Version != "107.1" || p.Signature == nil || p.Signature.KeyID != keyID {
			t.Errorf("imported %s: version %s, signature %+v; want 107.1 signed by %s", p.Filename, p.Version, p.Signature, keyID)
		}
	}
	// Again: nothing more.
	if out := gap.ok("bundle", "import", bundle); !strings.Contains(out, ": 0 patches added (") {
		t.Errorf("second bundle import: %q, want 0 patches added", out)
	}
	var last []server.SyncReport
	gap.jsonOf(&last, "sync", "reports", "--limit", "1")
	if len(last) != 1 || last[0].Outcome != server.SyncSuccess || last[0].Source != server.SyncFromBundle {
		t.Errorf("last sync report = %+v, want a successful import", last)
	}
}

// mustPatches returns the server's patch list.
func mustPatches(t *testing.T, a *adminCLI) []server.Patch {
	t.Helper()
	var patches []server.Patch
	a.jsonOf(&patches, "patch", "list")
	return patches
}

// tamperBundle returns the bundle with one byte of its last patch file changed, its tar
// structure and sizes intact, and that file's name.
func tamperBundle(t *testing.T, data []byte) ([]byte, string) {
	t.Helper()
	r := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	w := tar.NewWriter(&out)
	type entry struct {
		hdr  *tar.Header
		body []byte
	}
	var entries []entry
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{hdr, body})
	}
	if len(entries) < 2 {
		t.Fatalf("the bundle has %d entries, want a list and files", len(entries))
	}
	last := entries[len(entries)-1]
	last.body[len(last.body)/2] ^= 0xff
	for _, e := range entries {
		if err := w.WriteHeader(e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), filepath.Base(last.hdr.Name)
}

// writeFile writes data to a new file named name and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
