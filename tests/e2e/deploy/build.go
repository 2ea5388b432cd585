package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

// ModulePath is the module this package builds from.
const ModulePath = testbin.ModulePath

// Binaries are the charms and programs built from the working tree, as `make charms` and
// `go build` make them: the charms once per test binary, the programs once per run
// (internal/testbin).
type Binaries struct {
	// Dir holds the charms; removed by Main.
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
	buildDir   string                    // parent of this process's charms
	charmBuild = map[string]*charmOnce{} // build tags -> livepatch charm
)

type charmOnce struct {
	once sync.Once
	path string
	err  error
}

// Build builds the programs (once per test run: internal/testbin) and the charms (once per
// test binary) and returns them; later calls return the same files. When no program
// changed since the last run, it takes some seconds, packing the charms.
func Build(t testing.TB) *Binaries {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = BuildAll() })
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

// scratch returns the directory of this process's charms, creating it.
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

// removeBuilds deletes the charms Build and BuildLivepatchCharm made (the programs stay
// in testbin's shared directory for the other test binaries).
func removeBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir = ""
	}
}

// programs are the packages of Binaries' programs.
var programs = []string{"./cmd/livepatch-server", "./cmd/livepatch-admin", "./cmd/livepatch-client", "./tests/cmd/jujusim"}

// BuildAll builds the programs (into testbin's shared directory, where the other test
// binaries of the run find them built) and the charms (make charms, into a new temporary
// directory, from the same builds of their programs) and returns them.
func BuildAll() (*Binaries, error) {
	bin, err := testbin.Build(nil, programs...)
	if err != nil {
		return nil, err
	}
	dir, err := scratch()
	if err != nil {
		return nil, err
	}
	if err := makeCharms(filepath.Join(dir, "charms"), nil); err != nil {
		return nil, err
	}
	return &Binaries{
		Dir:                  dir,
		LivepatchCharm:       filepath.Join(dir, "charms", "livepatch.charm"),
		UbuntuAdvantageCharm: filepath.Join(dir, "charms", "ubuntu-advantage.charm"),
		Server:               filepath.Join(bin, "livepatch-server"),
		Admin:                filepath.Join(bin, "livepatch-admin"),
		Client:               filepath.Join(bin, "livepatch-client"),
		Jujusim:              filepath.Join(bin, "jujusim"),
	}, nil
}

// makeCharms runs `make charms CHARMS_OUT=out` (testbin.MakeCharms).
func makeCharms(out string, tags []string) error { return testbin.MakeCharms(out, tags) }

// RepoRoot returns the root of the repository: the first directory from the working
// directory up that holds this module's go.mod.
func RepoRoot() (string, error) { return testbin.RepoRoot() }

// environ returns this process's environment with the given KEY=value entries replacing
// or adding to it.
func environ(set ...string) []string { return testbin.Environ(set...) }
