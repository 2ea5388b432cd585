// Package patchstore holds the patch file storage backends, implementations of
// server.PatchFiles: Postgres keeps files in the server's database (every unit sees every
// file), Filesystem in a local directory. Files are keyed by their patch filename, which
// is validated, so a name can never reach outside the store.
package patchstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/livepatch-onprem/livepatch/server"
)

// SHA256 returns the hex SHA-256 of the bytes stored under filename in files; not-found
// when there is no such file.
func SHA256(ctx context.Context, files server.PatchFiles, filename string) (string, error) {
	f, err := files.Open(ctx, filename)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("cannot read patch file %q: %w", filename, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkName validates a patch filename before it is used as a key or a path.
func checkName(filename string) error {
	_, err := server.ParsePatchFilename(filename)
	return err
}

// notFound is the error for a missing file.
func notFound(filename string) error {
	return server.Errorf(server.CodeNotFound, "patch file %q not found", filename)
}
