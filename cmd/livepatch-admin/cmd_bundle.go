package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/offline"
)

// cmdBundle groups the offline bundle commands: a tier carried by hand to a server with
// no network path to its upstream.
type cmdBundle struct {
	g *global
}

func (c *cmdBundle) command() *cobra.Command {
	return group("bundle", "Export, verify and import offline bundles of a tier, for air-gapped servers",
		(&cmdBundleExport{g: c.g}).command(),
		(&cmdBundleVerify{g: c.g}).command(),
		(&cmdBundleImport{g: c.g}).command(),
	)
}

// bundleSummary is what the bundle commands print about a bundle file.
type bundleSummary struct {
	File        string    `json:"file"`
	Tier        string    `json:"tier"`
	Tiers       []string  `json:"tiers,omitempty"`
	GeneratedAt time.Time `json:"generated-at"`
	KeyID       string    `json:"key-id"`
	// Verified says whether the list's signature was checked with a trusted key.
	Verified bool  `json:"signature-verified"`
	Patches  int   `json:"patches"`
	Bytes    int64 `json:"bytes"` // of the patch files
	Size     int64 `json:"size"`  // of the bundle
}

func (s bundleSummary) print(w io.Writer) {
	line := func(key, value string) { fmt.Fprintf(w, "%-14s%s\n", key+":", value) }
	line("file", s.File)
	line("tier", s.Tier)
	if len(s.Tiers) > 0 {
		line("tiers", strings.Join(s.Tiers, ", "))
	}
	line("generated at", fmtTime(s.GeneratedAt))
	signature := "signed by key " + s.KeyID + ": verified with the trusted key"
	if !s.Verified {
		signature = "signed by key " + s.KeyID + ": NOT verified (give --trusted-key)"
	}
	line("signature", signature)
	line("patches", fmt.Sprintf("%d (%s), each verified: size, sha256, archive", s.Patches, humanSize(s.Bytes)))
	line("size", humanSize(s.Size))
}

