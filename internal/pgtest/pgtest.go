// Package pgtest gives each test a fresh, real PostgreSQL database.
//
// The server behind the databases is the one named by the admin DSN in the environment
// variable LIVEPATCH_TEST_DSN when it is set. Otherwise the first call starts one throwaway
// cluster for the whole test binary (initdb + pg_ctl from the local PostgreSQL
// installation, listening on 127.0.0.1 only, durability switched off for speed), and
// Main stops it when the tests are done. A package whose tests use pgtest must therefore
// have
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// When the PostgreSQL binaries are missing, tests are skipped, or fail when the
// environment variable CI is set.
package pgtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lib/pq"
)

// EnvDSN names the environment variable holding the admin DSN of an existing server to use
// instead of starting a throwaway cluster.
const EnvDSN = "LIVEPATCH_TEST_DSN"

// missingMessage says what to install when the PostgreSQL binaries are not found.
const missingMessage = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them " +
	"(apt-get install postgresql) or set " + EnvDSN + " to the DSN of a server where tests may create databases"

var (
	mainCalled atomic.Bool
	dbCounter  atomic.Int64

	startOnce sync.Once
	srv       *server // set by startOnce
	srvErr    error   // set by startOnce
	srvSkip   bool    // set by startOnce: srvErr means "binaries missing"
)

// server is the PostgreSQL server the test databases live on.
type server struct {
	adminDSN string  // key=value DSN of the maintenance database
	admin    *sql.DB // pool on adminDSN, for CREATE/DROP DATABASE
	cluster  *cluster
}

// Main runs the tests of a package, then stops the throwaway cluster if one was started.
// Call it from TestMain.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if srv != nil {
		srv.admin.Close()
		if srv.cluster != nil {
			if err := srv.cluster.stop(); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			}
		}
	}
	os.Exit(code)
}

// AdminDSN returns a superuser DSN of the test server's maintenance database, for tests
// that need to create roles. Roles are shared by the whole server: give them unique names.
func AdminDSN(t testing.TB) string {
	t.Helper()
	return get(t).adminDSN
}

// DSN creates a new, empty database for this test and returns its DSN (sslmode=disable).
// The database is dropped when the test ends. It is safe to call from parallel tests.
func DSN(t testing.TB) string {
	t.Helper()
	s := get(t)
	name := databaseName(t.Name())
	if _, err := s.admin.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name) + " TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		t.Fatalf("cannot create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE (PostgreSQL 13+) ends connections a test left open.
		if _, err := s.admin.Exec("DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)"); err != nil {
			t.Errorf("cannot drop test database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(s.adminDSN, name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// get returns the test server, starting it on first use.
func get(t testing.TB) *server {
	t.Helper()
	startOnce.Do(func() { srv, srvSkip, srvErr = start() })
	switch {
	case srvErr != nil && srvSkip && os.Getenv("CI") == "":
		t.Skip(srvErr)
	case srvErr != nil:
		t.Fatal(srvErr)
	case srv.cluster != nil && !mainCalled.Load():
		t.Fatal("pgtest: the package's tests must call pgtest.Main from TestMain, so that the throwaway PostgreSQL cluster is stopped: func TestMain(m *testing.M) { pgtest.Main(m) }")
	}
	return srv
}

// start connects to the server in EnvDSN or starts a throwaway cluster. skip reports that
// err means the binaries are missing.
func start() (s *server, skip bool, err error) {
	s = &server{}
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		if s.adminDSN, err = withDatabase(dsn, ""); err != nil {
			return nil, false, err
		}
	} else {
		bin, err := findBinaries()
		if err != nil {
			return nil, true, err
		}
		if s.cluster, err = startCluster(bin); err != nil {
			return nil, false, err
		}
		s.adminDSN = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", s.cluster.port)
	}
	if s.admin, err = sql.Open("postgres", s.adminDSN); err != nil {
		s.cluster.stop()
		return nil, false, fmt.Errorf("cannot open test server: %w", err)
	}
	s.admin.SetMaxOpenConns(4)
	if err := s.admin.Ping(); err != nil {
		s.admin.Close()
		s.cluster.stop()
		return nil, false, fmt.Errorf("cannot connect to test server: %w", err)
	}
	return s, false, nil
}

var nonWord = regexp.MustCompile(`[^a-z0-9]+`)

// runID keeps the database names of concurrent test binaries sharing a server apart.
var runID = func() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

// databaseName returns a unique database name that also hints at the test.
func databaseName(test string) string {
	hint := strings.Trim(nonWord.ReplaceAllString(strings.ToLower(test), "_"), "_")
	name := fmt.Sprintf("t%s_%d_%s", runID, dbCounter.Add(1), hint)
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// withDatabase returns dsn (URL or key=value form) naming database name (when not empty),
// with sslmode=disable unless dsn sets an sslmode.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("cannot parse %s: %w", EnvDSN, err)
		}
		if name != "" {
			u.Path = "/" + name
		}
		if q := u.Query(); !q.Has("sslmode") {
			q.Set("sslmode", "disable")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	if !strings.Contains(dsn, "sslmode=") {
		dsn += " sslmode=disable"
	}
	if name != "" {
		// A later key overrides an earlier one. Generated names need no quoting.
		dsn += " dbname=" + name
	}
	return dsn, nil
}

// findBinaries returns the directory holding initdb and pg_ctl.
func findBinaries() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return false
			}
		}
		return true
	}
	candidates := []string{"/usr/lib/postgresql/15/bin"}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return majorVersion(b) - majorVersion(a) }) // newest first
	candidates = append(candidates, dirs...)
	for _, dir := range candidates {
		if has(dir) {
			return dir, nil
		}
	}
	return "", errors.New(missingMessage)
}

