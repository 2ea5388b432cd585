// Package testbin builds the module's programs for tests once, however many test binaries
// of a `go test` run ask for them: every build with the same settings goes to one
// directory under the temporary directory, under a file lock, and `go build -o` into it
// links again only when a package a program is made of changed (the go command compares
// the build ID of the binary there with the one it would build). A run of the whole suite
// so links livepatch-server once per set of build tags, and the next run not at all when
// nothing changed.
//
// Programs are built as `make charms` builds them: CGO_ENABLED=0 and -trimpath, with the
// version of the Makefile (git describe) in main.version.
package testbin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// ModulePath is the module whose programs this package builds.
const ModulePath = "github.com/livepatch-onprem/livepatch"

// Build builds the main packages (paths relative to the repository root, such as
// "./cmd/livepatch-server") with the build tags into their shared directory, and returns
// that directory; each binary is named after its package's last element, as go build
// names it. The directory is shared with the other test binaries of this and later runs:
// a caller runs what it holds, and never writes into it.
func Build(tags []string, pkgs ...string) (dir string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir, unlock, err := Lock(tags)
	if err != nil {
		return "", err
	}
	defer unlock()
	args := []string{"build", "-ldflags", "-X main.version=" + Version(root, tags), "-o", dir + "/"}
	cmd := exec.Command(GoTool(), append(args, pkgs...)...)
	cmd.Dir = root
	cmd.Env = Env(dir, tags)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cannot build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return dir, nil
}

// Program builds one main package as Build does and returns the path of its binary; it
// fails the test when the build fails.
func Program(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	dir, err := Build(tags, pkg)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, path.Base(pkg))
}

// MakeCharms runs `make charms CHARMS_OUT=out` in the repository, with build tags for the
// programs when tags is not empty (the charm revision then reports a version naming them).
// The charms' programs are built in the shared directory of the tags (CHARMS_BIN), under
// its lock, so that the charms and the tests run the same link of each program.
func MakeCharms(out string, tags []string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	dir, unlock, err := Lock(tags)
	if err != nil {
		return err
	}
	defer unlock()
	args := []string{"-s", "charms", "CHARMS_OUT=" + out, "CHARMS_BIN=" + dir, "GO=" + GoTool(), "VERSION=" + Version(root, tags)}
	cmd := exec.Command("make", args...)
	cmd.Dir = root
	cmd.Env = Env(dir, tags)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot build the charms (make %s): %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Lock takes the file lock of the shared directory of builds with the build tags,
// creating the directory, and returns it with the function that releases the lock. A
// caller that builds into the directory with other tools (make charms with CHARMS_BIN)
// holds the lock while it does, with Env's environment.
func Lock(tags []string) (dir string, unlock func(), err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", nil, err
	}
	// One directory per repository checkout and tag set: another checkout, or a build
	// with other tags, would relink the same binaries back and forth.
	h := sha256.Sum256([]byte(root + "\x00" + strings.Join(tags, ",")))
	base := filepath.Join(os.TempDir(), fmt.Sprintf("livepatch-testbin-%d", os.Getuid()))
	dir = filepath.Join(base, hex.EncodeToString(h[:8]))
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o755); err != nil {
		return "", nil, fmt.Errorf("cannot create build directory: %w", err)
	}
	// The emulated machines run services as other users, which read nothing here but
	// need to reach the binaries.
	for _, d := range []string{base, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return "", nil, fmt.Errorf("cannot create build directory: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("cannot lock build directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("cannot lock build directory: %w", err)
	}
	return dir, func() { f.Close() }, nil
}

// Env returns the environment of a build into dir with the build tags: this process's,
// with CGO_ENABLED=0, GOFLAGS=-trimpath [-tags=...] and GOTMPDIR inside dir, so that the
// go command renames each new binary into place (a program running the old one keeps it)
// instead of copying over it.
func Env(dir string, tags []string) []string {
	goflags := "GOFLAGS=-trimpath"
	if len(tags) > 0 {
		goflags += " -tags=" + strings.Join(tags, ",")
	}
	return Environ("CGO_ENABLED=0", goflags, "GOTMPDIR="+filepath.Join(dir, ".tmp"))
}

// Version is the version the Makefile gives a build (git describe, else "dev"), followed
// by "+" and the build tags joined with "." when there are any.
func Version(root string, tags []string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	v := "dev"
	if out, err := cmd.Output(); err == nil {
		v = strings.TrimSpace(string(out))
	}
	if len(tags) > 0 {
		v += "+" + strings.Join(tags, ".")
	}
	return v
}

// GoTool returns the go command that runs this test, else the one on PATH.
func GoTool() string {
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		if p := filepath.Join(goroot, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// RepoRoot returns the root of the repository: the first directory from the working
// directory up that holds this module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("cannot find the repository: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+ModulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository: no go.mod of " + ModulePath + " above the working directory")
		}
		dir = parent
	}
}

// Environ returns this process's environment with the given KEY=value entries replacing
// or adding to it.
func Environ(set ...string) []string {
	env := os.Environ()
	for _, kv := range set {
		key, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		env = append(env, kv)
	}
	return env
}
