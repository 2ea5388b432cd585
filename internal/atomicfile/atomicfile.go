// Package atomicfile replaces files so that a reader sees the old content or the new, never
// a part, and a crash leaves one of them on disk: the new content goes to a temporary file
// in the same directory, which is synced, renamed over the file, and the directory synced
// so that the rename itself is durable. Every file the project writes in place of another
// (the charms' machine files, the client's config and patches, the admin CLI's login cache and
// bundles) is written here.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces the file at path with data, with the permissions perm (the umask does not
// apply). Its errors are those of the os package, which name the file.
func Write(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Commit()
}

// File is the new content of a file being written: Commit puts it in place; Close before
// Commit discards it. Its name (Name) is a temporary file's, beside the file it replaces.
type File struct {
	*os.File
	path      string
	committed bool
}

// Create starts replacing the file at path with new content, with the permissions perm
// (the umask does not apply). The caller writes through the File, then calls Commit, and
// Close in any case (a deferred Close after Commit does nothing).
func Create(path string, perm fs.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, path: path}, nil
}

// Commit syncs the new content, renames it over the file and syncs the directory. After an
// error, the file is as it was and the new content is gone.
func (f *File) Commit() error {
	if f.committed {
		return errors.New("atomicfile: Commit called twice")
	}
	f.committed = true
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.File.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.File.Name())
		return err
	}
	return syncDir(filepath.Dir(f.path))
}

// Close discards the new content unless Commit was called.
func (f *File) Close() error {
	if f.committed {
		return nil
	}
	f.committed = true
	err := f.File.Close()
	os.Remove(f.File.Name())
	return err
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
