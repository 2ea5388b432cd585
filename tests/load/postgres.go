package load

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq" // the PostgreSQL driver

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

// Postgres is the throwaway PostgreSQL cluster of a benchmark run: an internal/pgtest
// Cluster with production settings (durability stays on unless the settings turn it off),
// whose postmaster runs in the benchmark's Group.
type Postgres struct {
	Settings PostgresSettings
	cluster  *pgtest.Cluster
	proc     *Process
}

// StartPostgres initialises a cluster with the binaries in bin, in a new directory under
// base, and starts it in g. base must be reachable by the postgres user when we are root
// (/tmp is).
func StartPostgres(ctx context.Context, g *Group, bin, base string, s PostgresSettings) (*Postgres, error) {
	dir, err := os.MkdirTemp(base, "lpbench-pg-")
	if err != nil {
		return nil, fmt.Errorf("cannot create cluster directory: %w", err)
	}
	fail := func(err error) (*Postgres, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	pg := &Postgres{Settings: s}
	pg.cluster, err = pgtest.Init(ctx, pgtest.Options{
		Dir:            dir,
		Bin:            bin,
		MaxConnections: s.MaxConns,
		Durable:        s.Fsync,
		Config:         s.Render(),
	})
	if err != nil {
		return fail(err)
	}
	if pg.proc, err = g.Start("postgres", pg.cluster.Command("postgres", "-D", pg.cluster.DataDir()), syscall.SIGQUIT); err != nil {
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
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.cluster.Port, name)
}

// Process returns the postmaster.
func (pg *Postgres) Process() *Process { return pg.proc }

// CreateDatabase creates an empty database.
func (pg *Postgres) CreateDatabase(ctx context.Context, name string) error {
	_, err := pg.cluster.CreateDatabase(ctx, name)
	return err
}

// Remove deletes the cluster's directory; stop the postmaster first.
func (pg *Postgres) Remove() error {
	return os.RemoveAll(pg.cluster.Dir)
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
