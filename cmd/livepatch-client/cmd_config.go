package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/agent"
	"github.com/livepatch-onprem/livepatch/internal/cli"
)

// cmdConfig shows or sets the configuration.
type cmdConfig struct {
	g *global
}

func (c *cmdConfig) command() *cobra.Command {
	var keys strings.Builder
	for _, k := range agent.ConfigKeys() {
		fmt.Fprintf(&keys, "  %-15s %s\n", k[0], k[1])
	}
	return &cobra.Command{
		Use:   "config [key=value...]",
		Short: "Show or set the configuration",
		Long: `Without arguments, config shows the configuration (never a token; certificates
abbreviated). With key=value arguments it sets keys; "key=" clears a key back to its
default, and ca-certs=@stdin reads the PEM certificates from standard input.

Keys:
` + keys.String(),
		Example: `  sudo livepatch-client config remote-server=http://livepatch.example.com
  sudo livepatch-client config ca-certs=@stdin < ca.pem
  sudo livepatch-client config check-interval=30 mode=no-apply
  sudo livepatch-client config http-proxy=`,
		RunE: c.run,
	}
}

func (c *cmdConfig) run(cmd *cobra.Command, args []string) error {
	a := c.g.agent()
	if len(args) == 0 {
		cfg, err := a.LoadConfig()
		if err != nil {
			return err
		}
		_, err = io.WriteString(c.g.stdout, cfg.Show(a.ConfigDefaults()))
		return err
	}
	cfg, err := a.LoadConfig()
	if err != nil {
		return err
	}
	usedStdin := ""
	for _, arg := range args {
		key, value, ok := strings.Cut(arg, "=")
		if !ok {
			return cli.Usagef(cmd, "invalid argument %q: want key=value (key= clears a key)", arg)
		}
		if value == "@stdin" {
			if usedStdin != "" {
				return cli.Usagef(cmd, "both %s and %s read @stdin: standard input can be read once", usedStdin, key)
			}
			usedStdin = key
			data, err := io.ReadAll(io.LimitReader(c.g.stdin, 1<<20))
			if err != nil {
				return fmt.Errorf("cannot read %s from standard input: %w", key, err)
			}
			if value = strings.TrimSpace(string(data)); value == "" {
				return cli.Usagef(cmd, "%s=@stdin: standard input is empty", key)
			}
		}
		if err := cfg.Set(key, value); err != nil {
			ue := cli.Usagef(cmd, "%v", err)
			if strings.HasPrefix(err.Error(), "unknown config key") {
				ue.Detail = "valid keys: " + strings.Join(keyNames(), ", ")
			}
			return ue
		}
	}
	if err := c.g.needRoot(cmd); err != nil {
		return err
	}
	notes, err := a.SaveConfig(cfg)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(c.g.stdout, n)
	}
	return nil
}

func keyNames() []string {
	var names []string
	for _, k := range agent.ConfigKeys() {
		names = append(names, k[0])
	}
	return names
}
