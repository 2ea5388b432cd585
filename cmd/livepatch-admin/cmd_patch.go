package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// cmdPatch groups the patch commands.
type cmdPatch struct {
	g *global
}

func (c *cmdPatch) command() *cobra.Command {
	return group("patch", "List, upload, promote and block patches",
		(&cmdPatchList{g: c.g}).command(),
		(&cmdPatchShow{g: c.g}).command(),
		(&cmdPatchUpload{g: c.g}).command(),
		(&cmdPatchPromote{g: c.g}).command(),
		(&cmdPatchPromoteAll{g: c.g}).command(),
		(&cmdPatchBlock{g: c.g}).command(),
		(&cmdPatchUnblock{g: c.g}).command(),
	)
}

// patchTable prints one line per patch file.
func patchTable(w io.Writer, patches []server.Patch) {
	if len(patches) == 0 {
		fmt.Fprintln(w, "No patches.")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "VERSION\tKERNEL\tFLAVOUR\tARCH\tTIER\tBLOCKED")
	for _, p := range patches {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Version, p.Kernel, p.Flavour, p.Architecture, p.Tier, yesNo(p.Blocked))
	}
	tw.Flush()
}

// signedBy names the key of a patch's origin signature, which clients with a trusted key
// check.
func signedBy(sig *server.PatchSignature) string {
	if sig == nil {
		return "not signed (clients with a trusted-key refuse it)"
	}
	return "key " + sig.KeyID
}

// cmdPatchList lists patches.
type cmdPatchList struct {
	g          *global
	flagTier   string
	flagKernel string
}

func (c *cmdPatchList) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List patch files, newest first",
		Args:  argNames(nil),
		RunE:  c.run,
	}
	cmd.Flags().StringVar(&c.flagTier, "tier", "", "only patches available to this tier")
	cmd.Flags().StringVar(&c.flagKernel, "kernel", "", "only patches for this kernel ABI or prefix (5.15.0-107)")
	cmd.RegisterFlagCompletionFunc("tier", c.g.completeTierFlag)
	return cmd
}

func (c *cmdPatchList) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	patches, err := cl.Patches(cmd.Context(), server.PatchFilter{Tier: c.flagTier, Kernel: c.flagKernel})
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(patches), func(w io.Writer) { patchTable(w, patches) })
}

// cmdPatchShow shows every file of a patch version in detail.
type cmdPatchShow struct {
	g *global
}

func (c *cmdPatchShow) command() *cobra.Command {
	return &cobra.Command{
		Use:   "show <version>",
		Short: "Show the files of a patch version in detail",
		Args:  argNames([]string{"<version>"}),
		RunE:  c.run,
	}
}

func (c *cmdPatchShow) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	patches, err := cl.PatchVersion(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return c.g.show(orEmpty(patches), func(w io.Writer) {
		for i, p := range patches {
			if i > 0 {
				fmt.Fprintln(w)
			}
			tw := newTable(w)
			blocked := "no"
			if p.Blocked {
				blocked = "yes"
				if p.BlockReason != "" {
					blocked += ": " + p.BlockReason
				}
			}
			rows := [][2]string{
				{"filename", p.Filename},
				{"version", p.Version},
				{"kernel", p.Kernel},
				{"flavour", p.Flavour},
				{"architecture", p.Architecture},
				{"module", p.Module},
				{"tier", p.Tier},
				{"blocked", blocked},
				{"source", p.Source},
				{"created", fmtTime(p.CreatedAt)},
				{"size", humanSize(p.Size)},
				{"sha256", p.SHA256},
				{"signed by", signedBy(p.Signature)},
			}
			if p.Description != "" {
				rows = append(rows, [2]string{"description", p.Description})
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
			}
			tw.Flush()
			if len(p.Fixes) > 0 {
				fmt.Fprintln(w, "fixes:")
				for _, f := range p.Fixes {
					line := "  - " + f.Name
					if f.Description != "" {
						line += ": " + f.Description
					}
					if f.Bug != "" {
						line += " (" + f.Bug + ")"
					}
					fmt.Fprintln(w, line)
				}
			}
		}
	})
}

// cmdPatchUpload uploads patch archives.
type cmdPatchUpload struct {
	g *global
}

func (c *cmdPatchUpload) command() *cobra.Command {
	return &cobra.Command{
		Use:   "upload <file>...",
		Short: "Upload patch archives (livepatch-<kernel>-<flavour>-<version>-<arch>.tar.bz2)",
		Long: `Upload patch archives to the server, which checks them and records them in
the first tier. Uploading a file the server already has is not an error. The
other files are still uploaded when one fails. A progress bar shows on a
terminal for files over 1 MiB.`,
		Args: argNames([]string{"<file>"}, "<file>..."),
		RunE: c.run,
	}
}

// progressThreshold is the size above which an upload shows a progress bar.
const progressThreshold = 1 << 20

