package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "tool", Args: cli.RootArgs, RunE: func(*cobra.Command, []string) error { return nil },
		SilenceErrors: true, SilenceUsage: true}
	root.SetFlagErrorFunc(cli.FlagError)
	root.AddCommand(&cobra.Command{Use: "status", Args: cli.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }})
	return root
}

// TestUsageErrors: unknown commands (with a suggestion), extra arguments and bad flags are
// usage errors, reported with the message and the usage; other errors are not.
func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"statsu"}, `error: unknown command "statsu" for "tool" (did you mean "status"?)` + "\nUsage:"},
		{[]string{"status", "x"}, `error: unexpected argument "x"` + "\nUsage:\n  tool status"},
		{[]string{"--bogus"}, "error: unknown flag: --bogus\nUsage:"},
	} {
		root := newRoot()
		root.SetArgs(tt.args)
		err := root.Execute()
		var stderr bytes.Buffer
		if !cli.ReportUsage(&stderr, err) || !strings.HasPrefix(stderr.String(), tt.want) {
			t.Errorf("%q: err %v, reported %q, want prefix %q", tt.args, err, stderr.String(), tt.want)
		}
	}
	var stderr bytes.Buffer
	ue := cli.Usagef(newRoot(), "bad tier %q", "x")
	ue.Detail = "Tiers: a, b"
	if !cli.ReportUsage(&stderr, fmt.Errorf("wrapped: %w", ue)) || !strings.HasPrefix(stderr.String(), "error: bad tier \"x\"\nTiers: a, b\nUsage:") {
		t.Errorf("with detail: %q", stderr.String())
	}
	stderr.Reset()
	if cli.ReportUsage(&stderr, errors.New("boom")) || stderr.Len() != 0 {
		t.Errorf("a plain error was reported as a usage error: %q", stderr.String())
	}
	if code := cli.ReportError(&stderr, errors.New("server said \x1b[31mred")); code != cli.ExitError || stderr.String() != "error: server said \\x1b[31mred\n" {
		t.Errorf("ReportError: %d %q", code, stderr.String())
	}
}
