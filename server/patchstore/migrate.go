package patchstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/livepatch-onprem/livepatch/server"
)

// MigrateResult says what Migrate did with each file of the source store.
type MigrateResult struct {
	// Copied are the files copied and verified.
	Copied []string `json:"copied"`
	// Present are the files the target held already with the right SHA-256 (a run that
	// resumes an interrupted one finds those it had copied).
	Present []string `json:"present"`
	// Skipped are the stored files whose names are not patch filenames: no store but a
	// filesystem one can hold them, and storage refresh reports them.
	Skipped []string `json:"skipped"`
	// Failed are the files that could not be copied or verified, with why.
	Failed []MigrateFailure `json:"failed"`
}

// MigrateFailure is a file Migrate could not copy.
type MigrateFailure struct {
	Filename string `json:"filename"`
	Error    string `json:"error"`
}

// Migrate copies every file of from into to, one at a time, each while holding lock of its
// filename (server.Store.LockPatchFile, so that an upload of that file waits), and
// verifies each copy by reading it back from to. recorded maps the filenames the server
// records to their SHA-256: a copy must have that digest, and a source file that does not
// is a failure, not copied. An unrecorded file's digest is the one read from the source.
//
// Migrate can be run again after an interruption, or after the server switched stores to
// catch files uploaded meanwhile: a file the target holds with the right digest is not
// copied again, and since a Put replaces atomically an interrupted copy leaves the old
// object or none. Failures of single files do not stop the run; an error does (a store
// unavailable, ctx done).
func Migrate(ctx context.Context, from, to server.PatchFiles, recorded map[string]string,
	lock func(ctx context.Context, filename string, fn func(ctx context.Context) error) error,
) (MigrateResult, error) {
	res := MigrateResult{Copied: []string{}, Present: []string{}, Skipped: []string{}, Failed: []MigrateFailure{}}
	files, err := from.List(ctx)
	if err != nil {
		return res, err
	}
	for _, f := range files {
		name := f.Filename
		if checkName(name) != nil {
			res.Skipped = append(res.Skipped, name)
			continue
		}
		var copied bool
		err := lock(ctx, name, func(ctx context.Context) error {
			var err error
			copied, err = migrateFile(ctx, from, to, name, recorded[name])
			return err
		})
		switch code := server.ErrorCode(err); {
		case err == nil && copied:
			res.Copied = append(res.Copied, name)
		case err == nil:
			res.Present = append(res.Present, name)
		case ctx.Err() != nil || code == server.CodeUnavailable:
			return res, err
		default:
			res.Failed = append(res.Failed, MigrateFailure{Filename: name, Error: err.Error()})
		}
	}
	return res, nil
}

// migrateFile copies one file unless the target has it with the digest want (the
// recorded one, or the source's when empty); it reports whether it copied.
func migrateFile(ctx context.Context, from, to server.PatchFiles, name, want string) (bool, error) {
	if want == "" {
		sum, err := SHA256(ctx, from, name)
		if server.ErrorCode(err) == server.CodeNotFound {
			return false, nil // deleted since the listing: nothing to copy
		}
		if err != nil {
			return false, err
		}
		want = sum
	}
	switch sum, err := SHA256(ctx, to, name); {
	case err == nil && sum == want:
		return false, nil
	case err != nil && server.ErrorCode(err) != server.CodeNotFound:
		return false, err
	}
	src, err := from.Open(ctx, name)
	if server.ErrorCode(err) == server.CodeNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer src.Close()
	h := sha256.New()
	if _, err := to.Put(ctx, name, io.TeeReader(src, h)); err != nil {
		return false, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		// The source is not what the server recorded: do not leave the copy.
		if err := to.Delete(ctx, name); err != nil {
			return false, err
		}
		return false, fmt.Errorf("stored bytes of %s have SHA-256 %s, not the recorded %s: not copied (see storage refresh)", name, got, want)
	}
	got, err := SHA256(ctx, to, name)
	if err != nil {
		return false, err
	}
	if got != want {
		return false, fmt.Errorf("copy of %s reads back with SHA-256 %s, want %s", name, got, want)
	}
	return true, nil
}
