package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdAuthToken issues a client auth token that enables machines in one tier.
type cmdAuthToken struct {
	g               *global
	flagExpires     string
	flagMaxMachines int
}

func (c *cmdAuthToken) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth-token <id> <tier>",
		Short: "Issue a client auth token for machines of a tier",
		Long: `Issue a client auth token. Machines enable themselves with it
(canonical-livepatch enable <token>) and then receive the patches of <tier>.
<id> is a free label for the group of machines that share the token.

The token is printed once; the server keeps only its hash.`,
		Example: `  livepatch-admin auth-token web-servers stable
  livepatch-admin auth-token lab edge --expires 720h --max-machines 10
  livepatch-admin auth-token ci beta --expires 2025-12-31`,
		Args:              c.args,
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(1),
	}
	cmd.Flags().StringVar(&c.flagExpires, "expires", "", "expiry: 720h, 30d or 2025-12-31 (default: never)")
	cmd.Flags().IntVar(&c.flagMaxMachines, "max-machines", 0, "machines that may enable with it (0: unlimited)")
	return cmd
}

// args explains the form when the id and tier are missing, listing the server's tiers
// when the user is logged in, since the tier is what people most often need to look up.
func (c *cmdAuthToken) args(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return argNames([]string{"<id>", "<tier>"})(cmd, args)
	}
	ue := cli.Usagef(cmd, "missing arguments <id> <tier>: <id> labels the machines that share the token, <tier> is the tier they get patches from")
	if cl, err := c.g.admin(); err == nil {
		if tiers, err := cl.Tiers(cmd.Context()); err == nil && len(tiers) > 0 {
			ue.Detail = fmt.Sprintf("Tiers on %s: %s", cl.URL(), strings.Join(tierNames(tiers), ", "))
		}
	}
	return ue
}

func (c *cmdAuthToken) run(cmd *cobra.Command, args []string) error {
	req := server.AuthTokenRequest{ID: args[0], Tier: args[1], MaxMachines: c.flagMaxMachines}
	if c.flagMaxMachines < 0 {
		return cli.Usagef(cmd, "invalid --max-machines %d: want 0 (unlimited) or more", c.flagMaxMachines)
	}
	if c.flagExpires != "" {
		t, err := parseExpiry(c.flagExpires, time.Now())
		if err != nil {
			return cli.Usagef(cmd, "%v", err)
		}
		req.ExpiresAt = &t
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tok, err := cl.CreateAuthToken(cmd.Context(), req)
	if err != nil {
		return err
	}
	return c.g.show(tok, func(w io.Writer) {
		fmt.Fprintln(w, tok.Token)
	})
}

// parseExpiry reads --expires: a Go duration, a number of days ("30d"), a date
// (midnight UTC) or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 {
			return now.AddDate(0, 0, days).UTC().Truncate(time.Second), nil
		}
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("invalid --expires %q: want a duration (720h, 30d), a date (2025-12-31) or an RFC 3339 time", s)
}

// cmdAuthTokens groups the auth token listing and revocation.
type cmdAuthTokens struct {
	g *global
}

func (c *cmdAuthTokens) command() *cobra.Command {
	return group("auth-tokens", "List and revoke client auth tokens",
		(&cmdAuthTokensList{g: c.g}).command(),
		(&cmdAuthTokensRevoke{g: c.g}).command(),
	)
}

// cmdAuthTokensList lists the auth tokens (never their values).
type cmdAuthTokensList struct {
	g *global
}

func (c *cmdAuthTokensList) command() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List auth tokens and how many machines use them",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdAuthTokensList) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tokens, err := cl.AuthTokens(cmd.Context())
	if err != nil {
		return err
	}
	now := time.Now()
	return c.g.show(orEmpty(tokens), func(w io.Writer) {
		if len(tokens) == 0 {
			fmt.Fprintln(w, "No auth tokens.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tTIER\tMACHINES\tCREATED\tEXPIRES\tSTATUS")
		for _, t := range tokens {
			machines := strconv.Itoa(t.Machines)
			if t.MaxMachines > 0 {
				machines += "/" + strconv.Itoa(t.MaxMachines)
			}
			expires, status := "never", "active"
			if t.ExpiresAt != nil {
				expires = fmtTime(*t.ExpiresAt)
				if !t.ExpiresAt.After(now) {
					status = "expired"
				}
			}
			if t.Revoked {
				status = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Tier, machines, fmtTime(t.CreatedAt), expires, status)
		}
		tw.Flush()
	})
}

// cmdAuthTokensRevoke revokes an auth token, so no more machines enable with it.
type cmdAuthTokensRevoke struct {
	g *global
}

func (c *cmdAuthTokensRevoke) command() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke <id>",
		Short: "Revoke an auth token so no more machines enable with it",
		Args:  argNames([]string{"<id>"}),
		RunE:  c.run,
	}
}

func (c *cmdAuthTokensRevoke) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if err := cl.RevokeAuthToken(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Revoked auth token %s\n", args[0])
	return nil
}

// tierNames returns the names of tiers, in their order.
func tierNames(tiers []server.Tier) []string {
	names := make([]string, len(tiers))
	for i, t := range tiers {
		names[i] = t.Name
	}
	return names
}
