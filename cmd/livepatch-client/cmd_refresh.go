package main

import (
	"fmt"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/spf13/cobra"
)

// cmdRefresh checks in now.
type cmdRefresh struct {
	g *global
}

func (c *cmdRefresh) command() *cobra.Command {
	return &cobra.Command{
		Use:   "refresh",
		Short: "Check for a patch now",
		Long: `refresh checks in with the server now: it reports this machine's status, then
downloads, verifies and (in mode normal) applies the patch the server offers.`,
		Args: cli.NoArgs,
		RunE: c.run,
	}
}

func (c *cmdRefresh) run(cmd *cobra.Command, args []string) error {
	if err := c.g.needRoot(cmd); err != nil {
		return err
	}
	st, err := c.g.agent().Refresh(cmd.Context())
	if err != nil {
		return err
	}
	fmt.Fprintln(c.g.stdout, summary(st))
	return nil
}
