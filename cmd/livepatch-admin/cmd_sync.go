package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdSync groups the commands of this server's sync from its upstream.
type cmdSync struct {
	g *global
}

func (c *cmdSync) command() *cobra.Command {
	return group("sync", "Trigger and follow the sync of patches from the upstream server",
		(&cmdSyncTrigger{g: c.g}).command(),
		(&cmdSyncStatus{g: c.g}).command(),
		(&cmdSyncReports{g: c.g}).command(),
	)
}

// cmdSyncTrigger starts a sync now, and with --wait reports how it ended.
type cmdSyncTrigger struct {
	g        *global
	flagWait bool
}

func (c *cmdSyncTrigger) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trigger",
		Short: "Sync patches from the upstream now",
		Long: `Ask the server to sync patches from its upstream now, rather than at the next
scheduled run. One unit of the deployment syncs at a time. With --wait, the
command waits for the run to end, prints its result, and exits 1 when it
failed or another unit was already syncing.`,
		Example: `  livepatch-admin sync trigger
  livepatch-admin sync trigger --wait`,
		Args: argNames(nil),
		RunE: c.run,
	}
	cmd.Flags().BoolVar(&c.flagWait, "wait", false, "wait for the sync to end and print its result")
	return cmd
}

func (c *cmdSyncTrigger) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if !c.flagWait {
		if err := cl.TriggerSync(cmd.Context()); err != nil {
			return err
		}
		return c.g.show(map[string]bool{"triggered": true}, func(w io.Writer) {
			fmt.Fprintln(w, "Sync triggered: follow it with livepatch-admin sync status")
		})
	}
	r, err := cl.TriggerSyncWait(cmd.Context())
	if err != nil {
		return err
	}
	if c.g.flagFormat != formatTable {
		if err := c.g.show(r, nil); err != nil {
			return err
		}
	}
	switch r.Outcome {
	case server.SyncSuccess:
		if c.g.flagFormat == formatTable {
			fmt.Fprintf(c.g.stdout, "Sync succeeded on %s in %s: %s added (%s)\n",
				r.Unit, duration(r), plural(r.PatchesAdded, "patch", "patches"), humanSize(r.Bytes))
		}
		return nil
	case server.SyncSkipped:
		return fmt.Errorf("sync skipped on %s: %s", r.Unit, r.Error)
	}
	return fmt.Errorf("sync failed on %s after %s: %s", r.Unit, duration(r), r.Error)
}

// duration is how long a run took, in whole seconds.
func duration(r server.SyncReport) string {
	return r.EndedAt.Sub(r.StartedAt).Round(time.Second).String()
}

// cmdSyncStatus shows the sync configuration and state.
type cmdSyncStatus struct {
	g *global
}

func (c *cmdSyncStatus) command() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the upstream, whether tiers are mirrored, the last run, the last success and the next run",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdSyncStatus) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	st, err := cl.SyncStatus(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(st, func(w io.Writer) {
		line := func(key, value string) { fmt.Fprintf(w, "%-15s%s\n", key+":", value) }
		line("enabled", yesNo(st.Enabled))
		if st.Enabled {
			line("upstream", st.Upstream)
			line("upstream tier", st.UpstreamTier)
			if st.SyncTiers {
				line("tiers", "mirrored from the upstream (patch-sync.sync-tiers)")
			} else {
				line("landing tier", st.Tier)
			}
			line("running", yesNo(st.Running))
		}
		lastRun := "never"
		if r := st.LastRun; r != nil {
			lastRun = fmt.Sprintf("%s %s on %s", fmtTime(r.StartedAt), r.Outcome, r.Unit)
			if r.Outcome == server.SyncSuccess {
				lastRun += fmt.Sprintf(": %s added", plural(r.PatchesAdded, "patch", "patches"))
			} else {
				lastRun += ": " + r.Error
			}
		}
		line("last run", lastRun)
		lastSuccess, nextRun := "never", "-"
		if st.LastSuccess != nil {
			lastSuccess = fmtTime(*st.LastSuccess)
		}
		if st.NextRun != nil {
			nextRun = fmtTime(*st.NextRun)
		}
		line("last success", lastSuccess)
		if st.Enabled {
			line("next run", nextRun)
		}
		for _, warning := range st.Warnings {
			line("warning", warning)
		}
	})
}

// cmdSyncReports lists the last sync runs.
type cmdSyncReports struct {
	g         *global
	flagLimit int
}

func (c *cmdSyncReports) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "reports",
		Aliases: []string{"report"},
		Short:   "List the last sync runs, newest first, with their errors",
		Args:    argNames(nil),
		RunE:    c.run,
	}
	cmd.Flags().IntVar(&c.flagLimit, "limit", 20, "how many runs to list (at most 1000)")
	return cmd
}

