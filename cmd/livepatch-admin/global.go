package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// Environment variables.
const (
	envURL       = "LIVEPATCH_URL"
	envCA        = "LIVEPATCH_CA_CRT"
	envPassword  = "LIVEPATCH_ADMIN_PASSWORD"
	envConfigDir = "LIVEPATCH_ADMIN_CONFIG_DIR"
	envTimeout   = "LIVEPATCH_TIMEOUT"
	envConnect   = "LIVEPATCH_CONNECT_TIMEOUT"
)

// maxTimeout bounds --timeout and --connect-timeout.
const maxTimeout = 24 * time.Hour

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// global holds what every command shares: the streams, the environment and the global
// flags.
type global struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	flagURL     string
	flagCA      string
	flagFormat  string
	flagTimeout string
	flagConnect string

	// timeouts are those of --timeout and --connect-timeout, set by checkFlags.
	timeouts client.Timeouts

	// usedSession and sessionURL are set once a command authenticated with the cached
	// session of a server, so that a 401 answer says to log in and forgets the session.
	usedSession bool
	sessionURL  string
}

func newRoot(g *global) *cobra.Command {
	root := &cobra.Command{
		Use:   "livepatch-admin",
		Short: "Administer a livepatch on-prem server",
		Long: `livepatch-admin administers a livepatch on-prem server: log in, manage tiers,
patches and client auth tokens, read the machine reports, and sync from an
upstream server.

The server is named by --url or the LIVEPATCH_URL environment variable; a
private certificate authority by --ca or LIVEPATCH_CA_CRT (a path or PEM text).
Every request waits at most --timeout (LIVEPATCH_TIMEOUT) for its answer; a
transfer (patch upload, bundle export or import) fails when no data moves for
that long. Connecting, and the TLS handshake, wait at most --connect-timeout
(LIVEPATCH_CONNECT_TIMEOUT).
Log in once with "livepatch-admin login -a user": the session is cached per
server.`,
		Args:              cli.RootArgs,
		RunE:              groupRun,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: g.checkFlags,
	}
	root.SetFlagErrorFunc(cli.FlagError)
	pf := root.PersistentFlags()
	pf.StringVar(&g.flagURL, "url", "", "server URL (default $"+envURL+")")
	pf.StringVar(&g.flagCA, "ca", "", "CA to trust: path or PEM (default $"+envCA+")")
	pf.StringVar(&g.flagFormat, "format", formatTable, "output format: table, json or yaml")
	pf.StringVar(&g.flagTimeout, "timeout", "", "longest wait for an answer, or a transfer's longest stall (default $"+envTimeout+" or "+client.DefaultRequestTimeout.String()+")")
	pf.StringVar(&g.flagConnect, "connect-timeout", "", "longest wait to connect, then for the TLS handshake (default $"+envConnect+" or "+client.DefaultConnectTimeout.String()+")")
	root.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]cobra.Completion{formatTable, formatJSON, formatYAML}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		(&cmdLogin{g: g}).command(),
		(&cmdLogout{g: g}).command(),
		(&cmdSessions{g: g}).command(),
		(&cmdAuthToken{g: g}).command(),
		(&cmdAuthTokens{g: g}).command(),
		(&cmdMachines{g: g}).command(),
		(&cmdTier{g: g}).command(),
		(&cmdPatch{g: g}).command(),
		(&cmdStorage{g: g}).command(),
		(&cmdReport{g: g}).command(),
		(&cmdSync{g: g}).command(),
		(&cmdSyncTokens{g: g}).command(),
		(&cmdBundle{g: g}).command(),
		(&cmdRollout{g: g}).command(),
	)
	return root
}

// groupRun runs a command that only groups subcommands: being run is a usage error.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return cli.UnknownCommand(cmd, args[0])
	}
	return cli.Usagef(cmd, "missing command")
}

// group returns a command that groups subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(subs...)
	return cmd
}

