package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdMachinesShow shows one machine: its status, tier, token, first and last seen, and
// its history of changes.
type cmdMachinesShow struct {
	g       *global
	history int
}

func (c *cmdMachinesShow) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show <machine-id>",
		Short: "Show a machine: its status, tier, token, identity and history of changes",
		Long: `Show a machine as the server knows it: its tier and the auth token it enabled
with, when it was first and last seen, its hostname, cloud placement and tags, its
kernel and patch state, and its newest changes (enrolment, patch state, patch
version or kernel changed by a check-in, moves between tiers), newest first.`,
		Example: "  livepatch-admin machines show 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e",
		Args:    argNames([]string{"<machine-id>"}),
		RunE:    c.run,
	}
	cmd.Flags().IntVar(&c.history, "history", 20, "newest changes to show (1-10000)")
	return cmd
}

func (c *cmdMachinesShow) run(cmd *cobra.Command, args []string) error {
	if c.history < 1 || c.history > 10000 {
		return cli.Usagef(cmd, "invalid --history %d: want 1 to 10000", c.history)
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	d, err := cl.Machine(cmd.Context(), args[0], c.history)
	if err != nil {
		return err
	}
	d.History = orEmpty(d.History)
	return c.g.show(d, func(w io.Writer) {
		m := d.Machine
		tw := newTable(w)
		for _, r := range [][2]string{
			{"machine", m.ID},
			{"hostname", orDash(m.Hostname)},
			{"cloud", orDash(cloudPlace(m.Cloud))},
			{"tags", orDash(tagList(m.Tags))},
			{"tier", m.Tier},
			{"token", m.TokenID},
			{"first seen", fmtTime(m.FirstSeen)},
			{"enabled", fmtTime(m.EnabledAt)},
			{"last seen", fmtTime(m.LastSeen)},
			{"kernel", orDash(strings.TrimSpace(m.Kernel + " " + m.Architecture))},
			{"client", orDash(m.ClientVersion)},
			{"patch", orDash(m.PatchVersion)},
			{"state", orDash(m.PatchState)},
			{"state since", fmtTime(m.StateSince)},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
		}
		tw.Flush()
		fmt.Fprintln(w, "history:")
		if len(d.History) == 0 {
			fmt.Fprintln(w, "  No changes recorded.")
			return
		}
		writeEvents(w, "  ", d.History)
	})
}

// writeEvents writes history events as a table, each line after indent.
func writeEvents(w io.Writer, indent string, events []server.MachineEvent) {
	tw := newTable(w)
	fmt.Fprintln(tw, indent+"TIME\tCAUSE\tTIER\tKERNEL\tPATCH\tSTATE")
	for _, e := range events {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\n", indent, fmtTime(e.Time), e.Cause, orDash(e.Tier),
			orDash(e.Kernel), orDash(e.PatchVersion), orDash(e.PatchState))
	}
	tw.Flush()
}

// cloudPlace shows a cloud placement as cloud/region/zone.
func cloudPlace(c server.Cloud) string {
	var parts []string
	for _, p := range []string{c.Name, c.Region, c.Zone} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/")
}

// tagList shows tags as k=v, by key.
func tagList(tags map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, k+"="+tags[k])
	}
	return strings.Join(out, ",")
}

// cmdMachinesHistory lists a machine's history: its changes, or every check-in.
type cmdMachinesHistory struct {
	g     *global
	all   bool
	limit int
}

func (c *cmdMachinesHistory) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history <machine-id>",
		Short: "List a machine's changes of state, or with --all every check-in",
		Long: `List a machine's history, newest first: one row per change (enrolment, a
check-in that changed its kernel, patch state or patch version, a move between
tiers), or with --all one row per check-in still in the history
(machine-reports.retention-days).`,
		Example: `  livepatch-admin machines history 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e
  livepatch-admin machines history 4b1e6ce6f1ad4d4b9a3e1b8c0f2f8f8e --all --limit 50`,
		Args: argNames([]string{"<machine-id>"}),
		RunE: c.run,
	}
	cmd.Flags().BoolVar(&c.all, "all", false, "every check-in, not only the changes")
	cmd.Flags().IntVar(&c.limit, "limit", 1000, "newest rows to list (1-100000)")
	return cmd
}

// historyPageSize is the page size machine history asks for.
const historyPageSize = 1000

func (c *cmdMachinesHistory) run(cmd *cobra.Command, args []string) error {
	if c.limit < 1 || c.limit > 100_000 {
		return cli.Usagef(cmd, "invalid --limit %d: want 1 to 100000", c.limit)
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	var events []server.MachineEvent
	f := server.HistoryFilter{All: c.all}
	for len(events) < c.limit {
		f.Limit = min(historyPageSize, c.limit-len(events))
		page, next, err := cl.MachineHistory(cmd.Context(), args[0], f)
		if err != nil {
			return err
		}
		events = append(events, page...)
		if next == 0 {
			break
		}
		if f.Before != 0 && next >= f.Before {
			return fmt.Errorf("cannot list the history: the server repeated the page before %d", f.Before)
		}
		f.Before = next
	}
	return c.g.show(orEmpty(events), func(w io.Writer) {
		if len(events) == 0 {
			fmt.Fprintln(w, "No history.")
			return
		}
		writeEvents(w, "", events)
	})
}
