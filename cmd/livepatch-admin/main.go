// Command livepatch-admin administers a livepatch on-prem server: it logs in, manages
// tiers, patches and client auth tokens, and reads the machine reports, through the HTTP
// API (package server/client). See docs/admin.md for an operator's tour.
//
// Exit status: 0 on success, 1 on an error (printed as "error: <message>"), 2 on a usage
// error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/internal/safeterm"
	"github.com/livepatch-onprem/livepatch/server/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one livepatch-admin command line and returns its exit code. Tests call it
// in-process; getenv stands for os.Getenv.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	// What is printed comes from the server: no control character of it reaches the
	// terminal.
	stdout = safeterm.NewWriter(stdout)
	g := &global{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return cli.ExitOK
	}
	if errors.Is(err, errReported) {
		return cli.ExitError
	}
	if cli.ReportUsage(stderr, err) {
		return cli.ExitUsage
	}
	if apiErr, ok := errors.AsType[*client.APIError](err); ok && apiErr.Status == 401 && g.usedSession {
		g.forgetSession()
		fmt.Fprintln(stderr, "error: not logged in or session expired: run livepatch-admin login")
		return cli.ExitError
	}
	if errors.Is(err, errNotLoggedIn) {
		fmt.Fprintln(stderr, "error: not logged in or session expired: run livepatch-admin login")
		return cli.ExitError
	}
	if _, ok := errors.AsType[*client.TimeoutError](err); ok {
		fmt.Fprintf(stderr, "error: %s (wait longer with --timeout or %s)\n", safeterm.String(err.Error()), envTimeout)
		return cli.ExitError
	}
	return cli.ReportError(stderr, err)
}

// errReported is returned by commands that printed their own error messages.
var errReported = errors.New("error already reported")

// errNotLoggedIn means there is no cached session for the server.
var errNotLoggedIn = errors.New("not logged in")
