// Package s3test gives tests a real S3 server: a throwaway SeaweedFS (`weed server` with
// its S3 gateway) on 127.0.0.1, started on first use and shared by the whole test binary,
// as pgtest shares PostgreSQL. Each test gets its own key prefix in a shared bucket
// (Store), or a bucket of its own (NewBucket).
//
// The weed binary is the one named by the environment variable LIVEPATCH_TEST_WEED, else
// weed on PATH. When there is none, tests are skipped, or fail when the environment
// variable CI is set. A package whose tests use s3test stops the server from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(s3test.Run(m)) }
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

// EnvWeed names the environment variable holding the path of the weed binary.
const EnvWeed = "LIVEPATCH_TEST_WEED"

// The credentials the server accepts, with every right.
const (
	AccessKey = "livepatch-test"
	SecretKey = "livepatch-test-secret-0123456789"
)

// sharedBucket is the bucket Store gives each test a prefix in.
const sharedBucket = "livepatch-test"

// startTimeout bounds the wait for a new server to answer S3 requests.
const startTimeout = 90 * time.Second

// ErrNoWeed is the error when no weed binary is found.
var ErrNoWeed = errors.New("SeaweedFS weed binary not found: set " + EnvWeed + " to its path " +
	"(export " + EnvWeed + "=$(./.ci/weed) builds one), or put weed on PATH")

var (
	startOnce sync.Once
	srv       *Server
	srvErr    error
	counter   atomic.Int64
)

// Server is a running weed server.
type Server struct {
	// Endpoint is the URL of its S3 gateway.
	Endpoint string
	// Dir holds its data and its log (weed.log).
	Dir string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Run runs the tests, stops the server if one was started and returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the shared server, if it was started.
func Stop() {
	if srv != nil {
		srv.Stop()
	}
}

// Options returns the options of an s3 store in bucket of the shared server, path-style.
func (s *Server) Options(bucket, prefix string) patchstore.S3Options {
	return patchstore.S3Options{
		Endpoint: s.Endpoint, Bucket: bucket, Prefix: prefix,
		AccessKey: AccessKey, SecretKey: SecretKey, PathStyle: true,
	}
}

// Get returns the shared server, starting it on first use; it skips the test when weed
// is missing (fails under CI).
func Get(t testing.TB) *Server {
	t.Helper()
	startOnce.Do(func() {
		srv, srvErr = start(context.Background())
		if srvErr == nil {
			srvErr = srv.MakeBucket(context.Background(), sharedBucket)
		}
	})
	switch {
	case errors.Is(srvErr, ErrNoWeed) && os.Getenv("CI") == "":
		t.Skip(srvErr)
	case srvErr != nil:
		t.Fatal(srvErr)
	}
	return srv
}

// Store returns the options of an s3 store of its own for this test: a new key prefix in
// the shared bucket.
func Store(t testing.TB) patchstore.S3Options {
	t.Helper()
	return Get(t).Options(sharedBucket, uniqueName(t))
}

// NewBucket creates a new, empty bucket for this test and returns the options of a store
// in it, without a prefix.
func NewBucket(t testing.TB) patchstore.S3Options {
	t.Helper()
	s := Get(t)
	name := uniqueName(t)
	if err := s.MakeBucket(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	return s.Options(name, "")
}

// uniqueName returns a bucket name, which is also a fine prefix, unique in this binary.
func uniqueName(t testing.TB) string {
	var b [3]byte
	rand.Read(b[:])
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return strings.Trim(fmt.Sprintf("t%d-%s-%s", counter.Add(1), hex.EncodeToString(b[:]), name), "-")
}

// Client returns an S3 client of the server, with its credentials.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), Region: "us-east-1",
		BucketLookup: minio.BucketLookupPath, MaxRetries: 1,
	})
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("cannot create bucket %s: %w", name, err)
	}
	return nil
}

