package patchstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// A migration from the filesystem to S3 interrupted after its first file resumes without
// copying that file again, copies the rest, verifies every copy and leaves out what does
// not match its record.
func TestMigrateResumes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	from, err := patchstore.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	to := newS3(t, s3test.Store(t))
	fileC := "livepatch-6.8.0-31.31-generic-107.2-arm64.tar.bz2"
	fileD := "livepatch-6.8.0-31.31-generic-107.3-arm64.tar.bz2"
	a, b, c, d := content(2*patchstore.ChunkSize+7, 1), content(10, 2), content(0, 3), content(5, 4)
	for name, data := range map[string][]byte{fileA: a, fileB: b, fileC: c, fileD: d} {
		put(t, from, name, data)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad-name.tar.bz2"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// fileC is unrecorded; fileD's bytes are not the recorded ones.
	recorded := map[string]string{fileA: sum(a), fileB: sum(b), fileD: sum([]byte("other"))}

	// The run is interrupted as it takes the lock of its second file.
	ctx, cancel := context.WithCancel(t.Context())
	var locked []string
	interrupt := func(ctx context.Context, name string, fn func(context.Context) error) error {
		locked = append(locked, name)
		if len(locked) == 2 {
			cancel()
			return ctx.Err()
		}
		return fn(ctx)
	}
	res, err := patchstore.Migrate(ctx, from, to, recorded, interrupt)
	if !errors.Is(err, context.Canceled) || len(res.Copied) != 1 {
		t.Fatalf("interrupted run: %+v, %v; want one file copied, canceled", res, err)
	}
	first := res.Copied[0]

	lock := func(ctx context.Context, name string, fn func(context.Context) error) error { return fn(ctx) }
	res, err = patchstore.Migrate(t.Context(), from, to, recorded, lock)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{first}, res.Present); diff != "" {
		t.Errorf("present after resuming (-want +got):\n%s", diff)
	}
	want := []string{fileA, fileB, fileC}
	got := append(append([]string{}, res.Present...), res.Copied...)
	if diff := cmp.Diff(want, sorted(got)); diff != "" {
		t.Errorf("copied or present (-want +got):\n%s", diff)
	}
	if len(res.Failed) != 1 || res.Failed[0].Filename != fileD || len(res.Skipped) != 1 || res.Skipped[0] != "bad-name.tar.bz2" {
		t.Errorf("failed %+v, skipped %v; want %s failed, bad-name.tar.bz2 skipped", res.Failed, res.Skipped, fileD)
	}
	for name, data := range map[string][]byte{fileA: a, fileB: b, fileC: c} {
		if got, err := patchstore.SHA256(t.Context(), to, name); err != nil || got != sum(data) {
			t.Errorf("%s in the target: %s, %v; want %s", name, got, err, sum(data))
		}
	}
	files, err := to.List(t.Context())
	if err != nil || len(files) != 3 {
		t.Errorf("target lists %+v, %v; want the 3 good files, once each", files, err)
	}

	// A third run copies nothing.
	res, err = patchstore.Migrate(t.Context(), from, to, recorded, lock)
	if err != nil || len(res.Copied) != 0 || len(res.Present) != 3 {
		t.Errorf("third run: %+v, %v; want nothing copied, 3 present", res, err)
	}
}

func sorted(s []string) []string {
	return slices.Sorted(slices.Values(s))
}
