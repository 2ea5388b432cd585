package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/agent"
	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdEnable registers the machine with the server.
type cmdEnable struct {
	g *global
}

func (c *cmdEnable) command() *cobra.Command {
	return &cobra.Command{
		Use:   "enable <token>",
		Short: "Register this machine with the server using an auth token",
		Long: `enable registers this machine (its id comes from /etc/machine-id unless the machine-id
key is set) with the configured remote-server, using an auth token from the server's
administrator, and makes a first check. Enabling an enabled machine registers it again
and replaces its machine token.`,
		Example: `  sudo livepatch-client enable 0b0d7e4c-3a1f-4a55-9bbf-7f5d1c2e9a10`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef(cmd, "enable takes one argument, the auth token")
			}
			return nil
		},
		RunE: c.run,
	}
}

func (c *cmdEnable) run(cmd *cobra.Command, args []string) error {
	if err := c.g.needRoot(cmd); err != nil {
		return err
	}
	res, err := c.g.agent().Enable(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	verb := "enabled"
	if res.Reenabled {
		verb = "re-enabled"
	}
	fmt.Fprintf(c.g.stdout, "Successfully %s this machine with %s: tier %s.\n", verb, res.Server, res.Tier)
	switch {
	case !res.Checked:
		fmt.Fprintf(c.g.stdout, "No check made: the mode is %s.\n", res.Mode)
	case res.CheckErr != nil:
		fmt.Fprintf(c.g.stderr, "warning: the first check failed: %v\n", res.CheckErr)
	default:
		fmt.Fprintln(c.g.stdout, summary(res.State))
	}
	return nil
}

// summary says in one line what the last check achieved.
func summary(st *agent.State) string {
	switch st.PatchState {
	case server.StateApplied:
		return fmt.Sprintf("Patch %s is applied.", st.Applied.Version)
	case server.StateUnapplied:
		if st.Mode == agent.ModeNoApply {
			return fmt.Sprintf("Patch %s is downloaded and verified; not applied in mode no-apply.", st.Waiting.Version)
		}
		return fmt.Sprintf("Patch %s is downloaded and verified, not applied yet.", st.Waiting.Version)
	case server.StateNothingToApply:
		return "No patch for this kernel yet."
	}
	return "Patch state: " + st.PatchState + "."
}
