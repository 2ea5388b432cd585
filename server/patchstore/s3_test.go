package patchstore_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

func newS3(t *testing.T, o patchstore.S3Options) *patchstore.S3 {
	t.Helper()
	s, err := patchstore.NewS3(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An endpoint where nothing listens is unavailable, with a message naming it.
func TestS3Unreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := newS3(t, patchstore.S3Options{Endpoint: "http://" + addr, Bucket: "patches", AccessKey: "a", SecretKey: "very-secret", PathStyle: true})
	for name, err := range map[string]error{
		"Check": s.Check(t.Context()),
		"List":  func() error { _, err := s.List(t.Context()); return err }(),
		"Put":   func() error { _, err := s.Put(t.Context(), fileA, strings.NewReader("x")); return err }(),
		"Open":  func() error { _, err := s.Open(t.Context(), fileA); return err }(),
	} {
		if server.ErrorCode(err) != server.CodeUnavailable || !strings.Contains(err.Error(), "cannot reach s3 at "+addr) {
			t.Errorf("%s: %v, want unavailable, cannot reach s3 at %s", name, err, addr)
		}
		if err != nil && strings.Contains(err.Error(), "very-secret") {
			t.Errorf("%s: the error shows the secret key: %v", name, err)
		}
	}
}

// Refused credentials are unavailable with a message that says so, and never quote the
// secret.
func TestS3WrongCredentials(t *testing.T) {
	t.Parallel()
	o := s3test.Store(t)
	o.SecretKey = "wrong-secret-key-0123"
	s := newS3(t, o)
	for name, err := range map[string]error{
		"Check": s.Check(t.Context()),
		"List":  func() error { _, err := s.List(t.Context()); return err }(),
		"Put":   func() error { _, err := s.Put(t.Context(), fileA, strings.NewReader("x")); return err }(),
		"Open":  func() error { _, err := s.Open(t.Context(), fileA); return err }(),
	} {
		if server.ErrorCode(err) != server.CodeUnavailable || !strings.Contains(err.Error(), "refused the credentials") {
			t.Errorf("%s: %v, want unavailable, refused the credentials", name, err)
		}
		if err != nil && strings.Contains(err.Error(), o.SecretKey) {
			t.Errorf("%s: the error shows the secret key: %v", name, err)
		}
	}
}

// A bucket that disappears makes every operation unavailable, naming the bucket.
func TestS3BucketRemoved(t *testing.T) {
	t.Parallel()
	o := s3test.NewBucket(t)
	s := newS3(t, o)
	put(t, s, fileA, content(10, 1))
	if err := s.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s3test.Get(t).RemoveBucket(t.Context(), o.Bucket); err != nil {
		t.Fatal(err)
	}
	want := `s3 bucket "` + o.Bucket + `" does not exist`
	for name, err := range map[string]error{
		"Check": s.Check(t.Context()),
		"List":  func() error { _, err := s.List(t.Context()); return err }(),
		"Put":   func() error { _, err := s.Put(t.Context(), fileA, strings.NewReader("x")); return err }(),
		"Open":  func() error { _, err := s.Open(t.Context(), fileA); return err }(),
	} {
		if server.ErrorCode(err) != server.CodeUnavailable || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want unavailable, %s", name, err, want)
		}
	}
}

// The store lists only the patch archives directly under its prefix: not another
// prefix's, not a "subdirectory"'s, not other objects.
func TestS3ListPrefix(t *testing.T) {
	t.Parallel()
	o := s3test.NewBucket(t)
	o.Prefix = "site/patches"
	s := newS3(t, o)
	put(t, s, fileA, content(5, 1))
	other := o
	other.Prefix = "site"
	outer := newS3(t, other)
	put(t, outer, fileB, content(5, 2))
	c, err := s3test.Get(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"site/patches/README", "site/patches/sub/" + fileB, "site/patches/bad-name.tar.bz2"} {
		if _, err := c.PutObject(t.Context(), o.Bucket, key, strings.NewReader("x"), 1, minioPut); err != nil {
			t.Fatal(err)
		}
	}
	files, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Filename)
	}
	if strings.Join(names, " ") != "bad-name.tar.bz2 "+fileA {
		t.Errorf("List() = %v, want bad-name.tar.bz2 and %s", names, fileA)
	}
}

// A presigned download URL serves the file, Range included, without credentials, and
// stops working when it expires.
func TestS3DownloadURL(t *testing.T) {
	t.Parallel()
	s := newS3(t, s3test.Store(t))
	data := content(3*patchstore.ChunkSize, 3)
	put(t, s, fileA, data)
	u, err := s.DownloadURL(t.Context(), fileA, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), "GET", u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) {
		t.Fatalf("GET presigned URL with Range: %s, %d bytes, %v", resp.Status, len(body), err)
	}
	if _, err := s.DownloadURL(t.Context(), "../"+fileA, time.Minute); server.ErrorCode(err) != server.CodeInvalid {
		t.Errorf("DownloadURL of an invalid name: %v, want invalid", err)
	}
}

var minioPut = minio.PutObjectOptions{}

// A read that needs a new range GET after the object was replaced fails, rather than
// returning bytes of the new object after those of the old.
func TestS3ReplacedWhileSeeking(t *testing.T) {
	t.Parallel()
	s := newS3(t, s3test.Store(t))
	put(t, s, fileA, content(3*patchstore.ChunkSize, 1))
	f, err := s.Open(t.Context(), fileA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	put(t, s, fileA, content(3*patchstore.ChunkSize, 2))
	if _, err := f.Seek(2*patchstore.ChunkSize, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	_, err = f.Read(make([]byte, 100))
	if err == nil || !strings.Contains(err.Error(), "replaced or deleted while being read") {
		t.Fatalf("Read after the object was replaced: %v, want replaced while being read", err)
	}
}

// Sample finds a patch file without listing everything, and nothing in an empty store.
func TestS3Sample(t *testing.T) {
	t.Parallel()
	s := newS3(t, s3test.Store(t))
	if files, err := s.Sample(t.Context()); err != nil || len(files) != 0 {
		t.Fatalf("Sample() of an empty store = %+v, %v", files, err)
	}
	put(t, s, fileB, content(5, 1))
	put(t, s, fileA, content(5, 2))
	files, err := s.Sample(t.Context())
	if err != nil || len(files) != 1 || files[0].Filename != fileA || files[0].Size != 5 {
		t.Fatalf("Sample() = %+v, %v; want %s of 5 bytes", files, err, fileA)
	}
}
