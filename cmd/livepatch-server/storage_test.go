package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// storage migrate copies a site's recorded patches from PostgreSQL to S3 and verifies
// them; run again, it copies nothing.
func TestStorageMigrate(t *testing.T) {
	dsn := pgtest.DSN(t)
	o := s3test.Store(t)
	fromCfg := writeConfig(t, dsn, "")
	toCfg := writeConfig(t, dsn, fmt.Sprintf(`patch-storage:
  type: s3
  s3-endpoint: %s
  s3-bucket: %s
  s3-path-prefix: %s
  s3-access-key: %s
  s3-secret-key: %s
  s3-path-style: true
`, o.Endpoint, o.Bucket, o.Prefix, o.AccessKey, o.SecretKey))
	ctx := context.Background()
	db, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	src := patchstore.NewPostgres(db.SQL())
	names := []string{
		"livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2",
		"livepatch-6.8.0-31.31-generic-107.1-arm64.tar.bz2",
	}
	for i, name := range names {
		data := bytes.Repeat([]byte{byte(i)}, (i+1)*patchstore.ChunkSize+3)
		if _, err := src.Put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		pn, err := server.ParsePatchFilename(name)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if _, err := db.AddPatch(ctx, server.Patch{
			Filename: name, Version: pn.Version, Kernel: pn.Kernel, Flavour: pn.Flavour, Architecture: pn.Architecture,
			SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Module: "lkp", Source: server.SourceUpload,
		}); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := runCmd(t, "storage", "migrate", "--from-config", fromCfg, "--to-config", toCfg)
	if code != 0 || out != "copied 2, already there 0, skipped 0 (not patch filenames), failed 0\n" {
		t.Fatalf("migrate: exit %d, %q, %q", code, out, errOut)
	}
	dst, err := patchstore.NewS3(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		want, _ := patchstore.SHA256(ctx, src, name)
		if got, err := patchstore.SHA256(ctx, dst, name); err != nil || got != want {
			t.Errorf("%s in s3: %s, %v; want %s", name, got, err, want)
		}
	}
	code, out, _ = runCmd(t, "storage", "migrate", "--from-config", fromCfg, "--to-config", toCfg, "--format", "json")
	if code != 0 || !strings.Contains(out, `"copied":[],"present":["`) {
		t.Errorf("second migrate: exit %d, %q", code, out)
	}
	for _, args := range [][]string{
		{"storage"}, {"storage", "copy"}, {"storage", "migrate", "--from-config", fromCfg},
		{"storage", "migrate", "--from-config", fromCfg, "--to-config", fromCfg},
		{"storage", "migrate", "--from-config", fromCfg, "--to-config", writeConfig(t, dsn+"x", "")},
	} {
		if code, _, errOut := runCmd(t, args...); code != 2 || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, %q; want 2 with usage", args, code, errOut)
		}
	}
}

// storage check exits 0 for a usable bucket and 3, with the reason and never the secret,
// for refused credentials or a missing bucket.
func TestStorageCheck(t *testing.T) {
	dsn := pgtest.DSN(t)
	o := s3test.Store(t)
	cfg := func(bucket, secret string) string {
		return writeConfig(t, dsn, fmt.Sprintf("patch-storage:\n  type: s3\n  s3-endpoint: %s\n  s3-bucket: %s\n"+
			"  s3-access-key: %s\n  s3-secret-key: %s\n  s3-path-style: true\n", o.Endpoint, bucket, o.AccessKey, secret))
	}
	if code, out, errOut := runCmd(t, "storage", "check", "--config", cfg(o.Bucket, o.SecretKey)); code != 0 || out != "patch storage (s3) is usable\n" {
		t.Errorf("usable bucket: exit %d, %q, %q", code, out, errOut)
	}
	for _, test := range []struct{ bucket, secret, want string }{
		{o.Bucket, "wrong-secret-0123", "refused the credentials"},
		{"no-such-bucket", o.SecretKey, `s3 bucket "no-such-bucket" does not exist`},
	} {
		code, _, errOut := runCmd(t, "storage", "check", "--config", cfg(test.bucket, test.secret))
		if code != 3 || !strings.Contains(errOut, test.want) || strings.Contains(errOut, "wrong-secret-0123") {
			t.Errorf("bucket %s: exit %d, %q; want 3, %q", test.bucket, code, errOut, test.want)
		}
	}
}
