// Command livepatch-client is the machine agent of the livepatch on-prem server, with the
// subcommands of the real canonical-livepatch client: config, enable, status, refresh,
// disable, and run (the daemon). It keeps its configuration, state, machine token and
// downloaded patches in a state directory (--state-dir, default /var/lib/livepatch-client).
// See docs/client.md for enrolling a machine step by step.
//
// Exit status: 0 on success, 1 on an error (printed as "error: <message>"), 2 on a usage
// error.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/agent"
	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/internal/safeterm"
)

// version is set at build time (-ldflags "-X main.version=..."); it becomes the client
// version reported at every check.
var version string

func main() {
	if version != "" {
		agent.Version = version
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	g := &global{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		euid:   os.Geteuid(),
		opts: agent.Options{
			System: agent.HostSystem(),
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		},
	}
	code := run(ctx, g, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one command line with g and returns the exit code. Tests call it
// in-process with a global whose agent options point at fake trees.
func run(ctx context.Context, g *global, args []string) int {
	// What is printed comes from the server and the patches: no control character of it
	// reaches the terminal.
	g.stdout = safeterm.NewWriter(g.stdout)
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return cli.ExitOK
	}
	if cli.ReportUsage(g.stderr, err) {
		return cli.ExitUsage
	}
	return cli.ReportError(g.stderr, err)
}

// global holds what every command shares: the streams, the global flags and the options
// of the agent.
type global struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	euid           int
	// opts configures the agent; StateDir comes from --state-dir.
	opts agent.Options
	// hup delivers the daemon's "check now" requests; nil: SIGHUP.
	hup <-chan os.Signal

	flagStateDir string
}

// agent returns the agent of the state directory.
func (g *global) agent() *agent.Agent {
	o := g.opts
	o.StateDir = g.flagStateDir
	return agent.New(o)
}

// needRoot refuses commands that write the default state directory as a non-root user,
// before they do anything, with the fix in the message.
func (g *global) needRoot(cmd *cobra.Command) error {
	if g.euid != 0 && g.flagStateDir == agent.DefaultStateDir {
		return fmt.Errorf("%s must be run as root: try sudo %s (or use --state-dir DIR)", cmd.CommandPath(), cmd.CommandPath())
	}
	return nil
}

func newRoot(g *global) *cobra.Command {
	root := &cobra.Command{
		Use:   "livepatch-client",
		Short: "Apply live kernel patches from a livepatch on-prem server",
		Long: `livepatch-client keeps this machine's kernel patched from a livepatch on-prem server:
it checks in periodically, downloads the patch its tier offers, verifies it and applies it.

Enrol a machine:
  sudo livepatch-client config remote-server=http://livepatch.example.com
  sudo livepatch-client enable <token>
  livepatch-client status --verbose`,
		Version:       agent.Version,
		Args:          cli.RootArgs,
		RunE:          func(cmd *cobra.Command, args []string) error { return cli.Usagef(cmd, "missing command") },
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(cli.FlagError)
	root.PersistentFlags().StringVar(&g.flagStateDir, "state-dir", agent.DefaultStateDir, "directory of the client's config, state, token and patches")
	root.AddCommand(
		(&cmdConfig{g: g}).command(),
		(&cmdEnable{g: g}).command(),
		(&cmdDisable{g: g}).command(),
		(&cmdStatus{g: g}).command(),
		(&cmdRefresh{g: g}).command(),
		(&cmdRun{g: g}).command(),
	)
	return root
}