// RemoveBucket deletes a bucket and everything in it.
func (s *Server) RemoveBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	for oi := range c.ListObjectsIter(ctx, name, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			return fmt.Errorf("cannot list bucket %s: %w", name, oi.Err)
		}
		if err := c.RemoveObject(ctx, name, oi.Key, minio.RemoveObjectOptions{}); err != nil {
			return fmt.Errorf("cannot empty bucket %s: %w", name, err)
		}
	}
	if err := c.RemoveBucket(ctx, name); err != nil {
		return fmt.Errorf("cannot remove bucket %s: %w", name, err)
	}
	return nil
}

// findWeed returns the path of the weed binary.
func findWeed() (string, error) {
	if p := os.Getenv(EnvWeed); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvWeed, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("weed"); err == nil {
		return p, nil
	}
	return "", ErrNoWeed
}

// identities is the S3 gateway's configuration: one identity with every right.
const identities = `{"identities":[{"name":"livepatch-test","credentials":[{"accessKey":"` + AccessKey +
	`","secretKey":"` + SecretKey + `"}],"actions":["Admin","Read","List","Tagging","Write"]}]}`

// Start starts a new weed server (master, volume, filer and S3 gateway in one process)
// in a temporary directory, and waits until its S3 gateway answers.
func Start(ctx context.Context) (*Server, error) { return start(ctx) }

func start(ctx context.Context) (*Server, error) {
	bin, err := findWeed()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "s3test-")
	if err != nil {
		return nil, fmt.Errorf("cannot create weed directory: %w", err)
	}
	s := &Server{Dir: dir, done: make(chan struct{})}
	if err := s.run(ctx, bin); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) run(ctx context.Context, bin string) error {
	config := filepath.Join(s.Dir, "s3.json")
	if err := os.WriteFile(config, []byte(identities), 0o600); err != nil {
		return fmt.Errorf("cannot write weed s3 config: %w", err)
	}
	data := filepath.Join(s.Dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return fmt.Errorf("cannot create weed directory: %w", err)
	}
	ports, err := freePorts(9)
	if err != nil {
		return err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = "http://127.0.0.1:" + p(0)
	log, err := os.Create(filepath.Join(s.Dir, "weed.log"))
	if err != nil {
		return fmt.Errorf("cannot create weed log: %w", err)
	}
	defer log.Close()
	s.cmd = exec.Command(bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		"-master.port="+p(1), "-master.port.grpc="+p(2), "-master.volumeSizeLimitMB=64",
		"-volume.port="+p(3), "-volume.port.grpc="+p(4), "-volume.max=100",
		"-filer", "-filer.port="+p(5), "-filer.port.grpc="+p(6),
		"-s3", "-s3.port="+p(0), "-s3.port.grpc="+p(7), "-s3.config="+config,
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
		"-metricsPort="+p(8),
	)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("cannot start weed: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()

	// Ready when the gateway lists buckets with our credentials (the filer behind it up).
	client, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = client.ListBuckets(rctx)
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("weed exited before it was ready: %v\n%s", s.cmd.ProcessState, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("weed not ready after %s: %v\n%s", startTimeout, err, s.logTail())
		case <-tick.C:
		}
	}
}

// logTail returns the end of the server's log.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "weed.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// stopGrace is how long Stop waits after SIGTERM before it kills: weed often ignores
// SIGTERM while its servers drain.
const stopGrace = 3 * time.Second

// Stop stops the server (SIGTERM, then SIGKILL after a grace period) and removes its
// directory.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		pgid := s.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopGrace):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
	}
	os.RemoveAll(s.Dir)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1, each below 55536 so that
// weed's default of port+10000 never matters.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for attempt := 0; len(ports) < n && attempt < 100*n; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cannot find a free port: %w", err)
		}
		ls = append(ls, l)
		if port := l.Addr().(*net.TCPAddr).Port; port < 55536 {
			ports = append(ports, port)
		}
	}
	if len(ports) < n {
		return nil, errors.New("cannot find enough free ports")
	}
	return ports, nil
}
