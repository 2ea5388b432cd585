package patchstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/livepatch-onprem/livepatch/server"
)

// S3PartSize is the size of the parts a large file is uploaded in (multipart upload):
// a Put holds at most one part in memory, and a file can be up to 10,000 parts long.
const S3PartSize = 8 << 20

// S3Options locate a bucket and the credentials to use it.
type S3Options struct {
	// Endpoint is the URL of the S3 service, http or https, without a path.
	Endpoint string
	// Region is the bucket's region; empty means us-east-1, which most S3 servers other
	// than Amazon's accept whatever their setting.
	Region string
	Bucket string
	// Prefix is prepended to every key, so one bucket can hold several stores; a slash
	// separates it from the filename.
	Prefix    string
	AccessKey string
	SecretKey string
	// CAFile is a PEM file of the certificate authorities to trust for an https endpoint,
	// instead of the system's.
	CAFile string
	// PathStyle addresses the bucket in the URL path (endpoint/bucket/key) rather than as
	// a host name (bucket.endpoint/key); most on-premises S3 servers want it.
	PathStyle bool
}

// S3 stores patch files as objects in an S3 bucket, under a key prefix. Every server unit
// can use the same bucket. A Put is an S3 PUT (or a multipart upload for files over
// ChunkSize), which replaces the object atomically; Range reads are S3 range GETs that
// name the ETag of the object as opened, so a reader never mixes two versions.
type S3 struct {
	client *minio.Core
	bucket string
	prefix string
	host   string // for messages: the endpoint's host, never its credentials
}

var _ server.PatchFiles = (*S3)(nil)

// NewS3 returns a store of the objects in the bucket o names. It makes no request: an
// unreachable endpoint or refused credentials are reported by the first operation.
func NewS3(o S3Options) (*S3, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, server.Errorf(server.CodeInvalid, "s3 patch storage endpoint is not an http(s) URL")
	}
	if o.Bucket == "" {
		return nil, server.Errorf(server.CodeInvalid, "s3 patch storage needs a bucket")
	}
	secure := u.Scheme == "https"
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("cannot set up s3 patch storage: %w", err)
	}
	tr.ResponseHeaderTimeout = time.Minute
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read s3 patch storage CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, server.Errorf(server.CodeInvalid, "s3 patch storage CA file %s holds no PEM certificate", o.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	region := o.Region
	if region == "" {
		region = "us-east-1"
	}
	lookup := minio.BucketLookupAuto
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.NewCore(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:       secure,
		Transport:    tr,
		Region:       region,
		BucketLookup: lookup,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot set up s3 patch storage: %w", err)
	}
	prefix := strings.Trim(o.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &S3{client: client, bucket: o.Bucket, prefix: prefix, host: u.Host}, nil
}

func (s *S3) key(filename string) string { return s.prefix + filename }

// fail turns an S3 client error into the error to return: unavailable, with a message
// that says what to fix, when the bucket is missing, the credentials are refused or the
// endpoint does not answer. Messages never carry credentials: the client's errors name
// the bucket, the key and the host only.
func (s *S3) fail(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchBucket:
		err = server.Errorf(server.CodeUnavailable, "%s: s3 bucket %q does not exist at %s", what, s.bucket, s.host)
	case resp.Code == minio.AccessDenied || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" ||
		resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		err = server.Errorf(server.CodeUnavailable, "%s: s3 at %s refused the credentials for bucket %q", what, s.host, s.bucket)
	case resp.StatusCode == 0:
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = server.Errorf(server.CodeUnavailable, "%s: cannot reach s3 at %s: %v", what, s.host, uerr.Err)
		} else {
			err = fmt.Errorf("%s: %w", what, err)
		}
	case resp.StatusCode >= 500:
		err = server.Errorf(server.CodeUnavailable, "%s: s3 at %s answered %d %s", what, s.host, resp.StatusCode, resp.Code)
	default:
		err = fmt.Errorf("%s: %w", what, err)
	}
	return err
}

// Check reports whether the bucket exists and the credentials open it (one request).
func (s *S3) Check(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.fail(err, "cannot open patch storage")
	}
	if !ok {
		return server.Errorf(server.CodeUnavailable, "cannot open patch storage: s3 bucket %q does not exist at %s", s.bucket, s.host)
	}
	return nil
}

// Put uploads r. A file shorter than ChunkSize goes in one PUT; a longer one in a
// multipart upload of S3PartSize parts, which S3 makes visible only when it completes and
// which is aborted when reading r or ctx fails: the stored file is the old or the new one.
func (s *S3) Put(ctx context.Context, filename string, r io.Reader) (int64, error) {
	if err := checkName(filename); err != nil {
		return 0, err
	}
	r = contextReader{ctx, r}
	head := make([]byte, ChunkSize)
	n, err := io.ReadFull(r, head)
	opts := minio.PutObjectOptions{ContentType: "application/x-bzip2", PartSize: S3PartSize}
	var info minio.UploadInfo
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		info, err = s.client.Client.PutObject(ctx, s.bucket, s.key(filename), bytes.NewReader(head[:n]), int64(n), opts)
	case err != nil:
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	default:
		info, err = s.client.Client.PutObject(ctx, s.bucket, s.key(filename), io.MultiReader(bytes.NewReader(head), r), -1, opts)
	}
	if err != nil {
		return 0, s.fail(err, "cannot store patch file %q", filename)
	}
	return info.Size, nil
}