func (c *cmdPatchUpload) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	var uploaded []server.Patch
	failed := 0
	for _, path := range args {
		p, created, err := c.upload(cmd, cl, path)
		if apiErr, ok := errors.AsType[*client.APIError](err); ok && apiErr.Status == 401 {
			return err // no point in trying the next files
		}
		if err != nil {
			fmt.Fprintf(c.g.stderr, "error: cannot upload %s: %v\n", path, err)
			failed++
			continue
		}
		uploaded = append(uploaded, p)
		if c.g.flagFormat == formatTable {
			if created {
				fmt.Fprintf(c.g.stdout, "Uploaded %s (version %s, tier %s)\n", p.Filename, p.Version, p.Tier)
			} else {
				fmt.Fprintf(c.g.stdout, "Already uploaded: %s (version %s, tier %s)\n", p.Filename, p.Version, p.Tier)
			}
		}
	}
	if c.g.flagFormat != formatTable {
		if err := c.g.show(orEmpty(uploaded), nil); err != nil {
			return err
		}
	}
	if failed > 0 {
		return errReported
	}
	return nil
}

func (c *cmdPatchUpload) upload(cmd *cobra.Command, cl *client.Client, path string) (server.Patch, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return server.Patch{}, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return server.Patch{}, false, err
	}
	if !st.Mode().IsRegular() {
		return server.Patch{}, false, fmt.Errorf("not a regular file")
	}
	name := filepath.Base(path)
	var opts []client.TransferOption
	if st.Size() > progressThreshold && isTerminal(c.g.stderr) {
		bar := newProgressBar(c.g.stderr, name, st.Size())
		defer bar.done()
		opts = append(opts, client.OnProgress(bar.update))
	}
	return cl.UploadPatch(cmd.Context(), name, f, st.Size(), opts...)
}

// cmdPatchPromote promotes a patch version to a tier.
type cmdPatchPromote struct {
	g *global
}

func (c *cmdPatchPromote) command() *cobra.Command {
	return &cobra.Command{
		Use:   "promote <version> <tier>",
		Short: "Promote every file of a patch version to a tier",
		Long: `Promote every file of a patch version to a tier, making it available to the
machines of that tier and of the tiers before it. Patches are never demoted.`,
		Example:           "  livepatch-admin patch promote 107.1 stable",
		Args:              argNames([]string{"<version>", "<tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(1),
	}
}

func (c *cmdPatchPromote) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	n, err := cl.PromotePatch(cmd.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	return c.g.show(map[string]int{"promoted": n}, func(w io.Writer) {
		fmt.Fprintf(w, "Promoted %s of patch %s to %s\n", plural(n, "file", "files"), args[0], args[1])
	})
}

// cmdPatchPromoteAll promotes every patch of one tier to another.
type cmdPatchPromoteAll struct {
	g *global
}

func (c *cmdPatchPromoteAll) command() *cobra.Command {
	return &cobra.Command{
		Use:               "promote-all <from-tier> <to-tier>",
		Short:             "Promote every patch of a tier to another tier",
		Example:           "  livepatch-admin patch promote-all candidate stable",
		Args:              argNames([]string{"<from-tier>", "<to-tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0, 1),
	}
}

func (c *cmdPatchPromoteAll) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	n, err := cl.PromoteAll(cmd.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	return c.g.show(map[string]int{"promoted": n}, func(w io.Writer) {
		fmt.Fprintf(w, "Promoted %s from %s to %s\n", plural(n, "patch file", "patch files"), args[0], args[1])
	})
}

// cmdPatchBlock blocks a patch version.
type cmdPatchBlock struct {
	g          *global
	flagReason string
}

func (c *cmdPatchBlock) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "block <version>",
		Short: "Block a patch version so no machine is offered it",
		Args:  argNames([]string{"<version>"}),
		RunE:  c.run,
	}
	cmd.Flags().StringVar(&c.flagReason, "reason", "", "why the patch is blocked, for other operators")
	return cmd
}

func (c *cmdPatchBlock) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	n, err := cl.BlockPatch(cmd.Context(), args[0], strings.TrimSpace(c.flagReason))
	if err != nil {
		return err
	}
	return c.g.show(map[string]int{"blocked": n}, func(w io.Writer) {
		fmt.Fprintf(w, "Blocked %s of patch %s\n", plural(n, "file", "files"), args[0])
	})
}

// cmdPatchUnblock unblocks a patch version.
type cmdPatchUnblock struct {
	g *global
}

func (c *cmdPatchUnblock) command() *cobra.Command {
	return &cobra.Command{
		Use:   "unblock <version>",
		Short: "Unblock a patch version",
		Args:  argNames([]string{"<version>"}),
		RunE:  c.run,
	}
}

func (c *cmdPatchUnblock) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	n, err := cl.UnblockPatch(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return c.g.show(map[string]int{"unblocked": n}, func(w io.Writer) {
		fmt.Fprintf(w, "Unblocked %s of patch %s\n", plural(n, "file", "files"), args[0])
	})
}
