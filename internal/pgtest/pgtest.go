// Package pgtest gives each test a fresh, real PostgreSQL database, and any test or tool a
// throwaway PostgreSQL cluster (Cluster).
//
// The server behind the databases is the one named by the admin DSN in the environment
// variable LIVEPATCH_TEST_DSN when it is set. Otherwise the first call starts one throwaway
// cluster for the whole test binary (Start: listening on 127.0.0.1 only, durability
// switched off for speed), and Main (or Run) stops it when the tests are done. A package
// whose tests use pgtest must therefore have
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// When the PostgreSQL binaries are missing, tests are skipped, or fail when the
// environment variable CI is set.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lib/pq"
)

// EnvDSN names the environment variable holding the admin DSN of an existing server to use
// instead of starting a throwaway cluster.
const EnvDSN = "LIVEPATCH_TEST_DSN"

var (
	mainCalled atomic.Bool
	dbCounter  atomic.Int64

	startOnce sync.Once
	srv       *server // set by startOnce
	srvErr    error   // set by startOnce
)

// server is the PostgreSQL server the test databases live on.
type server struct {
	adminDSN string   // DSN of the maintenance database
	admin    *sql.DB  // pool on adminDSN, for CREATE/DROP DATABASE
	cluster  *Cluster // nil on EnvDSN's server
}

// Main runs the tests of a package, then stops the throwaway cluster if one was started,
// and exits. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main for a TestMain that has more to clean up: it runs the tests, stops the
// throwaway cluster if one was started and returns the exit code.
func Run(m *testing.M) int {
	mainCalled.Store(true)
	code := m.Run()
	if srv != nil {
		srv.admin.Close()
		if srv.cluster != nil {
			if err := srv.cluster.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			}
		}
	}
	return code
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
	if err := createDatabase(context.Background(), s.admin, name); err != nil {
		t.Fatal(err)
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
	startOnce.Do(func() { srv, srvErr = start() })
	switch {
	case errors.Is(srvErr, ErrNoBinaries) && os.Getenv("CI") == "":
		t.Skip(srvErr)
	case srvErr != nil:
		t.Fatal(srvErr)
	case srv.cluster != nil && !mainCalled.Load():
		t.Fatal("pgtest: the package's tests must call pgtest.Main (or pgtest.Run) from TestMain, so that the throwaway PostgreSQL cluster is stopped: func TestMain(m *testing.M) { pgtest.Main(m) }")
	}
	return srv
}

// start connects to the server in EnvDSN or starts a throwaway cluster.
func start() (*server, error) {
	s := &server{}
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		var err error
		if s.adminDSN, err = withDatabase(dsn, ""); err != nil {
			return nil, err
		}
	} else {
		c, err := Start(context.Background(), Options{MaxConnections: 300})
		if errors.Is(err, ErrNoBinaries) {
			return nil, fmt.Errorf("%w; or set %s to the DSN of a server where tests may create databases", err, EnvDSN)
		}
		if err != nil {
			return nil, err
		}
		s.cluster, s.adminDSN = c, c.DSN("postgres")
	}
	// stop undoes what start did when it fails.
	stop := func() {
		if s.cluster != nil {
			s.cluster.Stop()
		}
	}
	var err error
	if s.admin, err = sql.Open("postgres", s.adminDSN); err != nil {
		stop()
		return nil, fmt.Errorf("cannot open test server: %w", err)
	}
	s.admin.SetMaxOpenConns(4)
	if err := s.admin.Ping(); err != nil {
		s.admin.Close()
		stop()
		return nil, fmt.Errorf("cannot connect to test server: %w", err)
	}
	return s, nil
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
