package patchstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// Filesystem stores patch files as plain files in one directory, so that operators can
// fill it with rsync and then refresh storage. Only one server unit can use it.
type Filesystem struct {
	dir string
}

var _ server.PatchFiles = (*Filesystem)(nil)

// NewFilesystem returns a store of the files in dir. It does not create dir: a missing
// directory is often a volume that is not mounted, and the store reports it (List and Put
// fail with unavailable) rather than filling the mount point underneath.
func NewFilesystem(dir string) (*Filesystem, error) {
	if dir == "" {
		return nil, server.Errorf(server.CodeInvalid, "filesystem patch storage needs a directory")
	}
	return &Filesystem{dir: dir}, nil
}

// errNoDir is the error for a patch directory that does not exist or is not a directory.
var errNoDir = server.Errorf(server.CodeUnavailable, "patch storage directory does not exist: is its volume mounted?")

// checkDir reports errNoDir when the directory is missing.
func (s *Filesystem) checkDir() error {
	fi, err := os.Stat(s.dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return errNoDir
	}
	if err != nil {
		return fmt.Errorf("cannot read patch directory: %w", err)
	}
	return nil
}

// Put writes r to a temporary file in the directory and renames it over filename, so a
// reader sees the old or the new file, never a mix.
func (s *Filesystem) Put(ctx context.Context, filename string, r io.Reader) (int64, error) {
	if err := checkName(filename); err != nil {
		return 0, err
	}
	if err := s.checkDir(); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-"+filename+"-*")
	if err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, contextReader{ctx, r})
	if err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, filename)); err != nil {
		os.Remove(tmp.Name())
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	done = true
	return n, nil
}

// Open opens a stored file.
func (s *Filesystem) Open(ctx context.Context, filename string) (server.PatchFile, error) {
	if err := checkName(filename); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, filename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(filename)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open patch file %q: %w", filename, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot open patch file %q: %w", filename, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, notFound(filename)
	}
	return &file{File: f, info: server.StoredFile{Filename: filename, Size: fi.Size(), ModTime: fi.ModTime().UTC()}}, nil
}

// file is an open file of a Filesystem store.
type file struct {
	*os.File
	info server.StoredFile
}

// Stat describes the file as it was when opened.
func (f *file) Stat() server.StoredFile { return f.info }

// List lists the regular files whose names end in .tar.bz2, valid patch filenames or not,
// so that a storage refresh can report the invalid ones.
func (s *Filesystem) List(ctx context.Context) ([]server.StoredFile, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoDir
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list patch files: %w", err)
	}
	var files []server.StoredFile
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, server.PatchFileSuffix) {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("cannot list patch files: %w", err)
		}
		files = append(files, server.StoredFile{Filename: name, Size: fi.Size(), ModTime: fi.ModTime().UTC()})
	}
	return files, nil
}

// Delete removes a stored file; a missing file is not an error.
func (s *Filesystem) Delete(ctx context.Context, filename string) error {
	if err := checkName(filename); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.dir, filename))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot delete patch file %q: %w", filename, err)
	}
	return nil
}

// contextReader stops reading when its context is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (r contextReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
