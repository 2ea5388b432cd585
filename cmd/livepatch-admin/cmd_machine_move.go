package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// machineFilterFlags are the flags that select machines, in reports and bulk moves.
type machineFilterFlags struct {
	tier, version, state, kernel, hostname string
	seenBefore, seenAfter                  string
	tags                                   []string
}

func (f *machineFilterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.tier, "tier", "", "machines of this tier")
	fs.StringVar(&f.version, "version", "", "machines running this patch version")
	fs.StringVar(&f.state, "state", "", "machines in this patch state")
	fs.StringVar(&f.kernel, "kernel", "", "machines running this kernel (uname -r)")
	fs.StringVar(&f.hostname, "hostname", "", "the machines of this hostname")
	fs.StringArrayVar(&f.tags, "tag", nil, "machines with tag key=value (repeat: every tag must match)")
	fs.StringVar(&f.seenBefore, "seen-before", "", "machines last seen longer ago than this age (7d, 36h), or never")
	fs.StringVar(&f.seenAfter, "seen-after", "", "machines last seen within this age (1h, 30d)")
}

// set reports whether any filter flag is set.
func (f *machineFilterFlags) set() bool {
	return f.tier != "" || f.version != "" || f.state != "" || f.kernel != "" || f.hostname != "" ||
		len(f.tags) > 0 || f.seenBefore != "" || f.seenAfter != ""
}

// query validates the flags (a usage error for a malformed value) and returns the
// filter as the API takes it.
func (f *machineFilterFlags) query(cmd *cobra.Command) (server.MachineQuery, error) {
	if f.state != "" && !slices.Contains(server.PatchStates, f.state) {
		return server.MachineQuery{}, cli.Usagef(cmd, "invalid --state %q: want one of %s", f.state, strings.Join(server.PatchStates, ", "))
	}
	for _, age := range []struct{ flag, value string }{{"--seen-before", f.seenBefore}, {"--seen-after", f.seenAfter}} {
		if age.value == "" {
			continue
		}
		if _, err := server.ParseAge(age.value); err != nil {
			return server.MachineQuery{}, cli.Usagef(cmd, "invalid %s %q: want a duration such as 7d, 36h or 90m", age.flag, age.value)
		}
	}
	for _, kv := range f.tags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return server.MachineQuery{}, cli.Usagef(cmd, "invalid --tag %q: want key=value", kv)
		}
		if err := server.CheckTag(k, v); err != nil {
			return server.MachineQuery{}, cli.Usagef(cmd, "%s", server.ErrorMessage(err))
		}
	}
	return server.MachineQuery{
		Tier: f.tier, PatchVersion: f.version, PatchState: f.state, Kernel: f.kernel,
		Hostname: f.hostname, Tags: f.tags, SeenBefore: f.seenBefore, SeenAfter: f.seenAfter,
	}, nil
}

// cmdMachinesMove moves one machine, or the machines a filter selects, to another tier.
type cmdMachinesMove struct {
	g      *global
	filter machineFilterFlags
}

func (c *cmdMachinesMove) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "move (<machine-id> | <filter flags>) <tier>",
		Short: "Move a machine, or the machines a filter selects, to another tier",
		Long: `Move a machine to another tier without touching it: it gets the new tier's
patches from its next check-in, and the move is in its history. With filter flags
instead of a machine id, move every machine they select (the server moves them in
batches of a few thousand per transaction). Enabling again with an auth token
moves a machine to the token's tier.`,
		Example: `  livepatch-admin machines move 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e stable
  livepatch-admin machines move --tier beta --state applied --seen-after 1d stable
  livepatch-admin machines move --tag role=web candidate`,
		Args:              cobra.ArbitraryArgs,
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(1),
	}
	c.filter.register(cmd.Flags())
	return cmd
}

func (c *cmdMachinesMove) run(cmd *cobra.Command, args []string) error {
	if !c.filter.set() {
		if err := argNames([]string{"<machine-id>", "<tier>"})(cmd, args); err != nil {
			return err
		}
		cl, err := c.g.admin()
		if err != nil {
			return err
		}
		m, err := cl.MoveMachine(cmd.Context(), args[0], args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(c.g.stdout, "Moved machine %s to %s\n", m.ID, m.Tier)
		return nil
	}
	if len(args) > 1 {
		return cli.Usagef(cmd, "unexpected argument %q: filter flags select the machines, name only the tier", args[0])
	}
	if err := argNames([]string{"<tier>"})(cmd, args); err != nil {
		return err
	}
	q, err := c.filter.query(cmd)
	if err != nil {
		return err
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	n, err := cl.MoveMachines(cmd.Context(), q, args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Moved %s to %s\n", plural(n, "machine", "machines"), args[0])
	return nil
}

// cmdMachinesTag sets and removes a machine's tags.
type cmdMachinesTag struct {
	g *global
}

func (c *cmdMachinesTag) command() *cobra.Command {
	return &cobra.Command{
		Use:   "tag <machine-id> <key>=<value>... | <key>-...",
		Short: "Set (key=value) or remove (key-) tags of a machine",
		Long: `Set tags of a machine with key=value and remove them with key- (a key is up to
63 letters, digits, dots, dashes, underscores and slashes; a machine has at most
32 tags). Reports and bulk moves select machines by tag with --tag key=value.`,
		Example: `  livepatch-admin machines tag 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e role=web site=paris
  livepatch-admin machines tag 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e site-`,
		Args: argNames([]string{"<machine-id>", "<key>=<value>"}, "..."),
		RunE: c.run,
	}
}

func (c *cmdMachinesTag) run(cmd *cobra.Command, args []string) error {
	set := map[string]string{}
	var remove []string
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			k, ok = strings.CutSuffix(a, "-")
			if !ok {
				return cli.Usagef(cmd, "invalid tag %q: want key=value to set or key- to remove", a)
			}
			remove = append(remove, k)
		} else {
			set[k] = v
		}
		if err := server.CheckTag(k, v); err != nil {
			return cli.Usagef(cmd, "%s", server.ErrorMessage(err))
		}
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	m, err := cl.TagMachine(cmd.Context(), args[0], set, remove)
	if err != nil {
		return err
	}
	return c.g.show(m, func(w io.Writer) { fmt.Fprintf(w, "Tags of machine %s: %s\n", m.ID, orDash(tagList(m.Tags))) })
}