func (c *cmdSyncReports) run(cmd *cobra.Command, args []string) error {
	if c.flagLimit < 1 || c.flagLimit > 1000 {
		return cli.Usagef(cmd, "invalid --limit %d: want 1 to 1000", c.flagLimit)
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	reports, err := cl.SyncReports(cmd.Context(), c.flagLimit)
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(reports), func(w io.Writer) {
		if len(reports) == 0 {
			fmt.Fprintln(w, "No sync reports.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tSTARTED\tDURATION\tOUTCOME\tADDED\tSIZE\tUNIT\tERROR")
		for _, r := range reports {
			msg := r.Error
			if msg == "" {
				msg = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, fmtTime(r.StartedAt), duration(r), r.Outcome,
				r.PatchesAdded, humanSize(r.Bytes), r.Unit, msg)
		}
		tw.Flush()
	})
}

// cmdSyncTokens groups the sync tokens that let downstream servers sync from this one.
type cmdSyncTokens struct {
	g *global
}

func (c *cmdSyncTokens) command() *cobra.Command {
	return group("sync-tokens", "Issue, list and revoke sync tokens for downstream servers",
		(&cmdSyncTokensAdd{g: c.g}).command(),
		(&cmdSyncTokensList{g: c.g}).command(),
		(&cmdSyncTokensRevoke{g: c.g}).command(),
	)
}

// cmdSyncTokensAdd issues a sync token bound to a tier.
type cmdSyncTokensAdd struct {
	g              *global
	flagValidUntil string
}

func (c *cmdSyncTokensAdd) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add <tier> <name>",
		Short: "Issue a sync token that lets a downstream server sync a tier",
		Long: `Issue a sync token. A downstream livepatch server set with it
(patch-sync.token, and patch-sync.upstream-tier <tier>) syncs the patches of
<tier> from this server. <name> labels the downstream server.

The token is printed once; the server keeps only its hash.`,
		Example: `  livepatch-admin sync-tokens add stable region-eu
  livepatch-admin sync-tokens add edge lab --valid-until 2025-12-31`,
		Args:              argNames([]string{"<tier>", "<name>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
	cmd.Flags().StringVar(&c.flagValidUntil, "valid-until", "", "expiry: 720h, 30d or 2025-12-31 (default: never)")
	return cmd
}

func (c *cmdSyncTokensAdd) run(cmd *cobra.Command, args []string) error {
	req := server.SyncTokenRequest{Tier: args[0], Name: args[1]}
	if c.flagValidUntil != "" {
		t, err := parseExpiry(c.flagValidUntil, time.Now())
		if err != nil {
			return cli.Usagef(cmd, "invalid --valid-until %q: want a duration (720h, 30d), a date (2025-12-31) or an RFC 3339 time", c.flagValidUntil)
		}
		req.ValidUntil = &t
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tok, err := cl.CreateSyncToken(cmd.Context(), req)
	if err != nil {
		return err
	}
	return c.g.show(tok, func(w io.Writer) {
		fmt.Fprintln(w, tok.Token)
	})
}

// cmdSyncTokensList lists the sync tokens (never their values).
type cmdSyncTokensList struct {
	g *global
}

func (c *cmdSyncTokensList) command() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List sync tokens",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdSyncTokensList) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tokens, err := cl.SyncTokens(cmd.Context())
	if err != nil {
		return err
	}
	now := time.Now()
	return c.g.show(orEmpty(tokens), func(w io.Writer) {
		if len(tokens) == 0 {
			fmt.Fprintln(w, "No sync tokens.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "NAME\tTIER\tCREATED\tVALID UNTIL\tSTATUS")
		for _, t := range tokens {
			until, status := "never", "active"
			if t.ValidUntil != nil {
				until = fmtTime(*t.ValidUntil)
				if !t.ValidUntil.After(now) {
					status = "expired"
				}
			}
			if t.Revoked {
				status = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Tier, fmtTime(t.CreatedAt), until, status)
		}
		tw.Flush()
	})
}

// cmdSyncTokensRevoke revokes a sync token: the downstream server using it can no longer
// sync.
type cmdSyncTokensRevoke struct {
	g *global
}

func (c *cmdSyncTokensRevoke) command() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke <name>",
		Short: "Revoke a sync token so its downstream server can no longer sync",
		Args:  argNames([]string{"<name>"}),
		RunE:  c.run,
	}
}

func (c *cmdSyncTokensRevoke) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if err := cl.RevokeSyncToken(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Revoked sync token %s\n", args[0])
	return nil
}
