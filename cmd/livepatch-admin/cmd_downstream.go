package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// cmdReportDownstream reports, on a sync upstream, the downstream servers that sync from
// it, or the machines one of them reports.
type cmdReportDownstream struct {
	g         *global
	flagState string
	flagTier  string
}

func (c *cmdReportDownstream) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "downstream [<deployment-id>]",
		Short: "List the downstream servers syncing from this one, or the machines one reports",
		Long: `Without arguments, list the downstream deployments (livepatch servers that sync
from this one) seen in the last 30 days: the sync token each used (or "resource
token"), the tier it syncs, its last sync, the machine count it sent (rounded
down to 1, 50, 100, 500, 1000, 2000, 5000 or 10000 unless it sends exact counts),
and the machines it reports (patch-sync.send-machine-reports) per patch state.

With a deployment id, list the machines that deployment reports, optionally only
those of its tier --tier, in patch state --state. Their ids are HMACs of the real
machine ids, keyed with the deployment id.`,
		Example: `  livepatch-admin report downstream
  livepatch-admin report downstream region-eu-model-uuid --state apply-failed`,
		Args:              argNames(nil, "<deployment-id>"),
		RunE:              c.run,
		ValidArgsFunction: c.completeArgs,
	}
	cmd.Flags().StringVar(&c.flagState, "state", "", "only machines in this patch state")
	cmd.Flags().StringVar(&c.flagTier, "tier", "", "only machines of this tier of the downstream server")
	cmd.RegisterFlagCompletionFunc("state", func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return withPrefix(server.PatchStates, toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// completeArgs offers the deployment ids, when the user is logged in.
func (c *cmdReportDownstream) completeArgs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := c.g.admin()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	deployments, err := cl.Downstreams(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	for _, d := range deployments {
		ids = append(ids, d.ID)
	}
	return withPrefix(ids, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func (c *cmdReportDownstream) run(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		if c.flagState != "" || c.flagTier != "" {
			return cli.Usagef(cmd, "--state and --tier need a <deployment-id>")
		}
		return c.list(cmd)
	}
	f := server.DownstreamMachineFilter{DeploymentID: args[0], Tier: c.flagTier, PatchState: c.flagState, Limit: machinesPageSize}
	if err := server.CheckDeploymentID(f.DeploymentID); err != nil {
		return cli.Usagef(cmd, "%s", server.ErrorMessage(err))
	}
	if f.PatchState != "" && !slices.Contains(server.PatchStates, f.PatchState) {
		return cli.Usagef(cmd, "invalid --state %q: want one of %s", f.PatchState, strings.Join(server.PatchStates, ", "))
	}
	if f.Tier != "" {
		if err := server.CheckTierName(f.Tier); err != nil {
			return cli.Usagef(cmd, "invalid --tier: %s", server.ErrorMessage(err))
		}
	}
	return c.machines(cmd, f)
}

// list shows the downstream deployments.
func (c *cmdReportDownstream) list(cmd *cobra.Command) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	deployments, err := cl.Downstreams(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(deployments), func(w io.Writer) {
		if len(deployments) == 0 {
			fmt.Fprintln(w, "No downstream deployments.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "DEPLOYMENT\tSYNCED VIA\tTIER\tLAST SYNC\tMACHINES\tREPORTED\tPATCH STATES")
		for _, d := range deployments {
			via := d.SyncToken
			if d.Via == server.ViaResourceToken {
				via = "resource token"
			}
			machines, reported := "-", "-"
			if d.MachineCount != nil {
				machines = strconv.Itoa(*d.MachineCount)
			}
			if d.ReportedMachines > 0 {
				reported = strconv.Itoa(d.ReportedMachines)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, orDash(via), orDash(d.Tier), fmtTime(d.LastSync),
				machines, reported, orDash(patchStates(d.PatchStates)))
		}
		tw.Flush()
	})
}

// patchStates writes machine counts per patch state compactly: "2 applied, 1 apply-failed".
func patchStates(counts map[string]int) string {
	var parts []string
	for _, s := range statesWithMachines(counts) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	return strings.Join(parts, ", ")
}

// machines shows the machines one deployment reports.
func (c *cmdReportDownstream) machines(cmd *cobra.Command, f server.DownstreamMachineFilter) error {
	return listMachines(c.g, func(cl *client.Client, after string) ([]server.DownstreamMachine, string, error) {
		f.After = after
		return cl.DownstreamMachines(cmd.Context(), f)
	}, "MACHINE\tTIER\tKERNEL\tPATCH\tSTATE\tLAST SEEN", func(m server.DownstreamMachine) []string {
		return []string{m.ID, orDash(m.Tier), m.Kernel, orDash(m.PatchVersion), m.PatchState, fmtTime(m.LastSeen)}
	})
}
