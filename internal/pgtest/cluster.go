package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/lib/pq"
)

// ErrNoBinaries is the error FindBinaries returns, and Init and Start wrap, when the
// PostgreSQL server binaries are not installed.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: " +
	"install them (make deps, or apt-get install postgresql)")

// FindBinaries returns the directory holding initdb, pg_ctl and postgres: PostgreSQL 15's
// if installed, else pg_config's, else the newest under /usr/lib/postgresql.
func FindBinaries() (string, error) {
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
	return "", ErrNoBinaries
}

// majorVersion returns N of /usr/lib/postgresql/N/bin.
func majorVersion(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

// Options configures a Cluster.
type Options struct {
	// Dir is the directory of the cluster, created if missing; it must be new or empty,
	// and reachable by the postgres user when we are root. Stop leaves it. When empty,
	// the cluster gets a new temporary directory, which Stop removes.
	Dir string
	// Bin is the directory of the PostgreSQL binaries; empty means FindBinaries.
	Bin string
	// MaxConnections is max_connections; 0 means 100.
	MaxConnections int
	// Durable keeps fsync, synchronous_commit and full_page_writes on, as in production:
	// a commit waits for its WAL to reach the disk. Off, nothing waits for the disk, which
	// suits throwaway data.
	Durable bool
	// Config holds more postgresql.conf lines, appended after the cluster's own settings
	// (listen_addresses, port, unix_socket_directories, max_connections, durability).
	Config string
}

// Cluster is a throwaway PostgreSQL cluster: initdb from the local installation, the
// superuser postgres with trust authentication, listening on 127.0.0.1 only. When we are
// root, every PostgreSQL program runs as the postgres user, since initdb and postgres
// refuse to run as root.
type Cluster struct {
	// Dir holds data/ (the cluster), sock/ (the unix socket) and log (the server's
	// output when Start started it).
	Dir string
	// Port is the server's TCP port on 127.0.0.1.
	Port int

	bin  string
	cred *syscall.Credential // whom programs run as: nil for us
	temp bool                // Stop removes Dir
}

// Init initialises a cluster and configures it to listen on a free port, without starting
// a server: for a caller that runs the server itself, under its own supervision, with
// c.Command("postgres", "-D", c.DataDir()).
func Init(ctx context.Context, opts Options) (*Cluster, error) {
	var err error
	c := &Cluster{Dir: opts.Dir, bin: opts.Bin}
	if c.bin == "" {
		if c.bin, err = FindBinaries(); err != nil {
			return nil, err
		}
	}
	if c.cred, err = postgresCredential(); err != nil {
		return nil, err
	}
	if c.Dir == "" {
		base := ""
		if c.cred != nil && !traversable(os.TempDir()) {
			base = "/tmp" // the postgres user must reach the cluster
		}
		if c.Dir, err = os.MkdirTemp(base, "pgtest-"); err != nil {
			return nil, fmt.Errorf("cannot create cluster directory: %w", err)
		}
		c.temp = true
	}
	if err := c.init(ctx, opts); err != nil {
		if c.temp {
			os.RemoveAll(c.Dir)
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init(ctx context.Context, opts Options) error {
	for _, dir := range []string{c.DataDir(), c.SocketDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("cannot create cluster directory: %w", err)
		}
	}
	if c.cred != nil {
		if err := chownTree(c.Dir, c.cred); err != nil {
			return err
		}
	}
	initdb := c.commandContext(ctx, "initdb", "--pgdata", c.DataDir(), "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot initialise PostgreSQL cluster: %v\n%s", err, out)
	}
	var err error
	if c.Port, err = FreePort(); err != nil {
		return err
	}
	return c.configure(config(opts, c.SocketDir(), c.Port))
}

// config returns the lines Init appends to postgresql.conf.
func config(opts Options, socketDir string, port int) string {
	maxConns := opts.MaxConnections
	if maxConns == 0 {
		maxConns = 100
	}
	durability := "off"
	if opts.Durable {
		durability = "on"
	}
	return fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = %d
fsync = %[4]s
synchronous_commit = %[4]s
full_page_writes = %[4]s
`, port, socketDir, maxConns, durability) + opts.Config
}

// Start initialises a cluster as Init does and starts its server with pg_ctl, waiting
// until it accepts connections. The server runs in the background: it outlives this
// process until Stop or StopDir.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := Init(ctx, opts)
	if err != nil {
		return nil, err
	}
	// The free port may be taken between our probe and the server binding it: try again
	// with another port a few times.
	for attempt := range 3 {
		if attempt > 0 {
			if c.Port, err = FreePort(); err != nil {
				break
			}
			if err = c.configure(fmt.Sprintf("port = %d\n", c.Port)); err != nil { // a later setting wins
				break
			}
		}
		log := filepath.Join(c.Dir, "log")
		out, runErr := c.commandContext(ctx, "pg_ctl", "start", "--pgdata", c.DataDir(), "--wait", "--timeout", "120",
			"--log", log).CombinedOutput()
		if runErr == nil {
			return c, nil
		}
		logText, _ := os.ReadFile(log)
		err = fmt.Errorf("cannot start PostgreSQL cluster: %v\n%s\n%s", runErr, out, logText)
		if ctx.Err() != nil {
			break
		}
	}
	c.Stop()
	return nil, err
}

// DataDir returns the directory of the cluster's data (PGDATA).
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// SocketDir returns the directory of the server's unix socket.
func (c *Cluster) SocketDir() string { return filepath.Join(c.Dir, "sock") }

// DSN returns the key=value DSN of database dbname, as the superuser.
func (c *Cluster) DSN(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port, dbname)
}

// CreateDatabase creates the empty database name and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	db, err := sql.Open("postgres", c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("cannot connect to PostgreSQL cluster: %w", err)
	}
	defer db.Close()
	if err := createDatabase(ctx, db, name); err != nil {
		return "", err
	}
	return c.DSN(name), nil
}

// createDatabase creates the empty database name on the server of db.
func createDatabase(ctx context.Context, db *sql.DB, name string) error {
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		return fmt.Errorf("cannot create database %s: %w", name, err)
	}
	return nil
}

// Command returns the command that runs the PostgreSQL program name (initdb, pg_ctl,
// postgres, ...) with args in Dir, as the postgres user when we are root.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd {
	return c.setUp(exec.Command(filepath.Join(c.bin, name), args...))
}

func (c *Cluster) commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return c.setUp(exec.CommandContext(ctx, filepath.Join(c.bin, name), args...))
}

func (c *Cluster) setUp(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = c.Dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// Stop stops the server at once, if one runs, and removes Dir if the cluster made it.
func (c *Cluster) Stop() error {
	err := c.stopServer()
	if c.temp {
		if rmErr := os.RemoveAll(c.Dir); rmErr != nil && err == nil {
			err = fmt.Errorf("cannot remove PostgreSQL cluster: %w", rmErr)
		}
	}
	return err
}

// StopDir stops the server of the cluster in dir, which Start may have started in
// another process. It is not an error when none runs. dir stays.
func StopDir(dir string) error {
	c := &Cluster{Dir: dir}
	if !c.running() {
		return nil
	}
	var err error
	if c.bin, err = FindBinaries(); err != nil {
		return err
	}
	if c.cred, err = postgresCredential(); err != nil {
		return err
	}
	return c.stopServer()
}

func (c *Cluster) running() bool {
	_, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid"))
	return err == nil
}

func (c *Cluster) stopServer() error {
	if !c.running() {
		return nil
	}
	if out, err := c.Command("pg_ctl", "stop", "--pgdata", c.DataDir(), "--mode", "immediate", "--wait").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot stop PostgreSQL cluster %s: %v\n%s", c.Dir, err, out)
	}
	return nil
}

// configure appends text to postgresql.conf.
func (c *Cluster) configure(text string) error {
	f, err := os.OpenFile(filepath.Join(c.DataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot configure PostgreSQL cluster: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("cannot configure PostgreSQL cluster: %w", err)
	}
	return f.Close()
}

// postgresCredential returns whom PostgreSQL programs run as: the postgres user when we
// are root, else nil (us).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("cannot find user postgres to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chownTree gives dir and everything in it to cred's user and group.
func chownTree(dir string, cred *syscall.Credential) error {
	return filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("cannot give %s to the postgres user: %w", path, err)
		}
		return nil
	})
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

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
