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
	"io/fs"

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

// cursor is what every store's open file keeps besides its own reading state: what the
// file was when opened, the offset of the next Read, and whether it is closed. Stat, the
// Read cases that read nothing and the arithmetic of Seek are the same for every store.
type cursor struct {
	info   server.StoredFile
	pos    int64
	closed bool
}

// Stat describes the file as it was when opened.
func (c *cursor) Stat() server.StoredFile { return c.info }

// idle answers a Read of p that reads nothing: on a closed file, at the end, or into an
// empty p. ok is false when the store must read.
func (c *cursor) idle(p []byte) (ok bool, err error) {
	switch {
	case c.closed:
		return true, fs.ErrClosed
	case c.pos >= c.info.Size:
		return true, io.EOF
	}
	return len(p) == 0, nil
}

// seekTo returns the absolute offset a Seek asks for, without moving.
func (c *cursor) seekTo(offset int64, whence int) (int64, error) {
	if c.closed {
		return 0, fs.ErrClosed
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = c.pos + offset
	case io.SeekEnd:
		abs = c.info.Size + offset
	default:
		return 0, fmt.Errorf("cannot seek patch file %q: invalid whence %d", c.info.Filename, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("cannot seek patch file %q: negative position", c.info.Filename)
	}
	return abs, nil
}
