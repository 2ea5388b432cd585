package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/server"
)

// cmdStorage groups the patch storage commands.
type cmdStorage struct {
	g *global
}

func (c *cmdStorage) command() *cobra.Command {
	return group("storage", "Inspect and reconcile patch storage",
		(&cmdStoragePatches{g: c.g}).command(),
		(&cmdStorageRefresh{g: c.g}).command(),
	)
}

// cmdStoragePatches lists the files in patch storage.
type cmdStoragePatches struct {
	g *global
}

func (c *cmdStoragePatches) command() *cobra.Command {
	return &cobra.Command{
		Use:   "patches",
		Short: "List the files in patch storage and whether they are recorded",
		Args:  argNames(nil),
		RunE:  c.run,
	}
}

func (c *cmdStoragePatches) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	files, err := cl.StoragePatches(cmd.Context())
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(files), func(w io.Writer) {
		if len(files) == 0 {
			fmt.Fprintln(w, "No files in patch storage.")
			return
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "FILENAME\tSIZE\tRECORDED")
		for _, f := range files {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Filename, humanSize(f.Size), yesNo(f.Recorded))
		}
		tw.Flush()
	})
}

// cmdStorageRefresh reconciles patch storage with the database records.
type cmdStorageRefresh struct {
	g     *global
	prune bool
}

func (c *cmdStorageRefresh) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "refresh",
		Short: "Record patch files found in storage, check recorded ones, report missing ones",
		Long: `Record patch files found in storage, check every recorded file against its
SHA-256, and report the records whose file is missing. With --prune, forget those
records. Storage that holds no patch file while patches are recorded looks unmounted:
the refresh then changes nothing unless --prune is given.`,
		Args: argNames(nil),
		RunE: c.run,
	}
	cmd.Flags().BoolVar(&c.prune, "prune", false, "forget the records whose file is missing from storage")
	return cmd
}

func (c *cmdStorageRefresh) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	res, err := cl.StorageRefresh(cmd.Context(), c.prune)
	if err != nil {
		return err
	}
	out := server.RefreshResult{Added: orEmpty(res.Added), Removed: orEmpty(res.Removed), Missing: orEmpty(res.Missing),
		Mismatched: orEmpty(res.Mismatched), Invalid: orEmpty(res.Invalid)}
	err = c.g.show(out, func(w io.Writer) {
		tw := newTable(w)
		for _, f := range res.Added {
			fmt.Fprintf(tw, "added:\t%s\n", f)
		}
		for _, f := range res.Removed {
			fmt.Fprintf(tw, "removed:\t%s\n", f)
		}
		for _, f := range res.Missing {
			fmt.Fprintf(tw, "missing:\t%s\n", f)
		}
		for _, f := range res.Mismatched {
			fmt.Fprintf(tw, "mismatched:\t%s: recorded sha256 %s, stored %s\n", f.Filename, f.RecordedSHA256, f.StoredSHA256)
		}
		for _, f := range res.Invalid {
			fmt.Fprintf(tw, "invalid:\t%s: %s\n", f.Filename, f.Error)
		}
		tw.Flush()
		fmt.Fprintf(w, "Storage refreshed: %d added, %d removed, %d missing, %d mismatched, %d invalid\n",
			len(res.Added), len(res.Removed), len(res.Missing), len(res.Mismatched), len(res.Invalid))
		if len(res.Missing) > 0 {
			fmt.Fprintln(w, "Missing files are still recorded: copy them back, or refresh with --prune to forget them.")
		}
		if len(res.Mismatched) > 0 {
			fmt.Fprintln(w, "Clients refuse mismatched files: upload the recorded file again to repair them.")
		}
	})
	return err
}