// argNames returns an argument validator for commands taking the required arguments
// named in required, then at most len(optional) more; a variadic command ends optional
// with "...".
func argNames(required []string, optional ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(required) {
			missing := required[len(args):]
			if len(missing) == 1 {
				return cli.Usagef(cmd, "missing argument %s", missing[0])
			}
			return cli.Usagef(cmd, "missing arguments %s", strings.Join(missing, " "))
		}
		variadic := len(optional) > 0 && strings.HasSuffix(optional[len(optional)-1], "...")
		if max := len(required) + len(optional); !variadic && len(args) > max {
			return cli.Usagef(cmd, "unexpected argument %q", args[max])
		}
		return nil
	}
}

func (g *global) checkFlags(cmd *cobra.Command, args []string) error {
	switch g.flagFormat {
	case formatTable, formatJSON, formatYAML:
	default:
		return cli.Usagef(cmd, "invalid --format %q: want table, json or yaml", g.flagFormat)
	}
	var err error
	if g.timeouts.Request, err = g.duration(cmd, "--timeout", g.flagTimeout, envTimeout); err != nil {
		return err
	}
	g.timeouts.Connect, err = g.duration(cmd, "--connect-timeout", g.flagConnect, envConnect)
	return err
}

// duration parses the value of a duration flag, else of its environment variable; zero
// when neither is set (the default).
func (g *global) duration(cmd *cobra.Command, flag, value, env string) (time.Duration, error) {
	name := flag
	if value == "" {
		value, name = g.getenv(env), env
	}
	if value == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 || d > maxTimeout {
		return 0, cli.Usagef(cmd, "invalid %s %q: want a duration such as 30s or 5m, at most %s", name, value, maxTimeout)
	}
	return d, nil
}

// serverURL returns the server URL from --url or LIVEPATCH_URL.
func (g *global) serverURL() (string, error) {
	u := g.flagURL
	if u == "" {
		u = g.getenv(envURL)
	}
	if u == "" {
		return "", fmt.Errorf("no server URL: use --url or set %s", envURL)
	}
	return u, nil
}

// client returns an unauthenticated client of the server.
func (g *global) client() (*client.Client, error) {
	u, err := g.serverURL()
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithUserAgent("livepatch-admin"), client.WithTimeouts(g.timeouts)}
	ca := g.flagCA
	if ca == "" {
		ca = g.getenv(envCA)
	}
	if ca != "" {
		pem := []byte(ca)
		if !strings.Contains(ca, "-----BEGIN") {
			if pem, err = os.ReadFile(ca); err != nil {
				return nil, fmt.Errorf("cannot read CA certificate: %w", err)
			}
		}
		opts = append(opts, client.WithCACert(pem))
	}
	return client.New(u, opts...)
}

// admin returns a client authenticated with the cached session of the server, or
// errNotLoggedIn.
func (g *global) admin() (*client.Client, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	cache, err := g.sessions()
	if err != nil {
		return nil, err
	}
	s, ok, err := cache.get(c.URL())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNotLoggedIn
	}
	g.usedSession, g.sessionURL = true, c.URL()
	return c.WithToken(s.Token), nil
}

// forgetSession drops the cached session a command found expired; a failure to do so only
// means the next command asks the server again.
func (g *global) forgetSession() {
	if cache, err := g.sessions(); err == nil {
		cache.delete(g.sessionURL)
	}
}

// completeTiers returns a completion function that offers the server's tiers for the
// arguments at positions, when the user is logged in. Completion stays quiet on errors.
func (g *global) completeTiers(positions ...int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !slices.Contains(positions, len(args)) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(g.tierCompletions(cmd), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeTierFlag offers the server's tiers for a flag's value.
func (g *global) completeTierFlag(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return withPrefix(g.tierCompletions(cmd), toComplete), cobra.ShellCompDirectiveNoFileComp
}

func (g *global) tierCompletions(cmd *cobra.Command) []cobra.Completion {
	cl, err := g.admin()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	tiers, err := cl.Tiers(ctx)
	if err != nil {
		return nil
	}
	return tierNames(tiers)
}

// withPrefix returns the candidates that start with prefix.
func withPrefix(candidates []string, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, c := range candidates {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}
