package patchstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	s3test.Stop()
	os.Exit(code)
}

// backends returns a fresh store of each kind.
var backends = map[string]func(t *testing.T) server.PatchFiles{
	"filesystem": func(t *testing.T) server.PatchFiles {
		s, err := patchstore.NewFilesystem(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
	"postgres": func(t *testing.T) server.PatchFiles {
		// The tables come from the server's migrations (a test-only dependency).
		db, err := postgres.Open(t.Context(), pgtest.DSN(t), postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, _, err := db.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		return patchstore.NewPostgres(db.SQL())
	},
	"s3": func(t *testing.T) server.PatchFiles {
		s, err := patchstore.NewS3(s3test.Store(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

const (
	fileA = "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	fileB = "livepatch-6.8.0-31.31-generic-107.1-arm64.tar.bz2"
)

// content returns n bytes that differ at every offset within a chunk and between seeds.
func content(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/251) ^ seed
	}
	return b
}

func TestPatchFiles(t *testing.T) {
	t.Parallel()
	for name, newStore := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, test := range suite {
				t.Run(test.name, func(t *testing.T) {
					t.Parallel()
					test.run(t, newStore(t))
				})
			}
		})
	}
}

var suite = []struct {
	name string
	run  func(t *testing.T, s server.PatchFiles)
}{
	{"PutOpenRead", testPutOpenRead},
	{"Seek", testSeek},
	{"Range", testRange},
	{"Replace", testReplace},
	{"ReplaceWhileReading", testReplaceWhileReading},
	{"FailedPutKeepsOld", testFailedPutKeepsOld},
	{"ListDelete", testListDelete},
	{"Missing", testMissing},
	{"InvalidNames", testInvalidNames},
}

func put(t *testing.T, s server.PatchFiles, name string, data []byte) {
	t.Helper()
	n, err := s.Put(t.Context(), name, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put() = %d, want %d", n, len(data))
	}
}

func readAll(t *testing.T, s server.PatchFiles, name string) []byte {
	t.Helper()
	f, err := s.Open(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func testPutOpenRead(t *testing.T, s server.PatchFiles) {
	before := time.Now().Add(-time.Minute)
	for _, size := range []int{0, 1, patchstore.ChunkSize, 2*patchstore.ChunkSize + 12345} {
		data := content(size, 1)
		put(t, s, fileA, data)
		f, err := s.Open(t.Context(), fileA)
		if err != nil {
			t.Fatal(err)
		}
		info := f.Stat()
		if info.Filename != fileA || info.Size != int64(size) || info.ModTime.Before(before) {
			t.Errorf("Stat() = %+v, want %s of %d bytes, modified now", info, fileA, size)
		}
		got, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("read %d bytes differing from the %d written", len(got), size)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func testSeek(t *testing.T, s server.PatchFiles) {
	size := 2*patchstore.ChunkSize + 100
	data := content(size, 2)
	put(t, s, fileA, data)
	f, err := s.Open(t.Context(), fileA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	readAt := func(whence int, offset int64, wantPos int64, n int) {
		t.Helper()
		pos, err := f.Seek(offset, whence)
		if err != nil || pos != wantPos {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", offset, whence, pos, err, wantPos)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(f, buf); err != nil {
			t.Fatalf("read %d bytes at %d: %v", n, pos, err)
		}
		if !bytes.Equal(buf, data[pos:pos+int64(n)]) {
			t.Fatalf("read at %d differs", pos)
		}
	}
	boundary := int64(patchstore.ChunkSize)
	slice := int64(patchstore.ReadSize)
	readAt(io.SeekStart, slice-5, slice-5, 10)                  // across a read slice
	readAt(io.SeekStart, boundary+slice-1, boundary+slice-1, 2) // the same in the second chunk
	readAt(io.SeekStart, boundary-5, boundary-5, 10)            // across a chunk boundary
	readAt(io.SeekCurrent, -10, boundary-5, 10)                 // back again
	readAt(io.SeekStart, 3, 3, 4)                               // back to the first chunk
	readAt(io.SeekEnd, -50, int64(size)-50, 50)                 // the tail
	readAt(io.SeekCurrent, -int64(size), 0, 1)                  // the start

	if pos, err := f.Seek(10, io.SeekEnd); err != nil || pos != int64(size)+10 {
		t.Fatalf("Seek past the end = %d, %v", pos, err)
	}
	if n, err := f.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read past the end = %d, %v; want 0, EOF", n, err)
	}
	if _, err := f.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to a negative offset succeeded")
	}
}

func testRange(t *testing.T, s server.PatchFiles) {
	data := content(patchstore.ChunkSize+500, 3)
	put(t, s, fileA, data)
	f, err := s.Open(t.Context(), fileA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// As the download handler serves it.
	req := httptest.NewRequest("GET", "/patches/"+fileA, nil)
	req.Header.Set("Range", "bytes=1048000-1049000")
	rec := httptest.NewRecorder()
	http.ServeContent(rec, req, fileA, f.Stat().ModTime, f)
	if rec.Code != http.StatusPartialContent {
		t.Fatalf("status = %d, want 206", rec.Code)
	}
	if !bytes.Equal(rec.Body.Bytes(), data[1048000:1049001]) {
		t.Fatalf("range body differs (%d bytes)", rec.Body.Len())
	}
}

func testReplace(t *testing.T, s server.PatchFiles) {
	put(t, s, fileA, content(2*patchstore.ChunkSize+1, 4))
	newer := content(10, 5)
	put(t, s, fileA, newer)
	if got := readAll(t, s, fileA); !bytes.Equal(got, newer) {
		t.Fatalf("after replacing, read %d bytes, want the new %d", len(got), len(newer))
	}
	files, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Size != 10 {
		t.Fatalf("List() after replacing = %+v, want one file of 10 bytes", files)
	}
}

// A reader that opened the old file never gets a mix of old and new contents.
func testReplaceWhileReading(t *testing.T, s server.PatchFiles) {
	old := content(3*patchstore.ChunkSize, 6)
	put(t, s, fileA, old)
	f, err := s.Open(t.Context(), fileA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := make([]byte, 100)
	if _, err := io.ReadFull(f, first); err != nil {
		t.Fatal(err)
	}
	put(t, s, fileA, content(3*patchstore.ChunkSize, 7))
	rest, err := io.ReadAll(f)
	if err != nil {
		return // the reader learned the file changed: fine
	}
	if got := append(first, rest...); !bytes.Equal(got, old) {
		t.Fatal("a reader of the replaced file read something other than the old file")
	}
}

// errReader fails after n bytes.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), r.n)
	clear(p[:n])
	r.n -= n
	return n, nil
}

func testFailedPutKeepsOld(t *testing.T, s server.PatchFiles) {
	old := content(1000, 8)
	put(t, s, fileA, old)
	if _, err := s.Put(t.Context(), fileA, &errReader{n: patchstore.ChunkSize + 10}); err == nil {
		t.Fatal("Put() from a failing reader succeeded")
	}
	if got := readAll(t, s, fileA); !bytes.Equal(got, old) {
		t.Fatal("a failed Put() changed the stored file")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Put(ctx, fileA, bytes.NewReader(content(10, 9))); err == nil {
		t.Fatal("Put() with a canceled context succeeded")
	}
	if got := readAll(t, s, fileA); !bytes.Equal(got, old) {
		t.Fatal("a canceled Put() changed the stored file")
	}
}

func testListDelete(t *testing.T, s server.PatchFiles) {
	files, err := s.List(t.Context())
	if err != nil || len(files) != 0 {
		t.Fatalf("List() of an empty store = %+v, %v", files, err)
	}
	put(t, s, fileB, content(20, 10))
	put(t, s, fileA, content(10, 11))
	files, err = s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []server.StoredFile
	for _, f := range files {
		if f.ModTime.IsZero() {
			t.Errorf("%s has no modification time", f.Filename)
		}
		got = append(got, server.StoredFile{Filename: f.Filename, Size: f.Size})
	}
	want := []server.StoredFile{{Filename: fileA, Size: 10}, {Filename: fileB, Size: 20}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List() (-want +got):\n%s", diff)
	}

	if err := s.Delete(t.Context(), fileA); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), fileA); err != nil {
		t.Fatalf("deleting a missing file: %v", err)
	}
	_, err = s.Open(t.Context(), fileA)
	if server.ErrorCode(err) != server.CodeNotFound {
		t.Fatalf("Open() of a deleted file: %v, want not-found", err)
	}
	files, err = s.List(t.Context())
	if err != nil || len(files) != 1 || files[0].Filename != fileB {
		t.Fatalf("List() after delete = %+v, %v; want only %s", files, err, fileB)
	}
}

func testMissing(t *testing.T, s server.PatchFiles) {
	_, err := s.Open(t.Context(), fileA)
	if server.ErrorCode(err) != server.CodeNotFound {
		t.Fatalf("Open() of a missing file: %v, want not-found", err)
	}
}

func testInvalidNames(t *testing.T, s server.PatchFiles) {
	for _, name := range []string{
		"../" + fileA,
		"livepatch-5.15.0-107.117-generic-107.1-amd64/../../etc.tar.bz2",
		"livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2/..",
		"",
		"passwd",
	} {
		if _, err := s.Put(t.Context(), name, bytes.NewReader(nil)); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("Put(%q): %v, want invalid", name, err)
		}
		if _, err := s.Open(t.Context(), name); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("Open(%q): %v, want invalid", name, err)
		}
		if err := s.Delete(t.Context(), name); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("Delete(%q): %v, want invalid", name, err)
		}
	}
}

// The filesystem store lists only patch archives, including misnamed ones a storage
// refresh should report, and never its own temporary files.
func TestFilesystemList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := patchstore.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, fileA, content(5, 12))
	for _, name := range []string{"README", "bad-name.tar.bz2", ".tmp-" + fileB + "-123"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.tar.bz2"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := patchstore.NewFilesystem(""); server.ErrorCode(err) != server.CodeInvalid {
		t.Errorf("NewFilesystem(\"\"): %v, want invalid", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Filename)
	}
	if diff := cmp.Diff([]string{"bad-name.tar.bz2", fileA}, names); diff != "" {
		t.Errorf("List() (-want +got):\n%s", diff)
	}
}

// A missing patch directory (an unmounted volume) is reported as unavailable, and never
// created underneath the mount point.
func TestFilesystemMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "patches")
	s, err := patchstore.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(t.Context()); server.ErrorCode(err) != server.CodeUnavailable {
		t.Errorf("List: %v, want unavailable", err)
	}
	if _, err := s.Put(t.Context(), fileA, strings.NewReader("x")); server.ErrorCode(err) != server.CodeUnavailable {
		t.Errorf("Put: %v, want unavailable", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the store created %s: %v", dir, err)
	}
}
