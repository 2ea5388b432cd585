// Package patchstore holds the patch file storage backends, implementations of
// server.PatchFiles: Postgres keeps files in the server's database (every unit sees every
// file), Filesystem in a local directory. Files are keyed by their patch filename, which
// is validated, so a name can never reach outside the store.
package patchstore

import (
	"github.com/livepatch-onprem/livepatch/server"
)

// checkName validates a patch filename before it is used as a key or a path.
func checkName(filename string) error {
	_, err := server.ParsePatchFilename(filename)
	return err
}

// notFound is the error for a missing file.
func notFound(filename string) error {
	return server.Errorf(server.CodeNotFound, "patch file %q not found", filename)
}
