package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdTier groups the tier commands.
type cmdTier struct {
	g *global
}

func (c *cmdTier) command() *cobra.Command {
	return group("tier", "List, add and delete tiers",
		(&cmdTierList{g: c.g}).command(),
		(&cmdTierAdd{g: c.g}).command(),
		(&cmdTierDelete{g: c.g}).command(),
		(&cmdTierPatches{g: c.g}).command(),
	)
}

// cmdTierList lists the tiers in promotion order.
type cmdTierList struct {
	g *global
}

func (c *cmdTierList) command() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the tiers in promotion order",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdTierList) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tiers, err := cl.Tiers(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(tiers), func(w io.Writer) {
		if len(tiers) == 0 {
			fmt.Fprintln(w, "No tiers.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "POSITION\tNAME")
		for _, t := range tiers {
			fmt.Fprintf(tw, "%d\t%s\n", t.Position, t.Name)
		}
		tw.Flush()
	})
}

// cmdTierAdd adds a tier to the promotion order.
type cmdTierAdd struct {
	g         *global
	flagAfter string
	flagFirst bool
}

func (c *cmdTierAdd) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add <name>",
		Short: "Add a tier (last, unless --after or --first)",
		Example: `  livepatch-admin tier add qa --after beta
  livepatch-admin tier add canary --first`,
		Args: argNames([]string{"<name>"}),
		RunE: c.run,
	}
	cmd.Flags().StringVar(&c.flagAfter, "after", "", "place the tier right after this one")
	cmd.Flags().BoolVar(&c.flagFirst, "first", false, "place the tier first, where new patches land")
	cmd.RegisterFlagCompletionFunc("after", c.g.completeTierFlag)
	return cmd
}

func (c *cmdTierAdd) run(cmd *cobra.Command, args []string) error {
	if c.flagFirst && c.flagAfter != "" {
		return cli.Usagef(cmd, "--after and --first cannot be used together")
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	t, err := cl.AddTier(cmd.Context(), args[0], server.TierPlacement{After: c.flagAfter, First: c.flagFirst})
	if err != nil {
		return err
	}
	return c.g.show(t, func(w io.Writer) {
		fmt.Fprintf(w, "Added tier %s at position %d\n", t.Name, t.Position)
	})
}

// cmdTierDelete deletes a tier.
type cmdTierDelete struct {
	g *global
}

func (c *cmdTierDelete) command() *cobra.Command {
	return &cobra.Command{
		Use:   "delete <name>",
		Short: "Delete a tier that no machine or token uses",
		Long: `Delete a tier. The server refuses while machines, auth tokens or sync tokens
use it; its patches move to the previous tier.`,
		Args:              argNames([]string{"<name>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
}

func (c *cmdTierDelete) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if err := cl.DeleteTier(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Deleted tier %s\n", args[0])
	return nil
}

// cmdTierPatches lists the patches available to a tier.
type cmdTierPatches struct {
	g *global
}

func (c *cmdTierPatches) command() *cobra.Command {
	return &cobra.Command{
		Use:               "patches <tier>",
		Short:             "List the patches available to machines of a tier",
		Args:              argNames([]string{"<tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
}

func (c *cmdTierPatches) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	patches, err := cl.TierPatches(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(patches), func(w io.Writer) { patchTable(w, patches) })
}
