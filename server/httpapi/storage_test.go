package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// heldFiles is patch storage whose first Put waits, inside the store, until the test
// releases it; later Puts close secondPut and go ahead.
type heldFiles struct {
	server.PatchFiles
	hold      atomic.Bool
	entered   chan struct{}
	release   chan struct{}
	secondPut chan struct{}
	once      sync.Once
}

func (h *heldFiles) Put(ctx context.Context, filename string, r io.Reader) (int64, error) {
	if h.hold.CompareAndSwap(true, false) {
		close(h.entered)
		<-h.release
	} else {
		h.once.Do(func() { close(h.secondPut) })
	}
	return h.PatchFiles.Put(ctx, filename, r)
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// storedSHA256 returns the SHA-256 of the bytes stored under filename.
func storedSHA256(t *testing.T, files server.PatchFiles, filename string) string {
	t.Helper()
	sum, err := patchstore.SHA256(t.Context(), files, filename)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// waitingForLock reports whether a session of this database waits for an advisory lock.
func waitingForLock(t *testing.T, db *postgres.DB) bool {
	t.Helper()
	var n int
	err := db.SQL().QueryRowContext(t.Context(), `SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND NOT granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// Two uploads of one filename with different contents at once: whichever wins, the record
// and the stored bytes are the same upload's. The first upload is held inside the store
// while the second one runs: the second either waits for the filename's lock, or (without
// the lock) stores its bytes and records them before the first one's bytes land.
func TestConcurrentUploadsOfOneFilename(t *testing.T) {
	var files *heldFiles
	e := newEnvFiles(t, func(db *postgres.DB) server.PatchFiles {
		files = &heldFiles{PatchFiles: patchstore.NewPostgres(db.SQL()),
			entered: make(chan struct{}), release: make(chan struct{}), secondPut: make(chan struct{})}
		return files
	})
	token := e.login()
	name, first := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	_, second := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 2048)
	if bytes.Equal(first, second) {
		t.Fatal("the two archives are the same")
	}
	upload := func(data []byte, status chan<- int) {
		code, _ := e.do("PUT", "/v1/admin/patches/files/"+name, "Bearer "+token, data)
		status <- code
	}
	files.hold.Store(true)
	firstStatus, secondStatus := make(chan int, 1), make(chan int, 1)
	go upload(first, firstStatus)
	<-files.entered
	go upload(second, secondStatus)

	// Wait (bounded) until the second upload either waits for the lock or stores its bytes.
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var secondDone bool
wait:
	for {
		select {
		case <-files.secondPut:
			// No lock held it back: let it finish before the first one's bytes land.
			if got := <-secondStatus; got != 201 {
				t.Errorf("second upload: status %d, want 201", got)
			}
			secondDone = true
			break wait
		case <-tick.C:
			if waitingForLock(t, e.db) {
				break wait
			}
		case <-deadline:
			t.Fatal("the second upload neither waited for a lock nor stored its bytes")
		}
	}
	close(files.release)
	codes := []int{<-firstStatus}
	if !secondDone {
		codes = append(codes, <-secondStatus)
	}
	t.Logf("statuses %v", codes)

	var list struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/patches?version=107.1", "session", nil, &list)
	if len(list.Patches) != 1 {
		t.Fatalf("patches = %+v", list.Patches)
	}
	if got, want := storedSHA256(t, files, name), list.Patches[0].SHA256; got != want {
		t.Errorf("stored bytes have sha256 %s, the record says %s", got, want)
	}
	if list.Patches[0].SHA256 != sha256Hex(first) {
		t.Errorf("recorded sha256 %s, want the first upload's %s", list.Patches[0].SHA256, sha256Hex(first))
	}
}

type refreshResult struct {
	Added, Removed, Missing []string
	Mismatched              []struct {
		Filename       string
		RecordedSHA256 string `json:"recorded-sha256"`
		StoredSHA256   string `json:"stored-sha256"`
	}
	Invalid []struct{ Filename, Error string }
}

// A record whose stored bytes are another file's is reported by storage refresh, and
// uploading the recorded file again repairs it.
func TestStorageMismatchRepair(t *testing.T) {
	e := newEnv(t)
	files := patchstore.NewPostgres(e.db.SQL())
	p := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	name, right := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	_, wrong := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 1024)
	if _, err := files.Put(t.Context(), name, bytes.NewReader(wrong)); err != nil {
		t.Fatal(err)
	}

	var out refreshResult
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", nil, &out)
	if len(out.Mismatched) != 1 || out.Mismatched[0].Filename != name ||
		out.Mismatched[0].RecordedSHA256 != p.SHA256 || out.Mismatched[0].StoredSHA256 != sha256Hex(wrong) {
		t.Errorf("mismatched = %+v", out.Mismatched)
	}

	// A different file under that name is still a conflict; the recorded one repairs it.
	e.wantError(409, "already recorded with different contents", "PUT", "/v1/admin/patches/files/"+name, "session", wrong)
	var again server.Patch
	e.must(200, "PUT", "/v1/admin/patches/files/"+name, "session", right, &again)
	if again.SHA256 != p.SHA256 {
		t.Errorf("re-upload answered %+v", again)
	}
	if got := storedSHA256(t, files, name); got != p.SHA256 {
		t.Errorf("after re-upload the stored bytes have sha256 %s, want %s", got, p.SHA256)
	}
	out = refreshResult{}
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", nil, &out)
	if len(out.Mismatched) != 0 {
		t.Errorf("after repair, mismatched = %+v", out.Mismatched)
	}
}

// Filesystem storage whose volume is not mounted (an empty directory, or none) looks
// unhealthy in /debug/status, and storage refresh refuses to forget every record unless
// told to prune; records of single missing files are kept and reported without prune.
func TestStorageRefreshUnmounted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "patches")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnvFiles(t, func(*postgres.DB) server.PatchFiles {
		files, err := patchstore.NewFilesystem(dir)
		if err != nil {
			t.Fatal(err)
		}
		return files
	})
	a := e.upload("5.15.0-107.117", "generic", "107.1", "amd64")
	b := e.upload("5.15.0-107.117", "generic", "107.2", "amd64")
	e.must(200, "POST", "/v1/admin/patches/107.1/promote", "session", map[string]string{"tier": "stable"}, nil)
	var st map[string]any
	e.must(200, "GET", "/debug/status", "", nil, &st)

	// Unmount: the directory is empty.
	aside := filepath.Join(t.TempDir(), "aside")
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	status, body := e.do("GET", "/debug/status", "", nil)
	if status != 503 || !bytes.Contains(body, []byte("holds no patch files but 2 are recorded")) {
		t.Errorf("debug status with empty storage: %d %s", status, body)
	}
	e.wantError(409, "looks unmounted", "POST", "/v1/admin/storage/refresh", "session", nil)
	var list struct{ Patches []server.Patch }
	e.must(200, "GET", "/v1/admin/patches", "session", nil, &list)
	if len(list.Patches) != 2 {
		t.Fatalf("after the refused refresh, patches = %+v", list.Patches)
	}

	// No directory at all.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	status, body = e.do("GET", "/debug/status", "", nil)
	if status != 503 || !bytes.Contains(body, []byte("does not exist")) {
		t.Errorf("debug status with no storage directory: %d %s", status, body)
	}

	// Mounted again: everything is where it was.
	if err := os.Rename(aside, dir); err != nil {
		t.Fatal(err)
	}
	var out refreshResult
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", nil, &out)
	if len(out.Added)+len(out.Removed)+len(out.Missing)+len(out.Mismatched) != 0 {
		t.Errorf("refresh after remount = %+v", out)
	}
	e.must(200, "GET", "/debug/status", "", nil, &st)

	// One file gone: reported, kept; forgotten with prune.
	if err := os.Remove(filepath.Join(dir, b.Filename)); err != nil {
		t.Fatal(err)
	}
	out = refreshResult{}
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", nil, &out)
	if diff := cmp.Diff([]string{b.Filename}, out.Missing); diff != "" || len(out.Removed) != 0 {
		t.Errorf("missing (-want +got):\n%s; removed %v", diff, out.Removed)
	}
	out = refreshResult{}
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", map[string]bool{"prune": true}, &out)
	if diff := cmp.Diff([]string{b.Filename}, out.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	list.Patches = nil
	e.must(200, "GET", "/v1/admin/patches", "session", nil, &list)
	if len(list.Patches) != 1 || list.Patches[0].Filename != a.Filename || list.Patches[0].Tier != "stable" {
		t.Errorf("after prune, patches = %+v", list.Patches)
	}
}
