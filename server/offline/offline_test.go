package offline_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/offline"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// testBundle returns a signed bundle of generated patches (one with a long kernel name, so
// its tar header needs PAX records), its key and its files.
func testBundle(t testing.TB) ([]byte, ed25519.PublicKey, map[string][]byte) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	list := server.SyncList{Tier: "stable", GeneratedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Tiers: []string{"stable"}}
	files := map[string][]byte{}
	for _, k := range [][4]string{
		{"5.15.0-107.117", "generic", "107.1", "amd64"},
		{"6.8.0-1012.12" + strings.Repeat("9", 60), "aws", "12.1", "arm64"},
	} {
		var buf bytes.Buffer
		if err := patchfile.Generate(&buf, patchfile.Metadata(k[0], k[1], k[2], k[3]), 2048); err != nil {
			t.Fatal(err)
		}
		name := server.PatchName{Kernel: k[0], Flavour: k[1], Version: k[2], Architecture: k[3]}.Filename()
		sum := sha256.Sum256(buf.Bytes())
		files[name] = buf.Bytes()
		list.Patches = append(list.Patches, server.SyncPatch{
			Filename: name, Kernel: k[0], Flavour: k[1], Version: k[2], Architecture: k[3],
			SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Tier: "stable", URL: "/v1/patches/" + name,
		})
	}
	signed, err := server.SignSyncList(list, key)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := offline.Write(&out, signed, list, func(p server.SyncPatch) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(files[p.Filename])), nil
	}); err != nil {
		t.Fatal(err)
	}
	size, err := offline.Size(signed, list)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(out.Len()) {
		t.Fatalf("Size = %d, Write wrote %d bytes", size, out.Len())
	}
	return out.Bytes(), pub, files
}

func TestRoundTrip(t *testing.T) {
	bundle, pub, files := testBundle(t)
	b, err := offline.Read(bytes.NewReader(bundle), offline.Options{
		Verify: func(s server.SignedSyncList) (server.SyncList, error) { return s.Verify(pub) },
		Keep:   func(p server.SyncPatch) bool { return p.Flavour == "aws" },
		Dir:    t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	if len(b.List.Patches) != 2 || b.Signed.KeyID != server.KeyID(pub) {
		t.Fatalf("read %+v", b.List)
	}
	for _, p := range b.List.Patches {
		if got := b.Kept(p.Filename); got != (p.Flavour == "aws") {
			t.Errorf("kept %s = %v", p.Filename, got)
		}
		if !b.Kept(p.Filename) {
			if _, _, err := b.Open(p.Filename); server.ErrorCode(err) != server.CodeNotFound {
				t.Errorf("Open of a file not kept: %v, want not-found", err)
			}
			continue
		}
		f, info, err := b.Open(p.Filename)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(data, files[p.Filename]) || info.Metadata.Flavour != "aws" {
			t.Errorf("kept %s differs from the original", p.Filename)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	bundle, _, _ := testBundle(t)
	other, _, _ := ed25519.GenerateKey(nil)
	_, err := offline.Read(bytes.NewReader(bundle), offline.Options{
		Verify: func(s server.SignedSyncList) (server.SyncList, error) { return s.Verify(other) },
	})
	if !errors.Is(err, server.ErrBadSignature) {
		t.Errorf("read with another key: %v, want a bad signature", err)
	}
}

// FuzzRead: whatever the bytes, Read refuses or returns a bundle whose every listed file
// was verified; it never panics.
func FuzzRead(f *testing.F) {
	bundle, pub, _ := testBundle(f)
	f.Add(bundle)
	f.Add(bundle[:len(bundle)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := offline.Read(bytes.NewReader(data), offline.Options{
			Verify: func(s server.SignedSyncList) (server.SyncList, error) { return s.Verify(pub) },
			Keep:   func(server.SyncPatch) bool { return true },
			Dir:    t.TempDir(),
		})
		if err != nil {
			return
		}
		defer b.Remove()
		for _, p := range b.List.Patches {
			if !b.Kept(p.Filename) {
				t.Errorf("a bundle read without %s", p.Filename)
			}
		}
	})
}