// verifyBundle reads and verifies the bundle file at path: its structure, every file's
// size, SHA-256 and archive, and, with keys, the list's signature.
func verifyBundle(path string, keys []ed25519.PublicKey) (bundleSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return bundleSummary{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return bundleSummary{}, err
	}
	if !st.Mode().IsRegular() {
		return bundleSummary{}, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := offline.Read(f, offline.Options{Verify: func(signed server.SignedSyncList) (server.SyncList, error) {
		list, err := signed.VerifyWith(keys)
		if err != nil {
			return server.SyncList{}, fmt.Errorf("%w: %w", offline.ErrRefused, err)
		}
		return list, nil
	}})
	if err != nil {
		if errors.Is(err, offline.ErrRefused) {
			return bundleSummary{}, fmt.Errorf("%s is not a valid offline bundle: %s", path, strings.TrimPrefix(err.Error(), offline.ErrRefused.Error()+": "))
		}
		return bundleSummary{}, fmt.Errorf("cannot verify %s: %w", path, err)
	}
	return bundleSummary{
		File: path, Tier: b.List.Tier, Tiers: b.List.Tiers, GeneratedAt: b.List.GeneratedAt, KeyID: b.Signed.KeyID,
		Verified: len(keys) > 0, Patches: len(b.List.Patches), Bytes: b.Bytes, Size: st.Size(),
	}, nil
}

// trustedKeys parses --trusted-key: "" for none.
func trustedKeys(cmd *cobra.Command, value string) ([]ed25519.PublicKey, error) {
	if value == "" {
		return nil, nil
	}
	keys, err := server.ParsePublicKeys(value)
	if err != nil {
		return nil, cli.Usagef(cmd, "invalid --trusted-key: %v: give the content of the exporting server's signing.pub (several, comma-separated, while it rotates keys)", err)
	}
	return keys, nil
}

// progressOption returns a progress bar option for a transfer of size bytes (-1: the
// server says), when stderr is a terminal; done ends the bar.
func (g *global) progressOption(name string, size int64) (opts []client.TransferOption, done func()) {
	if !isTerminal(g.stderr) || (size >= 0 && size <= progressThreshold) {
		return nil, func() {}
	}
	bar := newProgressBar(g.stderr, name, size)
	return []client.TransferOption{client.OnProgress(func(sent, total int64) {
		if total > progressThreshold {
			bar.update(sent, total)
		}
	})}, bar.done
}

// cmdBundleExport writes the offline bundle of a tier to a file.
type cmdBundleExport struct {
	g              *global
	flagTrustedKey string
}

func (c *cmdBundleExport) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export <tier> <file>",
		Short: "Write the offline bundle of a tier: its signed patch list and every patch file",
		Long: `Write the offline bundle of <tier> to <file>: the patch list of the tier signed
with this server's signing key (sync-server.signing-key), exactly as a
downstream server syncing <tier> gets it, followed by every listed patch file.
The server must be a sync upstream (it has a signing key).

The file is written next to <file> and renamed into place once complete, then
read back and verified: every file's size, SHA-256 and archive, and, with
--trusted-key (the content of this server's signing.pub), the signature. A
progress bar shows on a terminal.

Carry the file to the air-gapped server and run livepatch-admin bundle import
there.`,
		Example: `  livepatch-admin bundle export stable stable.bundle
  livepatch-admin bundle export stable stable.bundle --trusted-key "$(cat signing.pub)"`,
		Args:              argNames([]string{"<tier>", "<file>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
	cmd.Flags().StringVar(&c.flagTrustedKey, "trusted-key", "", "verify the signature with this public key (the server's signing.pub)")
	return cmd
}

func (c *cmdBundleExport) run(cmd *cobra.Command, args []string) error {
	tier, path := args[0], args[1]
	keys, err := trustedKeys(cmd, c.flagTrustedKey)
	if err != nil {
		return err
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	tmp, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", path, err)
	}
	defer tmp.Close() // discards a partial export
	opts, done := c.g.progressOption(filepath.Base(path), -1)
	_, err = cl.ExportBundle(cmd.Context(), tier, tmp, opts...)
	done()
	if err != nil {
		return err
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	sum, err := verifyBundle(path, keys)
	if err != nil {
		return err
	}
	return c.g.show(sum, func(w io.Writer) {
		fmt.Fprintf(w, "Exported tier %s to %s\n", tier, path)
		sum.print(w)
	})
}

// cmdBundleVerify verifies an offline bundle file without a server.
type cmdBundleVerify struct {
	g              *global
	flagTrustedKey string
}

func (c *cmdBundleVerify) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify <file>",
		Short: "Verify an offline bundle file, with no server",
		Long: `Verify an offline bundle file as a whole and entry by entry: its signed list
(the signature, with --trusted-key), then every listed patch file, each present
once, with its listed size and SHA-256 and a valid patch archive. It exits 1
when the bundle is truncated, tampered with, or signed by another key.`,
		Example: `  livepatch-admin bundle verify stable.bundle --trusted-key "$(cat signing.pub)"`,
		Args:    argNames([]string{"<file>"}),
		RunE:    c.run,
	}
	cmd.Flags().StringVar(&c.flagTrustedKey, "trusted-key", "", "the exporting server's public key (its signing.pub); without it the signature is not checked")
	return cmd
}

func (c *cmdBundleVerify) run(cmd *cobra.Command, args []string) error {
	keys, err := trustedKeys(cmd, c.flagTrustedKey)
	if err != nil {
		return err
	}
	sum, err := verifyBundle(args[0], keys)
	if err != nil {
		return err
	}
	return c.g.show(sum, sum.print)
}

// cmdBundleImport sends an offline bundle to the server, which applies it as a sync run.
type cmdBundleImport struct {
	g *global
}

func (c *cmdBundleImport) command() *cobra.Command {
	return &cobra.Command{
		Use:   "import <file>",
		Short: "Import an offline bundle: the server verifies it and records it as a sync does",
		Long: `Send an offline bundle to the server. The server verifies the list's
signature with patch-sync.trusted-key (the charm's sync_trusted_key), checks
that it holds patch-sync.upstream-tier, and verifies every file before it
records anything; then it records the patches, their origin signatures and,
with patch-sync.sync-tiers, the tiers, exactly as a sync from the upstream
does, and leaves a sync report (livepatch-admin sync reports). Importing the
same bundle again adds nothing. A truncated or tampered bundle, one signed by
another key, or one older than a list already applied is refused, and nothing
is recorded but the failed report. It works with patch-sync.enabled off. A
progress bar shows on a terminal.`,
		Example: "  livepatch-admin bundle import stable.bundle",
		Args:    argNames([]string{"<file>"}),
		RunE:    c.run,
	}
}

func (c *cmdBundleImport) run(cmd *cobra.Command, args []string) error {
	path := args[0]
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	opts, done := c.g.progressOption(filepath.Base(path), st.Size())
	r, err := cl.ImportBundle(cmd.Context(), f, st.Size(), opts...)
	done()
	if err != nil {
		return err
	}
	if c.g.flagFormat != formatTable {
		if err := c.g.show(r, nil); err != nil {
			return err
		}
	}
	if r.Outcome != server.SyncSuccess {
		return fmt.Errorf("import of %s failed on %s: %s", path, r.Unit, r.Error)
	}
	if c.g.flagFormat == formatTable {
		fmt.Fprintf(c.g.stdout, "Imported %s on %s: %s added (%s); sync report %d\n",
			path, r.Unit, plural(r.PatchesAdded, "patch", "patches"), humanSize(r.Bytes), r.ID)
	}
	return nil
}