// Open looks the object up (one HEAD request); reads fetch it with range GETs.
func (s *S3) Open(ctx context.Context, filename string) (server.PatchFile, error) {
	if err := checkName(filename); err != nil {
		return nil, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, s.key(filename), minio.StatObjectOptions{})
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		// A HEAD of a missing bucket looks the same: tell them apart.
		if cerr := s.Check(ctx); cerr != nil {
			return nil, cerr
		}
		return nil, notFound(filename)
	}
	if err != nil {
		return nil, s.fail(err, "cannot open patch file %q", filename)
	}
	return &s3File{
		ctx: ctx, s: s, etag: oi.ETag,
		cursor: cursor{info: server.StoredFile{Filename: filename, Size: oi.Size, ModTime: oi.LastModified.UTC()}},
	}, nil
}

// List lists the objects under the prefix whose names end in .tar.bz2, valid patch
// filenames or not, so that a storage refresh can report the invalid ones. Objects in
// "subdirectories" of the prefix are not the store's and are left out.
func (s *S3) List(ctx context.Context) ([]server.StoredFile, error) {
	var files []server.StoredFile
	for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if oi.Err != nil {
			return nil, s.fail(oi.Err, "cannot list patch files")
		}
		name := strings.TrimPrefix(oi.Key, s.prefix)
		if strings.Contains(name, "/") || !strings.HasSuffix(name, server.PatchFileSuffix) {
			continue
		}
		files = append(files, server.StoredFile{Filename: name, Size: oi.Size, ModTime: oi.LastModified.UTC()})
	}
	return files, nil
}

// Sample lists at most one stored file, usually in one request: enough for a health check to tell
// an empty store (or a prefix that names nothing) from one that holds patches, without
// listing a bucket of tens of thousands of objects.
func (s *S3) Sample(ctx context.Context) ([]server.StoredFile, error) {
	for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 100}) {
		if oi.Err != nil {
			return nil, s.fail(oi.Err, "cannot list patch files")
		}
		if name := strings.TrimPrefix(oi.Key, s.prefix); !strings.Contains(name, "/") && strings.HasSuffix(name, server.PatchFileSuffix) {
			return []server.StoredFile{{Filename: name, Size: oi.Size, ModTime: oi.LastModified.UTC()}}, nil
		}
	}
	return nil, nil
}

// Delete removes a stored object; a missing one is not an error.
func (s *S3) Delete(ctx context.Context, filename string) error {
	if err := checkName(filename); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.key(filename), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.fail(err, "cannot delete patch file %q", filename)
	}
	return nil
}

// DownloadURL returns a presigned URL that lets whoever holds it GET the file for ttl,
// without credentials (redirected downloads). It makes no request.
func (s *S3) DownloadURL(ctx context.Context, filename string, ttl time.Duration) (*url.URL, error) {
	if err := checkName(filename); err != nil {
		return nil, err
	}
	u, err := s.client.PresignedGetObject(ctx, s.bucket, s.key(filename), ttl, nil)
	if err != nil {
		return nil, s.fail(err, "cannot sign a download URL for patch file %q", filename)
	}
	return u, nil
}

// s3File is an open object of an S3 store. It holds one GET response at a time, from the
// read offset to the end; a Seek elsewhere drops it and the next Read starts another.
type s3File struct {
	cursor
	ctx  context.Context
	s    *S3
	etag string
	body io.ReadCloser
}

// Read reads from the current offset, starting a range GET of the opened version when
// none is under way.
func (f *s3File) Read(p []byte) (int, error) {
	if idle, err := f.idle(p); idle {
		return 0, err
	}
	if f.body == nil {
		var opts minio.GetObjectOptions
		if err := opts.SetMatchETag(f.etag); err != nil {
			return 0, fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, err)
		}
		if f.pos > 0 {
			if err := opts.SetRange(f.pos, 0); err != nil {
				return 0, fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, err)
			}
		}
		body, _, _, err := f.s.client.GetObject(f.ctx, f.s.bucket, f.s.key(f.info.Filename), opts)
		if code := minio.ToErrorResponse(err).Code; code == minio.PreconditionFailed || code == minio.NoSuchKey {
			return 0, fmt.Errorf("cannot read patch file %q: it was replaced or deleted while being read", f.info.Filename)
		}
		if err != nil {
			return 0, f.s.fail(err, "cannot read patch file %q", f.info.Filename)
		}
		f.body = body
	}
	n, err := f.body.Read(p)
	f.pos += int64(n)
	if errors.Is(err, io.EOF) {
		f.body.Close()
		f.body = nil
		if f.pos < f.info.Size {
			return n, fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	if err != nil {
		return n, f.s.fail(err, "cannot read patch file %q", f.info.Filename)
	}
	return n, nil
}

// Seek sets the offset of the next Read; no request is made until then.
func (f *s3File) Seek(offset int64, whence int) (int64, error) {
	abs, err := f.seekTo(offset, whence)
	if err != nil {
		return 0, err
	}
	if abs != f.pos && f.body != nil {
		f.body.Close()
		f.body = nil
	}
	f.pos = abs
	return abs, nil
}

// Close ends the GET under way, if any.
func (f *s3File) Close() error {
	if f.closed {
		return fs.ErrClosed
	}
	f.closed = true
	if f.body != nil {
		f.body.Close()
		f.body = nil
	}
	return nil
}
