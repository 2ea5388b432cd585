// Package cli holds what the project's cobra command-line tools (livepatch-admin,
// livepatch-client) share: the exit codes, the usage error (exit 2 with the command's
// usage), the argument checks that make one, and the report of an error at exit.
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/safeterm"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed; "error: <message>" says why
	ExitUsage = 2 // the command line is wrong; the message and the usage say how
)

// UsageError is a command line the command cannot run: exit 2 with the usage.
type UsageError struct {
	Cmd    *cobra.Command
	Msg    string
	Detail string // printed between the message and the usage, when set
}

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a usage error of cmd with a formatted message.
func Usagef(cmd *cobra.Command, format string, args ...any) *UsageError {
	return &UsageError{Cmd: cmd, Msg: fmt.Sprintf(format, args...)}
}

// FlagError is a root command's flag error function: a bad flag is a usage error.
func FlagError(cmd *cobra.Command, err error) error {
	return &UsageError{Cmd: cmd, Msg: err.Error()}
}

// RootArgs is the Args of a command with subcommands: it refuses unknown ones.
func RootArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return UnknownCommand(cmd, args[0])
}

// UnknownCommand is the usage error for an unknown subcommand name, suggesting a close one.
func UnknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	cmd.SuggestionsMinimumDistance = 2
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return Usagef(cmd, "%s", msg)
}

// NoArgs is the Args of commands that take none.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef(cmd, "unexpected argument %q", args[0])
	}
	return nil
}

// ReportUsage prints a usage error in err (message, detail, usage) to stderr and reports
// whether there was one; the command then exits ExitUsage.
func ReportUsage(stderr io.Writer, err error) bool {
	ue, ok := errors.AsType[*UsageError](err)
	if !ok {
		return false
	}
	fmt.Fprintf(stderr, "error: %s\n", ue.Msg)
	if ue.Detail != "" {
		fmt.Fprintln(stderr, ue.Detail)
	}
	fmt.Fprint(stderr, ue.Cmd.UsageString())
	return true
}

// ReportError prints err as "error: <message>", its control characters escaped (the
// message may quote a server), and returns ExitError.
func ReportError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "error: %s\n", safeterm.String(err.Error()))
	return ExitError
}
