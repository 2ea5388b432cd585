package httpapi_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// countingFiles is patch storage that counts the files opened. While gate is open (not
// closed), Open waits for it: downloads pile up before any of them reads storage.
type countingFiles struct {
	server.PatchFiles
	opens atomic.Int64
	gate  chan struct{}
}

func (c *countingFiles) Open(ctx context.Context, filename string) (server.PatchFile, error) {
	c.opens.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.PatchFiles.Open(ctx, filename)
}

// newCountingEnv is an API on PostgreSQL patch storage that counts what it opens.
func newCountingEnv(t testing.TB, gated bool, options ...func(*httpapi.Options)) (*env, *countingFiles) {
	t.Helper()
	var files *countingFiles
	e := newEnvFiles(t, func(db *postgres.DB) server.PatchFiles {
		files = &countingFiles{PatchFiles: patchstore.NewPostgres(db.SQL())}
		if gated {
			files.gate = make(chan struct{})
		}
		return files
	}, options...)
	return e, files
}

// recordFile puts data in the storage of e under name and records it as a patch. The
// download path does not look inside the file, so data need not be an archive (a valid
// archive of megabytes takes long to compress under the race detector).
func recordFile(t testing.TB, e *env, name string, data []byte) server.Patch {
	t.Helper()
	ctx := context.Background()
	if _, err := patchstore.NewPostgres(e.db.SQL()).Put(ctx, name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	pn, err := server.ParsePatchFilename(name)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	p, err := e.db.AddPatch(ctx, server.Patch{
		Filename: name, Version: pn.Version, Kernel: pn.Kernel, Flavour: pn.Flavour, Architecture: pn.Architecture,
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Module: "lkp", Source: server.SourceUpload,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// randomBytes returns n bytes that do not compress.
func randomBytes(n int, seed byte) []byte {
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	return data
}

// smallBuffers sets 4 KiB socket buffers (the kernel doubles them), so that a connection
// holds a few kilobytes in flight rather than megabytes.
func smallBuffers(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = cmp.Or(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096),
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096))
	})
	return cmp.Or(err, serr)
}

// smallBufferServer serves the API of e on a listener whose connections have small send
// buffers: a download whose reader stalls blocks in its writes after a few kilobytes
// rather than when the kernel has taken megabytes, so a test knows where it stands.
func smallBufferServer(t testing.TB, e *env) string {
	t.Helper()
	lc := net.ListenConfig{Control: smallBuffers}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e.api)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// stalledRequest sends a download request for path on a connection that takes almost
// nothing from the network (small socket buffers): the server blocks in its writes after
// a few kilobytes, as it does for a client that stopped reading.
func stalledRequest(t testing.TB, addr, path, rangeHeader string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: smallBuffers}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	if rangeHeader != "" {
		rangeHeader = "Range: " + rangeHeader + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: lp.example\r\n%s\r\n", path, rangeHeader); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readHeader reads the status and header of the answer on conn, and none of its body.
func readHeader(t testing.TB, conn net.Conn) (*http.Response, *bufio.Reader) {
	t.Helper()
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, br
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // a poll interval, not a wait for the condition
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// stallReaders opens n downloads of the patch p with Range: bytes=0- that stop reading
// once they have the answer's header, and returns the growth of the live heap while they
// are stalled. With gated storage, every download has reached the handler before the
// first storage read starts. A download whose header has arrived has read the first
// piece of the file and blocks in writing it: none is still reading when the heap is
// measured.
func stallReaders(t testing.TB, e *env, files *countingFiles, p server.Patch, n int) uint64 {
	t.Helper()
	addr := smallBufferServer(t, e)
	before := liveHeap()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = stalledRequest(t, addr, "/patches/"+p.Filename, "bytes=0-")
	}
	if files.gate != nil {
		waitFor(t, "every download to reach the handler", func() bool { return e.api.DownloadsInProgress() == n })
		close(files.gate)
	}
	for _, conn := range conns {
		resp, _ := readHeader(t, conn)
		if resp.StatusCode != http.StatusPartialContent || resp.ContentLength != p.Size {
			t.Fatalf("stalled download: status %d, %d bytes, want 206 with all %d", resp.StatusCode, resp.ContentLength, p.Size)
		}
	}
	grown := int64(liveHeap()) - int64(before)
	return uint64(max(grown, 0))
}

// Downloads of a large patch that is in no cache, from readers that stall after the
// first bytes: with the patch cache, storage is read once for all of them and they share
// the bytes; without it, each holds at most a slice of patchstore.ReadSize, never a
// stored chunk or the whole file. The bound is per connection, whatever the file's size.
func TestStalledDownloadsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 100 stalled downloads of a 12 MiB file")
	}
	const (
		readers = 100
		size    = 12 << 20
		// A download holds a slice of the file, the copy buffer and its connection's
		// buffers.
		perConn = patchstore.ReadSize + 64<<10
		pool    = 20 * patchstore.ReadSize // what the driver's pooled connections keep
		slack   = 8 << 20
	)
	name := "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	data := randomBytes(size, 7)
	for _, test := range []struct {
		name     string
		cache    int
		maxOpens int64
		maxHeap  uint64
	}{
		{"patch cache", 4, 1, size + readers*(perConn-patchstore.ReadSize) + pool + slack},
		{"storage", 0, readers, readers*perConn + pool + slack},
	} {
		t.Run(test.name, func(t *testing.T) {
			e, files := newCountingEnv(t, true, func(o *httpapi.Options) {
				o.PatchCacheSize, o.PatchCacheTTL = test.cache, time.Hour
				o.StallTimeout = time.Minute
			})
			p := recordFile(t, e, name, data)
			grown := stallReaders(t, e, files, p, readers)
			t.Logf("%d stalled readers: %d storage opens, heap grew %.1f MiB", readers, files.opens.Load(), float64(grown)/(1<<20))
			if got := files.opens.Load(); got > test.maxOpens {
				t.Errorf("%d downloads opened the stored file %d times, want at most %d", readers, got, test.maxOpens)
			}
			if grown > test.maxHeap {
				t.Errorf("%d stalled downloads of a %d MiB file hold %.1f MiB of heap, want at most %.1f MiB",
					readers, size>>20, float64(grown)/(1<<20), float64(test.maxHeap)/(1<<20))
			}
		})
	}
	runtime.KeepAlive(data)
}

