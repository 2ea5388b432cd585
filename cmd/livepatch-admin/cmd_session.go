package main

import (
	"fmt"
	"io"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/spf13/cobra"
)

// cmdSessions groups the listing and revocation of admin sessions on the server.
type cmdSessions struct {
	g *global
}

func (c *cmdSessions) command() *cobra.Command {
	return group("sessions", "List and end admin sessions on the server",
		(&cmdSessionsList{g: c.g}).command(),
		(&cmdSessionsRevoke{g: c.g}).command(),
	)
}

// cmdSessionsList lists the unexpired sessions (never their tokens).
type cmdSessionsList struct {
	g *global
}

func (c *cmdSessionsList) command() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the admin sessions that have not expired",
		Long: `List the admin sessions that have not expired, oldest first. The session this
command runs with is marked with *. A session whose user was removed or changed
password since its login is listed as ended: the server refuses it.`,
		Args: argNames(nil),
		RunE: c.run,
	}
}

func (c *cmdSessionsList) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	sessions, err := cl.Sessions(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(sessions), func(w io.Writer) {
		if len(sessions) == 0 {
			fmt.Fprintln(w, "No sessions.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tUSER\tCREATED\tEXPIRES\tSTATUS")
		for _, s := range sessions {
			id, status := s.ID, "active"
			if s.Current {
				id += " *"
			}
			if !s.Valid {
				status = "ended"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, s.User, fmtTime(s.CreatedAt), fmtTime(s.ExpiresAt), status)
		}
		tw.Flush()
	})
}

// cmdSessionsRevoke ends one session, or every session of a user.
type cmdSessionsRevoke struct {
	g        *global
	flagUser string
}

func (c *cmdSessionsRevoke) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke <id> | --user <name>",
		Short: "End an admin session, or every session of a user",
		Example: `  livepatch-admin sessions revoke 3f9c2a7d41e0b6a8
  livepatch-admin sessions revoke --user alice`,
		Args: cobra.MaximumNArgs(1),
		RunE: c.run,
	}
	cmd.Flags().StringVar(&c.flagUser, "user", "", "end every session of this user")
	return cmd
}

func (c *cmdSessionsRevoke) run(cmd *cobra.Command, args []string) error {
	if (len(args) == 1) == (c.flagUser != "") {
		return cli.Usagef(cmd, "give a session id or --user <name>, not both")
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if c.flagUser != "" {
		n, err := cl.RevokeUserSessions(cmd.Context(), c.flagUser)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.g.stdout, "Ended %d sessions of %s\n", n, c.flagUser)
		return nil
	}
	if err := cl.RevokeSession(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Ended session %s\n", args[0])
	return nil
}
