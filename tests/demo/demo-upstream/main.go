// Command demo-upstream runs the upstream livepatch server of `make demo`: another
// instance of livepatch-server outside the model, with its own PostgreSQL cluster, a
// signing key and demo patches (tests/e2e/deploy.DemoPatches), checking resource tokens
// with the contracts stand-in. Both keep running after the command exits.
//
//	demo-upstream start --dir DIR --server build/bin/livepatch-server --contracts-url URL
//	demo-upstream stop --dir DIR
//
// start prints shell assignments (UPSTREAM_URL, UPSTREAM_PUBLIC_KEY, UPSTREAM_ADMIN,
// UPSTREAM_PASSWORD) and writes them to DIR/upstream.env; stop stops the server and the
// cluster and is a no-op when nothing runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "demo-upstream: %v\n", err)
		os.Exit(1)
	}
}

// postgresDirFile records where the cluster lives (under /tmp, so that the postgres user
// can reach it whatever the permissions of the checkout).
const postgresDirFile = "postgres-dir"

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: demo-upstream start|stop --dir DIR [--server PATH --contracts-url URL]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory")
	serverBin := fs.String("server", "", "livepatch-server binary")
	contractsURL := fs.String("contracts-url", "", "contracts server URL")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	switch args[0] {
	case "start":
		if *serverBin == "" || *contractsURL == "" {
			return errors.New("start needs --server and --contracts-url")
		}
		return start(abs, *serverBin, *contractsURL)
	case "stop":
		return stop(abs)
	}
	return fmt.Errorf("unknown command %q: want start or stop", args[0])
}

func start(dir, serverBin, contractsURL string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pgDir, err := os.MkdirTemp("", "lp-demo-pg-")
	if err != nil {
		return err
	}
	if err := os.Chmod(pgDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, postgresDirFile), []byte(pgDir+"\n"), 0o644); err != nil {
		return err
	}
	pg, err := deploy.StartPostgres(pgDir)
	if err != nil {
		return err
	}
	dsn, err := pg.CreateDatabase("upstream")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u, err := deploy.StartUpstream(ctx, deploy.UpstreamOptions{
		Dir:          dir,
		ServerBinary: serverBin,
		DSN:          dsn,
		ContractsURL: contractsURL,
		Detach:       true,
	})
	if err != nil {
		return err
	}
	env := fmt.Sprintf("UPSTREAM_URL=%s\nUPSTREAM_PUBLIC_KEY=%s\nUPSTREAM_ADMIN=%s\nUPSTREAM_PASSWORD=%s\nUPSTREAM_LOG=%s\n",
		u.URL, u.PublicKey, u.AdminUser, u.AdminPassword, u.LogPath)
	if err := os.WriteFile(filepath.Join(dir, "upstream.env"), []byte(env), 0o600); err != nil {
		return err
	}
	fmt.Print(env)
	return nil
}

func stop(dir string) error {
	err := deploy.StopUpstream(dir)
	data, rerr := os.ReadFile(filepath.Join(dir, postgresDirFile))
	if rerr != nil {
		return err
	}
	pgDir := strings.TrimSpace(string(data))
	if perr := deploy.StopPostgres(pgDir); perr != nil && err == nil {
		err = perr
	}
	if strings.HasPrefix(filepath.Base(pgDir), "lp-demo-pg-") {
		os.RemoveAll(pgDir)
	}
	os.Remove(filepath.Join(dir, postgresDirFile))
	return err
}
