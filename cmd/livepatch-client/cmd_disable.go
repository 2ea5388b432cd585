package main

import (
	"fmt"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/spf13/cobra"
)

// cmdDisable unregisters the machine.
type cmdDisable struct {
	g *global
}

func (c *cmdDisable) command() *cobra.Command {
	return &cobra.Command{
		Use:   "disable",
		Short: "Unregister this machine and forget its machine token",
		Long: `disable unregisters this machine from the server and forgets its machine token.
Patches already applied stay loaded until the next reboot. When the server no longer
knows the machine (it refuses the token), the token is forgotten locally anyway.`,
		Args: cli.NoArgs,
		RunE: c.run,
	}
}

func (c *cmdDisable) run(cmd *cobra.Command, args []string) error {
	if err := c.g.needRoot(cmd); err != nil {
		return err
	}
	res, err := c.g.agent().Disable(cmd.Context())
	if err != nil {
		return err
	}
	switch {
	case !res.WasEnabled:
		fmt.Fprintln(c.g.stdout, "This machine is not enabled: nothing to do.")
	case res.Refused != "":
		fmt.Fprintf(c.g.stdout, "The server refused the machine token (%s); forgot it locally: this machine is disabled.\n", res.Refused)
	default:
		fmt.Fprintln(c.g.stdout, "Successfully disabled this machine.")
	}
	return nil
}
