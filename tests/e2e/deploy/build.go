package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// ModulePath is the module this package builds from.
const ModulePath = "github.com/livepatch-onprem/livepatch"

// Binaries are the charms and programs built from the working tree, as `make charms` and
// `go build` make them, once per test binary.
type Binaries struct {
	// Dir holds everything below; removed by Main.
	Dir string
	// LivepatchCharm and UbuntuAdvantageCharm are the .charm archives of `make charms`.
	LivepatchCharm       string
	UbuntuAdvantageCharm string
	// Server, Admin and Client are livepatch-server, livepatch-admin and livepatch-client.
	Server string
	Admin  string
	Client string
	// Jujusim is the emulator's CLI, also the multi-call binary (hook tools, systemctl,
	// pro, stand-in charms) of the models this package starts.
	Jujusim string
}

var (
	buildOnce sync.Once
	built     *Binaries
	buildErr  error

	buildMu    sync.Mutex
	buildDir   string                    // parent of every build of this process
	charmBuild = map[string]*charmOnce{} // build tags -> livepatch charm
)

type charmOnce struct {
	once sync.Once
	path string
	err  error
}

// Build builds the charms and the programs once per test binary and returns them; later
// calls return the same files. The build takes some 15 seconds with a warm Go cache.
func Build(t testing.TB) *Binaries {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = BuildAll("") })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// BuildLivepatchCharm builds another revision of the livepatch charm whose bundled server
// is built with the given build tags (for example "e2emigration", which adds a schema
// migration), once per tag set and test binary, and returns the path of its .charm. Its
// server reports the version "<git describe>+<tags>".
func BuildLivepatchCharm(t testing.TB, tags ...string) string {
	t.Helper()
	path, err := PrebuildLivepatchCharm(tags...)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// PrebuildLivepatchCharm is BuildLivepatchCharm without a test, so that a test can start
// the build in a goroutine while it does other things; a later BuildLivepatchCharm with the
// same tags waits for it.
func PrebuildLivepatchCharm(tags ...string) (string, error) {
	key := strings.Join(tags, ",")
	buildMu.Lock()
	c, ok := charmBuild[key]
	if !ok {
		c = &charmOnce{}
		charmBuild[key] = c
	}
	buildMu.Unlock()
	c.once.Do(func() {
		dir, err := scratch()
		if err != nil {
			c.err = err
			return
		}
		out := filepath.Join(dir, "charms-"+strings.NewReplacer(",", "-", " ", "-").Replace(key))
		if err := makeCharms(out, tags); err != nil {
			c.err = err
			return
		}
		c.path = filepath.Join(out, "livepatch.charm")
	})
	return c.path, c.err
}

// scratch returns the directory of this process's builds, creating it.
func scratch() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		return buildDir, nil
	}
	dir, err := os.MkdirTemp("", "lp-e2e-")
	if err != nil {
		return "", fmt.Errorf("cannot create build directory: %w", err)
	}
	// The emulated machines run services as other users (postgres), which read nothing
	// here, but keep the tree traversable as the emulator's own directories are.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("cannot create build directory: %w", err)
	}
	buildDir = dir
	return dir, nil
}

// removeBuilds deletes what Build and BuildLivepatchCharm made.
func removeBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir = ""
	}
}

// BuildAll builds the charms (make charms) and the programs into dir, or into a new
// temporary directory when dir is empty, and returns them. Programs that are not tests
// (the demo) call it; tests call Build.
func BuildAll(dir string) (*Binaries, error) {
	if dir == "" {
		var err error
		if dir, err = scratch(); err != nil {
			return nil, err
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	b := &Binaries{
		Dir:                  dir,
		LivepatchCharm:       filepath.Join(dir, "charms", "livepatch.charm"),
		UbuntuAdvantageCharm: filepath.Join(dir, "charms", "ubuntu-advantage.charm"),
		Server:               filepath.Join(dir, "bin", "livepatch-server"),
		Admin:                filepath.Join(dir, "bin", "livepatch-admin"),
		Client:               filepath.Join(dir, "bin", "livepatch-client"),
		Jujusim:              filepath.Join(dir, "bin", "jujusim"),
	}
	// The programs first, in one go build with the flags make charms uses (CGO_ENABLED=0,
	// -trimpath): the charms then reuse what it compiled.
	cmd := exec.Command(goTool(), "build", "-ldflags", "-X main.version="+version(root), "-o", filepath.Join(dir, "bin")+"/",
		"./cmd/livepatch-server", "./cmd/livepatch-admin", "./cmd/livepatch-client", "./tests/cmd/jujusim")
	cmd.Dir = root
	cmd.Env = environ("CGO_ENABLED=0", "GOFLAGS=-trimpath")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cannot build the programs: %v\n%s", err, out)
	}
	if err := makeCharms(filepath.Join(dir, "charms"), nil); err != nil {
		return nil, err
	}
	return b, nil
}

// makeCharms runs `make charms CHARMS_OUT=out` in the repository, with build tags for the
// programs when tags is not empty (the charm revision then reports a version naming them).
func makeCharms(out string, tags []string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"-s", "charms", "CHARMS_OUT=" + out, "GO=" + goTool()}
	env := environ("CGO_ENABLED=0", "GOFLAGS=-trimpath")
	if len(tags) > 0 {
		env = environ("CGO_ENABLED=0", "GOFLAGS=-trimpath -tags="+strings.Join(tags, ","))
		args = append(args, "VERSION="+version(root)+"+"+strings.Join(tags, "."))
	}
	cmd := exec.Command("make", args...)
	cmd.Dir = root
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot build the charms (make %s): %v\n%s", strings.Join(args, " "), err, buf.Bytes())
	}
	return nil
}

// version is what the Makefile names the build: git describe, else "dev".
func version(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// goTool returns the go command that runs this test, else the one on PATH.
func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
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

// environ returns this process's environment with the given KEY=value entries replacing
// or adding to it.
func environ(set ...string) []string {
	env := os.Environ()
	for _, kv := range set {
		key, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		env = append(env, kv)
	}
	return env
}