// majorVersion returns N of /usr/lib/postgresql/N/bin.
func majorVersion(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

// cluster is a throwaway PostgreSQL cluster in a temporary directory.
type cluster struct {
	bin  string // directory of the PostgreSQL binaries
	dir  string // temporary directory: data/, sock/, log
	port int
	as   string // OS user running the server when we are root, else ""
}

// startCluster initialises and starts a cluster, waiting until it accepts connections.
func startCluster(bin string) (*cluster, error) {
	c := &cluster{bin: bin}
	base := ""
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root: run them as the postgres user, in a
		// directory it owns and can reach.
		c.as = "postgres"
		if !traversable(os.TempDir()) {
			base = "/tmp"
		}
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("cannot create cluster directory: %w", err)
	}
	c.dir = dir
	for _, sub := range []string{"data", "sock"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("cannot create cluster directory: %w", err)
		}
	}
	if c.as != "" {
		if err := chownTree(dir, c.as); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if out, err := c.run("initdb", "--pgdata", c.data(), "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot initialise test cluster: %v\n%s", err, out)
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
`, filepath.Join(dir, "sock"))
	if err := appendFile(filepath.Join(c.data(), "postgresql.conf"), conf); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The free port may be taken between our probe and the server binding it: try again
	// with another port a few times.
	var lastErr error
	for range 3 {
		if c.port, err = freePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		out, err := c.run("pg_ctl", "start", "--pgdata", c.data(), "--wait", "--timeout", "120",
			"--log", filepath.Join(dir, "log"), "--options", "-p "+strconv.Itoa(c.port))
		if err == nil {
			return c, nil
		}
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		lastErr = fmt.Errorf("cannot start test cluster: %v\n%s\n%s", err, out, log)
	}
	c.stop()
	return nil, lastErr
}

// stop stops the cluster at once and removes its directory.
func (c *cluster) stop() error {
	if c == nil {
		return nil
	}
	var err error
	if _, statErr := os.Stat(filepath.Join(c.data(), "postmaster.pid")); statErr == nil {
		if out, runErr := c.run("pg_ctl", "stop", "--pgdata", c.data(), "--mode", "immediate", "--wait"); runErr != nil {
			err = fmt.Errorf("cannot stop test cluster: %v\n%s", runErr, out)
		}
	}
	if rmErr := os.RemoveAll(c.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("cannot remove test cluster: %w", rmErr)
	}
	return err
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs a PostgreSQL binary, as c.as when set.
func (c *cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.as != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.as, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// traversable reports whether every directory on the way to dir is searchable by others.
func traversable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// chownTree gives dir and everything in it to the OS user name.
func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("cannot find user %q to run PostgreSQL as: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return fmt.Errorf("cannot give %s to user %q: %w", path, name, err)
		}
		return nil
	})
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot configure test cluster: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("cannot configure test cluster: %w", err)
	}
	return f.Close()
}
