package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// s3Env starts an API whose patches are in a real S3 server, with one 3 MiB patch
// recorded; it returns the env, the store, the file's name and its bytes.
func s3Env(t testing.TB, options ...func(*httpapi.Options)) (*env, *patchstore.S3, string, []byte) {
	t.Helper()
	files, err := patchstore.NewS3(s3test.Store(t))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvFiles(t, func(*postgres.DB) server.PatchFiles { return files }, options...)
	name := "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	data := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{2}).Read(data)
	if _, err := files.Put(t.Context(), name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if _, err := e.db.AddPatch(t.Context(), server.Patch{
		Filename: name, Version: "107.1", Kernel: "5.15.0-107.117", Flavour: "generic", Architecture: "amd64",
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Module: "lkp", Source: server.SourceUpload,
	}); err != nil {
		t.Fatal(err)
	}
	return e, files, name, data
}

// get fetches url with an optional Range and returns the status and body.
func get(t *testing.T, client *http.Client, url, rng string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// Downloads stream from the s3 store, with and without the patch cache, Range included.
func TestDownloadS3(t *testing.T) {
	for name, opt := range map[string]func(*httpapi.Options){
		"storage":     func(*httpapi.Options) {},
		"patch cache": func(o *httpapi.Options) { o.PatchCacheSize = 2; o.PatchCacheTTL = time.Hour },
	} {
		t.Run(name, func(t *testing.T) {
			e, _, file, data := s3Env(t, opt)
			for range 2 {
				resp, body := get(t, http.DefaultClient, e.srv.URL+"/patches/"+file, "")
				if resp.StatusCode != 200 || !bytes.Equal(body, data) {
					t.Fatalf("GET: %s, %d bytes", resp.Status, len(body))
				}
			}
			resp, body := get(t, http.DefaultClient, e.srv.URL+"/patches/"+file, "bytes=2097140-2097159")
			if resp.StatusCode != 206 || !bytes.Equal(body, data[2097140:2097160]) {
				t.Errorf("GET with Range: %s, %q", resp.Status, body)
			}
		})
	}
}

// With DownloadRedirect, a download answers 307 to a presigned URL, uncached, that
// serves the file without credentials; a client following it gets the bytes.
func TestDownloadRedirectS3(t *testing.T) {
	var files *patchstore.S3
	e, files, file, data := s3Env(t, func(o *httpapi.Options) {
		o.PatchCacheSize = 2
		o.DownloadRedirect = func(ctx context.Context, filename string) (*url.URL, error) {
			return files.DownloadURL(ctx, filename, time.Minute)
		}
	})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := get(t, noFollow, e.srv.URL+"/v1/patches/"+file, "")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Cache-Control") != "no-store" ||
		!strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("GET: %s, Cache-Control %q, Location %q; want 307 to a presigned URL", resp.Status, resp.Header.Get("Cache-Control"), loc)
	}
	resp, body := get(t, http.DefaultClient, e.srv.URL+"/patches/"+file, "")
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET following the redirect: %s, %d bytes", resp.Status, len(body))
	}
	resp, body = get(t, http.DefaultClient, e.srv.URL+"/patches/"+file, "bytes=10-19")
	if resp.StatusCode != 206 || !bytes.Equal(body, data[10:20]) {
		t.Errorf("GET with Range following the redirect: %s, %q", resp.Status, body)
	}
	// Unrecorded files are still refused by the server, not redirected.
	e.wantError(404, "does not exist", "GET", "/patches/livepatch-5.15.0-1.1-generic-1.1-amd64.tar.bz2", "", nil)
}

// BenchmarkDownloadS3 serves a 3 MiB patch from the s3 store, uncached and cached, and the
// same file from disk with http.FileServer (the ceiling), two downloads at a time.
func BenchmarkDownloadS3(b *testing.B) {
	e, _, file, data := s3Env(b)
	ec, _, _, _ := s3Env(b, func(o *httpapi.Options) { o.PatchCacheSize = 2; o.PatchCacheTTL = time.Hour })
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
		b.Fatal(err)
	}
	fileServer := httptest.NewServer(http.StripPrefix("/patches/", http.FileServer(http.Dir(dir))))
	b.Cleanup(fileServer.Close)
	for _, s := range []struct{ name, url string }{
		{"file-server", fileServer.URL}, {"s3", e.srv.URL}, {"s3-cache", ec.srv.URL},
	} {
		b.Run(s.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			b.SetBytes(int64(len(data)))
			b.SetParallelism(1)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(s.url + "/patches/" + file)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || n != int64(len(data)) {
						b.Errorf("download: %d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}

// Uploads land in the bucket; storage refresh records an archive copied into the bucket
// by hand and storage patches lists both.
func TestStorageRefreshS3(t *testing.T) {
	e, files, recorded, _ := s3Env(t)
	uploaded := e.upload("6.8.0-31.31", "generic", "31.3", "arm64")
	if _, err := patchstore.SHA256(t.Context(), files, uploaded.Filename); err != nil {
		t.Fatalf("the uploaded patch is not in the bucket: %v", err)
	}
	name, data := patchArchive(t, "6.8.0-31.31", "generic", "31.1", "arm64", 2048)
	if _, err := files.Put(t.Context(), name, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var out struct{ Added []string }
	e.must(200, "POST", "/v1/admin/storage/refresh", "session", map[string]bool{}, &out)
	if len(out.Added) != 1 || out.Added[0] != name {
		t.Errorf("added %v, want %s", out.Added, name)
	}
	var stored struct {
		Files []struct {
			Filename string
			Recorded bool
		}
	}
	e.must(200, "GET", "/v1/admin/storage/patches", "session", nil, &stored)
	var got []string
	for _, f := range stored.Files {
		if f.Recorded {
			got = append(got, f.Filename)
		}
	}
	if strings.Join(got, " ") != strings.Join([]string{recorded, name, uploaded.Filename}, " ") {
		t.Errorf("recorded stored files %v, want %s %s %s", got, recorded, name, uploaded.Filename)
	}
}

// /debug/status checks an s3 store by sampling it: healthy with the patch in the bucket,
// unhealthy once the bucket holds none of the recorded patches.
func TestStatusS3(t *testing.T) {
	e, files, file, _ := s3Env(t)
	// A download of the patch recorded behind the API's back loads it into the catalog.
	if resp, _ := get(t, http.DefaultClient, e.srv.URL+"/patches/"+file, ""); resp.StatusCode != 200 {
		t.Fatalf("GET: %s", resp.Status)
	}
	var out struct {
		PatchStorage struct{ Status string } `json:"patch-storage"`
	}
	e.must(200, "GET", "/debug/status", "", nil, &out)
	if out.PatchStorage.Status != "OK" {
		t.Errorf("patch-storage %q, want OK", out.PatchStorage.Status)
	}
	if err := files.Delete(t.Context(), file); err != nil {
		t.Fatal(err)
	}
	e.must(503, "GET", "/debug/status", "", nil, &out)
	if !strings.Contains(out.PatchStorage.Status, "holds no patch files but 1 are recorded") {
		t.Errorf("patch-storage %q, want no patch files", out.PatchStorage.Status)
	}
}
