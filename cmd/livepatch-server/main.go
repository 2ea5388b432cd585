// Command livepatch-server is the livepatch on-prem server: it serves the admin and client
// APIs and patch downloads (serve), and manages its database schema (schema upgrade |
// check | version). The livepatch charm bundles it and runs it on every unit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "2.0.0-dev"

const usage = `Usage:
  livepatch-server serve --config FILE
  livepatch-server schema upgrade  (--config FILE | --db DSN) [--format text|json]
  livepatch-server schema check    (--config FILE | --db DSN)
  livepatch-server schema version  (--config FILE | --db DSN) [--format text|json]
  livepatch-server storage migrate --from-config FILE --to-config FILE [--format text|json]
  livepatch-server storage check --config FILE
  livepatch-server keys generate --out DIR
  livepatch-server version

The database DSN may also come from LIVEPATCH_DATABASE_URL. Prefer --config: a DSN on the
command line shows its password to every user of the machine.
`

// exitCode lets a command choose its exit status (schema check exits 2 when behind).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// usageError is a bad command line: exit 2 with the usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes a command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	if code, ok := errors.AsType[exitCode](err); ok {
		return int(code)
	}
	if ue, ok := errors.AsType[usageError](err); ok {
		fmt.Fprintf(stderr, "error: %s\n\n%s", ue.msg, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no command given"}
	}
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "schema":
		if len(args) < 2 {
			return usageError{"schema needs a subcommand: upgrade, check or version"}
		}
		return cmdSchema(ctx, args[1], args[2:], stdout)
	case "storage":
		if len(args) < 2 {
			return usageError{"storage needs a subcommand: migrate or check"}
		}
		switch args[1] {
		case "migrate":
			return cmdStorageMigrate(ctx, args[2:], stdout)
		case "check":
			return cmdStorageCheck(ctx, args[2:], stdout, stderr)
		}
		return usageError{fmt.Sprintf("unknown storage subcommand %q (want migrate or check)", args[1])}
	case "keys":
		return cmdKeys(args[1:], stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		return flag.ErrHelp
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// parseFlags parses a flag set, turning problems into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
