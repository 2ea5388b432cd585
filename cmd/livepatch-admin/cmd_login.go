package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// cmdLogin exchanges an administrator's password for a session token and caches it.
type cmdLogin struct {
	g        *global
	flagAuth string
}

func (c *cmdLogin) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login -a <user>[:<password>]",
		Short: "Log in to the server and cache the session",
		Long: `Log in with an administrator's user name and password (HTTP basic auth) and
cache the session token for this server in the user's config directory.

With -a user alone, the password comes from LIVEPATCH_ADMIN_PASSWORD, else
from a prompt that does not echo when standard input is a terminal, else from
the first line of standard input.`,
		Example: `  LIVEPATCH_URL=http://10.0.0.10 livepatch-admin login -a admin:secret
  livepatch-admin --url http://10.0.0.10 login -a admin`,
		Args: argNames(nil),
		RunE: c.run,
	}
	cmd.Flags().StringVarP(&c.flagAuth, "auth", "a", "", "user name, or user:password")
	return cmd
}

func (c *cmdLogin) run(cmd *cobra.Command, args []string) error {
	if c.flagAuth == "" {
		return cli.Usagef(cmd, "missing -a <user>[:<password>]")
	}
	user, password, hasPassword := strings.Cut(c.flagAuth, ":")
	if user == "" {
		return cli.Usagef(cmd, "missing user name in -a")
	}
	cl, err := c.g.client()
	if err != nil {
		return err
	}
	if !hasPassword {
		if password, err = c.readPassword(cmd.Context(), user, cl.URL()); err != nil {
			return err
		}
	}
	if password == "" {
		return errors.New("cannot log in: empty password")
	}
	resp, err := cl.Login(cmd.Context(), user, password)
	if err != nil {
		return err
	}
	cache, err := c.g.sessions()
	if err != nil {
		return err
	}
	err = cache.put(cl.URL(), session{Token: resp.Token, User: resp.User, ExpiresAt: resp.ExpiresAt})
	if err != nil {
		return err
	}
	out := struct {
		URL       string    `json:"url"`
		User      string    `json:"user"`
		ExpiresAt time.Time `json:"expires-at"`
	}{cl.URL(), resp.User, resp.ExpiresAt}
	return c.g.show(out, func(w io.Writer) {
		fmt.Fprintf(w, "Logged in as %s; session valid until %s\n", resp.User, resp.ExpiresAt.UTC().Format(time.RFC3339))
	})
}

// readPassword reads the password from the environment, a terminal prompt, or one line of
// standard input.
func (c *cmdLogin) readPassword(ctx context.Context, user, url string) (string, error) {
	if p := c.g.getenv(envPassword); p != "" {
		return p, nil
	}
	if f, ok := c.g.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(c.g.stderr, "Password for %s at %s: ", user, url)
		defer fmt.Fprintln(c.g.stderr)
		return readTerminalPassword(ctx, int(f.Fd()))
	}
	line, err := bufio.NewReader(c.g.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("cannot read password from standard input: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readTerminalPassword reads a password without echo. Interrupted (Ctrl-C cancels ctx),
// it restores the terminal and returns at once rather than wait for Enter.
func readTerminalPassword(ctx context.Context, fd int) (string, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("cannot read password: %w", err)
	}
	type result struct {
		p   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := term.ReadPassword(fd)
		done <- result{p, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return "", fmt.Errorf("cannot read password: %w", r.err)
		}
		return string(r.p), nil
	case <-ctx.Done():
		term.Restore(fd, state)
		return "", fmt.Errorf("cannot read password: %w", ctx.Err())
	}
}

// cmdLogout ends the cached session of the server and forgets it.
type cmdLogout struct {
	g *global
}

func (c *cmdLogout) command() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session and forget its token",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdLogout) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.client()
	if err != nil {
		return err
	}
	cache, err := c.g.sessions()
	if err != nil {
		return err
	}
	s, ok, err := cache.get(cl.URL())
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintf(c.g.stdout, "Not logged in to %s\n", cl.URL())
		return nil
	}
	err = cl.WithToken(s.Token).Logout(cmd.Context())
	if apiErr, isAPI := errors.AsType[*client.APIError](err); isAPI && apiErr.Status == 401 {
		err = nil // the session had expired already
	}
	if err != nil {
		return err
	}
	if err := cache.delete(cl.URL()); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Logged out of %s\n", cl.URL())
	return nil
}
