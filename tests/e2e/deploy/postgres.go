package deploy

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lib/pq"
)

// Postgres is a PostgreSQL cluster for upstream servers, started as internal/pgtest
// starts one: initdb and pg_ctl from the local installation, as the postgres user when we
// are root, listening on 127.0.0.1 only, durability off. pg_ctl runs the server in the
// background, so the cluster outlives the process that started it until Stop or
// StopPostgres.
type Postgres struct {
	// Dir holds data/, sock/ and log.
	Dir  string
	Port int
	bin  string
	as   string // OS user to run the binaries as; "" = us
}

// EnvDSN names the environment variable of an existing server's admin DSN that tests use
// instead of starting a cluster (as internal/pgtest does).
const EnvDSN = "LIVEPATCH_TEST_DSN"

// StartPostgres initialises a cluster in dir (created; it must be reachable by the
// postgres user when we are root) and starts it.
func StartPostgres(dir string) (*Postgres, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	p := &Postgres{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		p.as = "postgres"
	}
	for _, sub := range []string{"data", "sock"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("cannot create cluster directory: %w", err)
		}
	}
	if p.as != "" {
		if err := chownTree(dir, p.as); err != nil {
			return nil, err
		}
	}
	if out, err := p.run("initdb", "--pgdata", p.data(), "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync"); err != nil {
		return nil, fmt.Errorf("cannot initialise the cluster: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"+
		"max_connections = 100\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n", filepath.Join(dir, "sock"))
	f, err := os.OpenFile(filepath.Join(p.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot configure the cluster: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cannot configure the cluster: %w", err)
	}
	var lastErr error
	for range 3 { // the free port may be taken before the server binds it
		if p.Port, err = freePort(); err != nil {
			return nil, err
		}
		out, err := p.run("pg_ctl", "start", "--pgdata", p.data(), "--wait", "--timeout", "60",
			"--log", filepath.Join(dir, "log"), "--options", "-p "+strconv.Itoa(p.Port))
		if err == nil {
			return p, nil
		}
		lastErr = fmt.Errorf("cannot start the cluster: %v\n%s\n%s", err, out, tail(filepath.Join(dir, "log"), 20))
	}
	return nil, lastErr
}

// AdminDSN is the superuser DSN of the maintenance database.
func (p *Postgres) AdminDSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", p.Port)
}

// CreateDatabase creates an empty database and returns its DSN.
func (p *Postgres) CreateDatabase(name string) (string, error) {
	return createDatabase(p.AdminDSN(), name)
}

// Stop stops the cluster at once; its directory stays.
func (p *Postgres) Stop() error {
	if _, err := os.Stat(filepath.Join(p.data(), "postmaster.pid")); err != nil {
		return nil
	}
	if out, err := p.run("pg_ctl", "stop", "--pgdata", p.data(), "--mode", "immediate", "--wait"); err != nil {
		return fmt.Errorf("cannot stop the cluster: %v\n%s", err, out)
	}
	return nil
}

// StopPostgres stops a cluster StartPostgres started in dir, from any process. It is not
// an error when none runs.
func StopPostgres(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); err != nil {
		return nil
	}
	bin, err := postgresBin()
	if err != nil {
		return err
	}
	p := &Postgres{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		p.as = "postgres"
	}
	return p.Stop()
}

func (p *Postgres) data() string { return filepath.Join(p.Dir, "data") }

func (p *Postgres) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, name)
	var cmd *exec.Cmd
	if p.as != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.as, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = p.Dir
	return cmd.CombinedOutput()
}

// postgresBin returns the directory of the newest PostgreSQL server binaries installed.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(d string) int { n, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return n }
	slices.SortFunc(dirs, func(a, b string) int { return major(b) - major(a) })
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
				return d, nil
			}
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: run make deps (apt-get install postgresql)")
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
		return os.Chown(path, uid, gid)
	})
}

// createDatabase creates database name on the server of adminDSN (key=value form) and
// returns its DSN.
func createDatabase(adminDSN, name string) (string, error) {
	db, err := sql.Open("postgres", adminDSN)
	if err != nil {
		return "", fmt.Errorf("cannot open %s: %w", adminDSN, err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name) + " TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		return "", fmt.Errorf("cannot create database %s: %w", name, err)
	}
	if strings.HasPrefix(adminDSN, "postgres://") || strings.HasPrefix(adminDSN, "postgresql://") {
		u, err := url.Parse(adminDSN)
		if err != nil {
			return "", fmt.Errorf("cannot parse %s: %w", EnvDSN, err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return adminDSN + " dbname=" + name, nil // a later key wins
}

// dropDatabase drops a database createDatabase made.
func dropDatabase(adminDSN, name string) error {
	db, err := sql.Open("postgres", adminDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)")
	return err
}

// The cluster of this test binary's upstreams (or EnvDSN's server).
var (
	testPGOnce sync.Once
	testPG     *Postgres
	testPGDSN  string // admin DSN
	testPGErr  error
	testDBs    int
	testDBMu   sync.Mutex
)

// testDatabase returns the DSN of a new database for an upstream of test t. The database
// is left to the cluster, which Main stops and removes.
func testDatabase(t testing.TB) string {
	t.Helper()
	testPGOnce.Do(func() {
		if dsn := os.Getenv(EnvDSN); dsn != "" {
			testPGDSN = dsn
			return
		}
		dir, err := os.MkdirTemp("", "lp-e2e-pg-")
		if err != nil {
			testPGErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			testPGErr = err
			return
		}
		if testPG, testPGErr = StartPostgres(dir); testPGErr != nil {
			os.RemoveAll(dir)
			return
		}
		testPGDSN = testPG.AdminDSN()
	})
	if testPGErr != nil {
		t.Fatal(testPGErr)
	}
	testDBMu.Lock()
	testDBs++
	name := fmt.Sprintf("upstream_%d_%s_%d", os.Getpid(), randomHex(3), testDBs)
	testDBMu.Unlock()
	dsn, err := createDatabase(testPGDSN, name)
	if err != nil {
		t.Fatal(err)
	}
	if testPG == nil { // a shared server: leave it as we found it
		t.Cleanup(func() {
			if err := dropDatabase(testPGDSN, name); err != nil {
				t.Errorf("cannot drop database %s: %v", name, err)
			}
		})
	}
	return dsn
}

// stopTestPostgres stops and removes the cluster testDatabase started.
func stopTestPostgres() {
	if testPG == nil {
		return
	}
	if err := testPG.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.RemoveAll(testPG.Dir)
}
