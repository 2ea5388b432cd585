package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/spf13/cobra"
)

// cmdRun is the daemon.
type cmdRun struct {
	g *global
}

func (c *cmdRun) command() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: check every check-interval and on SIGHUP",
		Long: `run is the daemon a service manager starts: it checks at once, then every
check-interval minutes (or as the server advises when check-interval is not set) and
whenever it receives SIGHUP. It exits 0 on SIGTERM. It reads the configuration again
before every check. In mode no-refresh it makes no check-ins but applies a patch it
verified before (after a reboot); in mode stop it does nothing.`,
		Args: cli.NoArgs,
		RunE: c.run,
	}
}

func (c *cmdRun) run(cmd *cobra.Command, args []string) error {
	if err := c.g.needRoot(cmd); err != nil {
		return err
	}
	hup := c.g.hup
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	return c.g.agent().Run(cmd.Context(), hup)
}
