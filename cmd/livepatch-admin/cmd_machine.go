package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// cmdMachines groups what an administrator does to enrolled machines.
type cmdMachines struct {
	g *global
}

func (c *cmdMachines) command() *cobra.Command {
	return group("machines", "Manage enrolled machines",
		(&cmdMachinesRemove{g: c.g}).command(),
	)
}

// cmdMachinesRemove unregisters a machine whatever its token: the way back for a machine
// that lost its machine token (the server refuses to enable an enrolled id again without
// it, so that no auth token holder takes over another machine).
type cmdMachinesRemove struct {
	g *global
}

func (c *cmdMachinesRemove) command() *cobra.Command {
	return &cobra.Command{
		Use:   "remove <machine-id>",
		Short: "Unregister a machine, so that it can enable again as a new machine",
		Long: `Unregister a machine whatever its machine token. A machine enabled already
can enable again only with its current machine token; one that lost it (a reinstall
that kept /etc/machine-id, a restored image) is refused until it is removed here.`,
		Args: argNames([]string{"<machine-id>"}),
		RunE: c.run,
	}
}

func (c *cmdMachinesRemove) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if err := cl.RemoveMachine(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Removed machine %s\n", args[0])
	return nil
}
