package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// cmdReport groups the reports on machines and downstream servers.
type cmdReport struct {
	g *global
}

func (c *cmdReport) command() *cobra.Command {
	return group("report", "Report on enrolled machines and downstream servers",
		(&cmdReportMachines{g: c.g}).command(),
		(&cmdReportPatchHealth{g: c.g}).command(),
		(&cmdReportKernels{g: c.g}).command(),
		(&cmdReportDownstream{g: c.g}).command(),
	)
}

// cmdReportMachines lists the machines a filter selects.
type cmdReportMachines struct {
	g      *global
	filter machineFilterFlags
}

func (c *cmdReportMachines) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "machines [<tier> [<patch-version> [<patch-state>]]]",
		Short: "List machines by tier, patch, kernel, hostname, tag or last-seen age",
		Long: `List machines with their hostname, kernel, patch state and last check-in,
selected by tier, patch version and state (as arguments or flags), kernel,
hostname, tags and last-seen age. Patch states:
  ` + strings.Join(server.PatchStates[:4], ", ") + `,
  ` + strings.Join(server.PatchStates[4:], ", ") + `.
Ages are a number of days (7d) or a duration (36h, 90m), by the server's clock;
--seen-before also lists machines that never checked in.`,
		Example: `  livepatch-admin report machines stable
  livepatch-admin report machines stable 107.1 apply-failed
  livepatch-admin report machines --seen-before 7d
  livepatch-admin report machines --tag role=web --seen-after 1h --format json`,
		Args:              argNames(nil, "<tier>", "<patch-version>", "<patch-state>"),
		RunE:              c.run,
		ValidArgsFunction: c.completeArgs,
	}
	c.filter.register(cmd.Flags())
	return cmd
}

// completeArgs offers the tiers, then nothing for the version, then the patch states.
func (c *cmdReportMachines) completeArgs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 2 {
		return withPrefix(server.PatchStates, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	return c.g.completeTiers(0)(cmd, args, toComplete)
}

// Paging of the machine lists.
const (
	machinesPageSize = 1000
	machinesMaxPages = 10_000
)

// listMachines fetches every page of a machine list (fetch returns the page after a
// cursor and the next cursor, empty on the last page) and shows it: a table with header
// and a row per machine, or "No machines.".
func listMachines[T any](g *global, fetch func(cl *client.Client, after string) ([]T, string, error), header string, row func(T) []string) error {
	cl, err := g.admin()
	if err != nil {
		return err
	}
	var machines []T
	after := ""
	for page := 0; ; page++ {
		if page == machinesMaxPages {
			return fmt.Errorf("cannot list machines: more than %d pages", machinesMaxPages)
		}
		items, next, err := fetch(cl, after)
		if err != nil {
			return err
		}
		machines = append(machines, items...)
		if next == "" {
			break
		}
		if next == after {
			return fmt.Errorf("cannot list machines: the server repeated the page after %q", next)
		}
		after = next
	}
	return g.show(orEmpty(machines), func(w io.Writer) {
		if len(machines) == 0 {
			fmt.Fprintln(w, "No machines.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, header)
		for _, m := range machines {
			fmt.Fprintln(tw, strings.Join(row(m), "\t"))
		}
		tw.Flush()
	})
}

// orDash shows an absent value in a table.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cmdReportMachines) run(cmd *cobra.Command, args []string) error {
	if len(args) > 2 && !slices.Contains(server.PatchStates, args[2]) {
		return cli.Usagef(cmd, "invalid patch state %q: want one of %s", args[2], strings.Join(server.PatchStates, ", "))
	}
	for i, p := range []*string{&c.filter.tier, &c.filter.version, &c.filter.state} {
		if i >= len(args) {
			break
		}
		if *p != "" {
			return cli.Usagef(cmd, "%s is given both as an argument and a flag", []string{"tier", "patch version", "patch state"}[i])
		}
		*p = args[i]
	}
	q, err := c.filter.query(cmd)
	if err != nil {
		return err
	}
	return listMachines(c.g, func(cl *client.Client, after string) ([]server.Machine, string, error) {
		return cl.FindMachines(cmd.Context(), q, after, machinesPageSize)
	}, "MACHINE\tHOSTNAME\tTIER\tKERNEL\tPATCH\tSTATE\tLAST SEEN", func(m server.Machine) []string {
		return []string{m.ID, orDash(m.Hostname), m.Tier, orDash(m.Kernel), orDash(m.PatchVersion), orDash(m.PatchState), fmtTime(m.LastSeen)}
	})
}

// cmdReportPatchHealth counts the patch states of the machines running a patch.
type cmdReportPatchHealth struct {
	g *global
}

func (c *cmdReportPatchHealth) command() *cobra.Command {
	return &cobra.Command{
		Use:               "patch-health <tier> <patch-version>",
		Short:             "Count the patch states of the machines of a tier running a patch",
		Example:           "  livepatch-admin report patch-health stable 107.1",
		Args:              argNames([]string{"<tier>", "<patch-version>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
}

func (c *cmdReportPatchHealth) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	h, err := cl.PatchHealth(cmd.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	if h.States == nil {
		h.States = map[string]int{}
	}
	return c.g.show(h, func(w io.Writer) {
		fmt.Fprintf(w, "Patch %s in tier %s: %s\n", h.Version, h.Tier, plural(h.Total, "machine", "machines"))
		defer rolloutSummary(w, h.Rollout) // cmd_rollout.go
		states := statesWithMachines(h.States)
		if len(states) == 0 {
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "STATE\tMACHINES")
		for _, s := range states {
			fmt.Fprintf(tw, "%s\t%d\n", s, h.States[s])
		}
		tw.Flush()
	})
}

// statesWithMachines returns the patch states counts has machines in: known ones in their
// documented order, then others by name.
func statesWithMachines(counts map[string]int) []string {
	var states, others []string
	for _, s := range server.PatchStates {
		if counts[s] > 0 {
			states = append(states, s)
		}
	}
	for s, n := range counts {
		if n > 0 && !slices.Contains(server.PatchStates, s) {
			others = append(others, s)
		}
	}
	slices.Sort(others)
	return append(states, others...)
}

// cmdReportKernels counts the machines per kernel.
type cmdReportKernels struct {
	g *global
}

func (c *cmdReportKernels) command() *cobra.Command {
	return &cobra.Command{
		Use:   "kernels",
		Short: "Count the enrolled machines per kernel and architecture",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdReportKernels) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	kernels, err := cl.Kernels(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(kernels), func(w io.Writer) {
		if len(kernels) == 0 {
			fmt.Fprintln(w, "No machines.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "KERNEL\tARCH\tMACHINES")
		for _, k := range kernels {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", k.Kernel, k.Architecture, k.Machines)
		}
		tw.Flush()
	})
}