// A reader that stops taking bytes is dropped after the stall timeout: its download ends
// (releasing its slot and memory) and it never gets the whole file.
func TestStalledDownloadDropped(t *testing.T) {
	for _, cache := range []int{0, 4} {
		t.Run(fmt.Sprint("cache ", cache), func(t *testing.T) {
			e, _ := newCountingEnv(t, false, func(o *httpapi.Options) {
				o.PatchCacheSize, o.PatchCacheTTL = cache, time.Hour
				o.StallTimeout = 200 * time.Millisecond
			})
			p := recordFile(t, e, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", randomBytes(4<<20, 8))
			conn := stalledRequest(t, smallBufferServer(t, e), "/patches/"+p.Filename, "")
			resp, _ := readHeader(t, conn)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			waitFor(t, "the stalled download to be dropped", func() bool { return e.api.DownloadsInProgress() == 0 })
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil || n >= p.Size {
				t.Errorf("a dropped download read %d of %d bytes, error %v; want a cut answer", n, p.Size, err)
			}
		})
	}
}

// Range answers: served, or refused with a JSON error (400 when malformed, 416 with
// Content-Range when no byte is asked for or too many ranges are), from the cache and
// from storage alike.
func TestDownloadRange(t *testing.T) {
	const size = 1000
	tests := []struct {
		rng, ifRange string
		status       int
		body         string // for 206 and 200: the bytes start..end of the file
		start, end   int
	}{
		{rng: "bytes=0-9", status: 206, start: 0, end: 10},
		{rng: "bytes=990-", status: 206, start: 990, end: size},
		{rng: "bytes=-10", status: 206, start: 990, end: size},
		{rng: "bytes=995-5000", status: 206, start: 995, end: size},
		{rng: "bytes=1000-", status: 416, body: "no byte of the file"},
		{rng: "bytes=5000-6000", status: 416, body: "no byte of the file"},
		{rng: "bytes=-0", status: 416, body: "no byte of the file"},
		{rng: "bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16", status: 416, body: "at most 8"},
		{rng: "bytes=9-5", status: 400, body: "invalid Range header"},
		{rng: "items=0-5", status: 400, body: "invalid Range header"},
		{rng: "bytes=", status: 400, body: "invalid Range header"},
		{rng: "bytes=a-b", status: 400, body: "invalid Range header"},
		{rng: "bytes=+1-2", status: 400, body: "invalid Range header"},
		{rng: "bytes=-", status: 400, body: "invalid Range header"},
		{rng: "bytes=1000-", ifRange: `"other"`, status: 200, start: 0, end: size},
	}
	for _, cache := range []int{0, 4} {
		t.Run(fmt.Sprint("cache ", cache), func(t *testing.T) {
			e, _ := newCountingEnv(t, false, func(o *httpapi.Options) { o.PatchCacheSize, o.PatchCacheTTL = cache, time.Hour })
			data := randomBytes(size, 9)
			p := recordFile(t, e, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", data)
			for _, test := range tests {
				req, _ := http.NewRequest("GET", e.srv.URL+"/patches/"+p.Filename, nil)
				req.Header.Set("Range", test.rng)
				if test.ifRange != "" {
					req.Header.Set("If-Range", test.ifRange)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != test.status {
					t.Errorf("Range %q: status %d, want %d: %.200s", test.rng, resp.StatusCode, test.status, body)
					continue
				}
				if test.status < 300 {
					if !bytes.Equal(body, data[test.start:test.end]) {
						t.Errorf("Range %q: got %d bytes, not bytes %d-%d of the file", test.rng, len(body), test.start, test.end)
					}
					continue
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" || !strings.Contains(string(body), test.body) {
					t.Errorf("Range %q: %s %s, want JSON with %q", test.rng, ct, body, test.body)
				}
				if cr := resp.Header.Get("Content-Range"); test.status == 416 && cr != "bytes */"+strconv.Itoa(size) {
					t.Errorf("Range %q: Content-Range %q, want bytes */%d", test.rng, cr, size)
				}
			}
		})
	}
}

// The patch cache never holds bytes other than the recorded ones: a stored file that does
// not match its record is refused (and read again next time), a storage refresh that finds
// it drops what the cache holds at once, and so does the upload that repairs it.
func TestPatchCacheServesOnlyRecordedBytes(t *testing.T) {
	e, files := newCountingEnv(t, false, func(o *httpapi.Options) { o.PatchCacheSize, o.PatchCacheTTL = 4, time.Hour })
	name, archive := patchArchive(t, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	e.must(201, "PUT", "/v1/admin/patches/files/"+name, "session", archive, nil)
	download := func(want int) {
		t.Helper()
		status, body := e.do("GET", "/patches/"+name, "", nil)
		if status != want || (want == 200 && !bytes.Equal(body, archive)) {
			t.Fatalf("download: status %d, %d bytes; want %d with the recorded file", status, len(body), want)
		}
	}
	opened := func(want int64, what string) {
		t.Helper()
		if got := files.opens.Swap(0); got != want {
			t.Errorf("%s: storage opened %d times, want %d", what, got, want)
		}
	}
	files.opens.Store(0)
	download(200)
	download(200)
	opened(1, "two downloads")

	// The stored bytes go bad behind the server's back (same size, one byte changed).
	bad := bytes.Clone(archive)
	bad[len(bad)/2] ^= 0xff
	if _, err := patchstore.NewPostgres(e.db.SQL()).Put(t.Context(), name, bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	var out struct{ Mismatched []struct{ Filename string } }
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", nil, &out)
	if len(out.Mismatched) != 1 {
		t.Fatalf("refresh: mismatched %+v, want the file", out.Mismatched)
	}
	files.opens.Store(0)
	download(500)
	download(500)
	opened(2, "downloads of a mismatched file")
	if !strings.Contains(e.logBuf.String(), "does not match its record") {
		t.Errorf("the refused file is not logged:\n%s", e.logBuf.String())
	}

	e.must(200, "PUT", "/v1/admin/patches/files/"+name, "session", archive, nil) // the repair
	files.opens.Store(0)
	download(200)
	download(200)
	opened(1, "downloads after the repair")
}

// A benchmark in form: it measures the heap and the resident memory of the test process
// while hundreds of stalled readers download a large patch not yet in the cache.
//
//	go test -run '^$' -bench StalledDownloads -benchtime 1x ./server/httpapi
func BenchmarkStalledDownloads(b *testing.B) {
	const readers, size = 300, 12 << 20
	data := randomBytes(size, 10)
	for _, cache := range []int{0, 4} {
		b.Run(fmt.Sprint("cache=", cache), func(b *testing.B) {
			for range b.N {
				e, files := newCountingEnv(b, true, func(o *httpapi.Options) {
					o.PatchCacheSize, o.PatchCacheTTL = cache, time.Hour
					o.StallTimeout = time.Minute
					o.DownloadLimit = readers
				})
				p := recordFile(b, e, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", data)
				rssBefore := residentSet(b)
				grown := stallReaders(b, e, files, p, readers)
				b.ReportMetric(float64(grown)/(1<<20), "heap-MiB")
				b.ReportMetric(float64(residentSet(b)-rssBefore)/(1<<20), "rss-MiB")
				b.ReportMetric(float64(files.opens.Load()), "opens")
			}
		})
	}
	runtime.KeepAlive(data)
}

// residentSet is this process's resident memory (VmRSS), in bytes.
func residentSet(tb testing.TB) int64 {
	tb.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
