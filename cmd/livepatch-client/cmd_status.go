package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/agent"
	"github.com/livepatch-onprem/livepatch/internal/cli"
)

// cmdStatus shows the state of the machine and its patches.
type cmdStatus struct {
	g           *global
	flagVerbose bool
	flagFormat  string
}

func (c *cmdStatus) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of this machine's livepatching",
		Long: `status shows the last check, the kernel, how the server check-in went, the patch
state and version, the tier and the machine id; --verbose adds the server, the mode,
machine facts and the fixes of the patch. It needs no root.`,
		Args: cli.NoArgs,
		RunE: c.run,
	}
	cmd.Flags().BoolVar(&c.flagVerbose, "verbose", false, "also show the server, machine facts and the patch's fixes")
	cmd.Flags().StringVar(&c.flagFormat, "format", agent.FormatHumane, "output format: "+strings.Join(agent.Formats, ", "))
	return cmd
}

func (c *cmdStatus) run(cmd *cobra.Command, args []string) error {
	if !slices.Contains(agent.Formats, c.flagFormat) {
		return cli.Usagef(cmd, "invalid format %q: want one of %s", c.flagFormat, strings.Join(agent.Formats, ", "))
	}
	a := c.g.agent()
	st, err := a.State()
	if err != nil {
		return err
	}
	return agent.WriteStatus(c.g.stdout, st, c.flagFormat, c.flagVerbose, a.Now())
}
