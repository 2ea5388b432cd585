package atomicfile_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
)

// entries lists dir: what a replacement left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func check(t *testing.T, path, want string, perm fs.FileMode) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != want {
		t.Errorf("%s holds %q, want %q", path, data, want)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != perm {
		t.Errorf("%s mode %v, want %v", path, info.Mode().Perm(), perm)
	}
}

func TestWrite(t *testing.T) {
	for _, perm := range []fs.FileMode{0o600, 0o644, 0o666} { // 0666: the umask does not apply
		t.Run(perm.String(), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.yaml")
			if err := atomicfile.Write(path, []byte("one\n"), perm); err != nil {
				t.Fatal(err)
			}
			check(t, path, "one\n", perm)
			// A reader holding the old file keeps its content.
			old, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			if err := atomicfile.Write(path, []byte("two\n"), perm); err != nil {
				t.Fatal(err)
			}
			check(t, path, "two\n", perm)
			buf := make([]byte, 16)
			n, _ := old.Read(buf)
			if string(buf[:n]) != "one\n" {
				t.Errorf("the old file's reader reads %q, want %q", buf[:n], "one\n")
			}
			if diff := cmp.Diff([]string{"config.yaml"}, entries(t, dir)); diff != "" {
				t.Errorf("directory (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteNoDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "config.yaml")
	if err := atomicfile.Write(path, []byte("x"), 0o644); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
}

// TestCreate checks the streaming form: nothing shows before Commit, Close discards.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}

	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("partial"); err != nil {
		t.Fatal(err)
	}
	check(t, path, "old", 0o644)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check(t, path, "old", 0o644)
	if diff := cmp.Diff([]string{"bundle.tar"}, entries(t, dir)); diff != "" {
		t.Errorf("after Close, directory (-want +got):\n%s", diff)
	}

	f, err = atomicfile.Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("new"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close after Commit: %v", err)
	}
	check(t, path, "new", 0o600)
	if diff := cmp.Diff([]string{"bundle.tar"}, entries(t, dir)); diff != "" {
		t.Errorf("after Commit, directory (-want +got):\n%s", diff)
	}
	if err := f.Commit(); err == nil {
		t.Error("a second Commit succeeded")
	}
}
