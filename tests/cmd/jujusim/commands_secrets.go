package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// secretCommands are the user-secret verbs of the juju CLI.
func secretCommands(m *jujusim.Model, cwd string) []*cobra.Command {
	content := func(args []string, file string) (map[string]string, error) {
		out, err := jujusim.ParseSecretContent(args, cwd)
		if err != nil {
			return nil, err
		}
		if file != "" {
			fromFile, err := jujusim.ReadSecretFile(abs(cwd, file))
			if err != nil {
				return nil, err
			}
			for k, v := range fromFile {
				out[k] = v
			}
		}
		return out, nil
	}
	var out []*cobra.Command

	var info, file string
	addSecret := &cobra.Command{
		Use:  "add-secret <name> [key[#base64|#file]=value...]",
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := content(args[1:], file)
			if err != nil {
				return err
			}
			uri, err := m.AddSecret(args[0], info, data)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), uri)
			return nil
		},
	}
	addSecret.Flags().StringVar(&info, "info", "", "the secret description")
	addSecret.Flags().StringVar(&file, "file", "", "a YAML file containing secret key values")
	out = append(out, addSecret)

	var upInfo, upName, upFile string
	var autoPrune bool
	updateSecret := &cobra.Command{
		Use:  "update-secret <ID>|<name> [key[#base64|#file]=value...]",
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			data, err := content(args[1:], upFile)
			if err != nil {
				return err
			}
			u := jujusim.UpdateSecretArgs{Content: data}
			if c.Flags().Changed("info") {
				u.Info = &upInfo
			}
			if c.Flags().Changed("name") {
				u.Name = &upName
			}
			if c.Flags().Changed("auto-prune") {
				u.AutoPrune = &autoPrune
			}
			return m.UpdateSecret(args[0], u)
		},
	}
	updateSecret.Flags().StringVar(&upInfo, "info", "", "the secret description")
	updateSecret.Flags().StringVar(&upName, "name", "", "a new name for the secret")
	updateSecret.Flags().StringVar(&upFile, "file", "", "a YAML file containing secret key values")
	updateSecret.Flags().BoolVar(&autoPrune, "auto-prune", false, "remove revisions no application uses any more")
	out = append(out, updateSecret)

	out = append(out, &cobra.Command{
		Use:  "grant-secret <ID>|<name> <application>[,<application>...]",
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return m.GrantSecret(args[0], strings.Split(args[1], ",")...)
		},
	}, &cobra.Command{
		Use:  "revoke-secret <ID>|<name> <application>[,<application>...]",
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return m.RevokeSecret(args[0], strings.Split(args[1], ",")...)
		},
	})

	var rmRevision int
	removeSecret := &cobra.Command{
		Use:  "remove-secret <ID>|<name>",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.RemoveSecret(args[0], rmRevision) },
	}
	removeSecret.Flags().IntVar(&rmRevision, "revision", 0, "remove only this revision")
	out = append(out, removeSecret)

	var reveal, revisions bool
	var showRevision int
	var showFormat string
	showSecret := &cobra.Command{
		Use:  "show-secret <ID>|<name>",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := m.ShowSecret(args[0], reveal, showRevision)
			if err != nil {
				return err
			}
			if !revisions {
				s.Revisions = nil
			}
			id, _ := jujusim.SecretID(s.URI)
			return writeFormatted(c.OutOrStdout(), showFormat, map[string]jujusim.SecretInfo{id: s})
		},
	}
	showSecret.Flags().BoolVar(&reveal, "reveal", false, "include the secret content")
	showSecret.Flags().BoolVar(&revisions, "revisions", false, "include the revisions")
	showSecret.Flags().IntVar(&showRevision, "revision", 0, "the revision to reveal")
	showSecret.Flags().StringVar(&showFormat, "format", "yaml", "yaml or json")
	out = append(out, showSecret)

	var listFormat string
	list := &cobra.Command{
		Use:     "secrets",
		Aliases: []string{"list-secrets"},
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			all := map[string]jujusim.SecretInfo{}
			for _, s := range m.Secrets() {
				s.Revisions = nil
				id, _ := jujusim.SecretID(s.URI)
				all[id] = s
			}
			return writeFormatted(c.OutOrStdout(), listFormat, all)
		},
	}
	list.Flags().StringVar(&listFormat, "format", "yaml", "yaml or json")
	out = append(out, list)
	return out
}
