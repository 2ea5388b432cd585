package load

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq" // the PostgreSQL driver
)

// Postgres is the throwaway PostgreSQL cluster of a benchmark run, as internal/pgtest
// starts one (initdb, run as the postgres user when we are root) but with production
// settings: durability stays on unless the settings turn it off.
type Postgres struct {
	Bin      string // directory of the server binaries
	Dir      string // data/ and sock/ live here; removed by Remove
	Port     int
	Settings PostgresSettings
	proc     *Process
}

// FindPostgres returns the directory of the newest PostgreSQL server binaries installed.
func FindPostgres() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return false
			}
		}
		return true
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(d string) int { n, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return n }
	slices.SortFunc(dirs, func(a, b string) int { return major(b) - major(a) })
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found: run make deps (apt-get install postgresql)")
}

// StartPostgres initialises a cluster in a new directory under base and starts it in g.
// base must be reachable by the postgres user when we are root (/tmp is).
func StartPostgres(ctx context.Context, g *Group, bin, base string, s PostgresSettings) (*Postgres, error) {
	dir, err := os.MkdirTemp(base, "lpbench-pg-")
	if err != nil {
		return nil, fmt.Errorf("cannot create cluster directory: %w", err)
	}
	pg := &Postgres{Bin: bin, Dir: dir, Settings: s}
	fail := func(err error) (*Postgres, error) {
		pg.Remove()
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("cannot find the postgres user to run PostgreSQL as: %w", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(dir, 0o755); err != nil {
			return fail(err)
		}
	}
	for _, sub := range []string{"data", "sock"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o700); err != nil {
			return fail(err)
		}
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "--pgdata", data, "--username", "postgres",
		"--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("cannot initialise cluster: %v\n%s", err, out))
	}
	if pg.Port, err = FreePort("127.0.0.1"); err != nil {
		return fail(err)
	}
	s.Port, s.SocketDir = pg.Port, filepath.Join(dir, "sock")
	pg.Settings = s
	if err := appendTo(filepath.Join(data, "postgresql.conf"), s.Render()); err != nil {
		return fail(err)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if pg.proc, err = g.Start("postgres", cmd, syscall.SIGQUIT); err != nil {
		return fail(err)
	}
	if err := poll(ctx, pg.proc, 2*time.Minute, func() error {
		db, err := sql.Open("postgres", pg.DSN("postgres"))
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	}); err != nil {
		g.Stop(pg.proc, 10*time.Second)
		return fail(fmt.Errorf("cannot start PostgreSQL: %w", err))
	}
	return pg, nil
}

// DSN returns the URL of database name, as the superuser.
func (pg *Postgres) DSN(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.Port, name)
}

// Process returns the postmaster.
func (pg *Postgres) Process() *Process { return pg.proc }

// CreateDatabase creates an empty database.
func (pg *Postgres) CreateDatabase(ctx context.Context, name string) error {
	db, err := sql.Open("postgres", pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE "`+name+`" TEMPLATE template0 ENCODING 'UTF8'`); err != nil {
		return fmt.Errorf("cannot create database %s: %w", name, err)
	}
	return nil
}

// Remove deletes the cluster's directory; stop the postmaster first.
func (pg *Postgres) Remove() error {
	return os.RemoveAll(pg.Dir)
}

func appendTo(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// RemoveStale removes the cluster directories under base that an earlier run left behind
// when it was killed (SIGKILL stops its processes, through Pdeathsig, but leaves the
// files): those whose postmaster is gone and that are more than a minute old.
func RemoveStale(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, "lpbench-pg-*"))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
			line, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && syscall.Kill(pid, 0) == nil {
				continue // still running
			}
		}
		os.RemoveAll(dir)
	}
}
