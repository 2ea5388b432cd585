package pgtest_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

// clusterDir returns a new directory for a cluster, reachable by the postgres user when
// we are root (t.TempDir's parent is private to us).
func clusterDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster of its own: skipped with -short")
	}
	if _, err := pgtest.FindBinaries(); errors.Is(err, pgtest.ErrNoBinaries) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/tmp", "pgtest-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// query returns the single value of a query on dsn.
func query(t *testing.T, dsn, q string) string {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow(q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

func TestStartInDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(clusterDir(t), "pg")
	c, err := pgtest.Start(t.Context(), pgtest.Options{Dir: dir, Durable: true, Config: "work_mem = 7MB\n"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	dsn, err := c.CreateDatabase(t.Context(), "created")
	if err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{
		"SELECT current_database()":    "created",
		"SHOW fsync":                   "on",
		"SHOW full_page_writes":        "on",
		"SHOW max_connections":         "100",
		"SHOW work_mem":                "7MB",
		"SHOW listen_addresses":        "127.0.0.1",
		"SHOW unix_socket_directories": c.SocketDir(),
	} {
		if got := query(t, dsn, q); got != want {
			t.Errorf("%s = %q, want %q", q, got, want)
		}
	}
	// Another process stops it by its directory, which stays.
	if err := pgtest.StopDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server still running after StopDir: %v", err)
	}
	if err := pgtest.StopDir(dir); err != nil {
		t.Errorf("StopDir on a stopped cluster: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop on a stopped cluster: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		t.Errorf("Stop removed a cluster in the caller's directory: %v", err)
	}
}

func TestInitLeavesTheServerToTheCaller(t *testing.T) {
	t.Parallel()
	c, err := pgtest.Init(t.Context(), pgtest.Options{Dir: filepath.Join(clusterDir(t), "pg")})
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.Command("postgres", "-D", c.DataDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // immediate shutdown
		<-exited
	})
	db, err := sql.Open("postgres", c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for err := db.Ping(); err != nil; err = db.Ping() {
		select {
		case <-exited:
			t.Fatalf("postgres exited: %v", waitErr)
		case <-deadline:
			t.Fatalf("postgres does not answer on port %d: %v", c.Port, err)
		case <-tick.C:
		}
	}
	if got := query(t, c.DSN("postgres"), "SHOW fsync"); got != "off" {
		t.Errorf("SHOW fsync = %q, want off (not Durable)", got)
	}
}
