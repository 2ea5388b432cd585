package testbin_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

const program = "./internal/testbin/testdata/version"

// inode identifies the file at path, so that a test sees whether it was replaced.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

// TestProgramOnce checks that concurrent builds of a program share one binary, that a
// build of an unchanged program leaves it in place, and that it carries the version.
func TestProgramOnce(t *testing.T) {
	const n = 4
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var dir string
			dir, errs[i] = testbin.Build([]string{"testbintest"}, program)
			paths[i] = filepath.Join(dir, "version")
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("concurrent builds gave %s and %s", paths[0], p)
		}
	}
	before := inode(t, paths[0])
	if again := testbin.Program(t, program, "testbintest"); again != paths[0] || inode(t, again) != before {
		t.Errorf("a build of the unchanged program replaced it")
	}
	out, err := exec.Command(paths[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	root, err := testbin.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), testbin.Version(root, []string{"testbintest"}); got != want {
		t.Errorf("version %q, want %q", got, want)
	}
	if other := testbin.Program(t, program); other == paths[0] {
		t.Errorf("builds with and without tags share %s", other)
	}
}
