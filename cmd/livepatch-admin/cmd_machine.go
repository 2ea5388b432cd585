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
	cmd := group("machines", "Show, move, tag and remove enrolled machines",
		(&cmdMachinesShow{g: c.g}).command(),
		(&cmdMachinesHistory{g: c.g}).command(),
		(&cmdMachinesMove{g: c.g}).command(),
		(&cmdMachinesTag{g: c.g}).command(),
		(&cmdMachinesRemove{g: c.g}).command(),
	)
	cmd.Aliases = []string{"machine"}
	return cmd
}

// cmdMachinesRemove unregisters a machine whatever its token: the way back for a machine
// that lost its machine token (the server refuses to enable an enrolled id again without
// it, so that no auth token holder takes over another machine).
type cmdMachinesRemove struct {
	g *global
}

func (c *cmdMachinesRemove) command() *cobra.Command {
	return &cobra.Command{
		Use:     "remove <machine-id>",
		Aliases: []string{"delete"},
		Short:   "Unregister a machine, so that it can enable again as a new machine",
		Long: `Unregister a machine whatever its machine token, and forget its history of
changes. It no longer counts against its auth token's --max-machines; if it comes
back, it enables again with its auth token as a new machine. A machine enabled
already can enable again only with its current machine token; one that lost it (a
reinstall that kept /etc/machine-id, a restored image) is refused until it is
removed here.`,
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
