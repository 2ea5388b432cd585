package layout_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

const module = testbin.ModulePath + "/"

// pkg is a package of the module as go list sees it, its paths relative to the module.
type pkg struct {
	imports []string // direct imports (non-test files)
	deps    []string // transitive dependencies (non-test files)
}

// list returns the module's packages, keyed by their path relative to the module root
// ("server/httpapi"); paths outside the module keep their import path.
func list(t *testing.T) map[string]pkg {
	t.Helper()
	root, err := testbin.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testbin.GoTool(), "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	rel := func(paths string) []string {
		var ps []string
		for p := range strings.FieldsSeq(paths) {
			ps = append(ps, strings.TrimPrefix(p, module))
		}
		return ps
	}
	pkgs := map[string]pkg{}
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		fields := strings.Split(strings.TrimSpace(line), "|")
		if len(fields) != 3 {
			t.Fatalf("go list line %q", line)
		}
		path := strings.TrimPrefix(fields[0], module)
		pkgs[path] = pkg{imports: rel(fields[1]), deps: rel(fields[2])}
		ownPkgs[path] = true
	}
	for _, want := range []string{"server", "server/httpapi", "hooks", "agent", "tests/jujusim"} {
		if _, ok := pkgs[want]; !ok {
			t.Fatalf("go list does not list %s", want)
		}
	}
	return pkgs
}

// ownPkgs holds the paths of the module's packages, relative to the module; list fills it.
var ownPkgs = map[string]bool{}

// own reports whether path is a package of the module.
func own(path string) bool { return ownPkgs[path] }

// standard reports whether path is a standard library package: not the module's, and
// without a dot in its first element.
func standard(path string) bool {
	return !own(path) && !strings.Contains(strings.Split(path, "/")[0], ".")
}

// under reports whether path is dir or below it.
func under(path string, dirs ...string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return path == d || strings.HasPrefix(path, d+"/") })
}

var (
	adapters    = []string{"server/postgres", "server/patchstore", "server/httpapi", "server/upstream"}
	charms      = []string{"hooks", "actions", "cmd/livepatch-charm", "cmd/ubuntu-advantage-charm"}
	testTooling = []string{"tests", "internal/pgtest", "internal/s3test", "internal/testca", "internal/badserver",
		"internal/syncbuf", "internal/testbin", "hooks/hookstest", "hooks/livepatch/livepatchtest"}
)

// TestImportRules checks the import rules of docs/architecture.md.
func TestImportRules(t *testing.T) {
	pkgs := list(t)
	forbid := func(who string, deps []string, rule string, bad func(dep string) bool) {
		t.Helper()
		for _, d := range deps {
			if bad(d) {
				t.Errorf("%s depends on %s: %s", who, d, rule)
			}
		}
	}
	for path, p := range pkgs {
		switch {
		case path == "server":
			forbid(path, p.deps, "server imports only the standard library", func(d string) bool { return !standard(d) })
		case path == "server/config":
			forbid(path, p.deps, "server/config imports nothing of the module", own)
		case path == "server/postgres", path == "server/patchstore":
			forbid(path, p.deps, "the store adapters import, of the module, only server", func(d string) bool { return own(d) && d != "server" })
		case path == "server/httpapi":
			forbid(path, p.deps, "httpapi imports neither postgres nor upstream", func(d string) bool { return d == "server/postgres" || d == "server/upstream" })
		case path == "server/upstream":
			forbid(path, p.deps, "upstream imports neither postgres, httpapi nor patchstore", func(d string) bool {
				return d == "server/postgres" || d == "server/httpapi" || d == "server/patchstore"
			})
		}
		if !under(path, "server", "cmd/livepatch-server", "tests", "internal/s3test") {
			forbid(path, p.imports, "the adapters are wired only in server/app and cmd/livepatch-server", func(d string) bool { return under(d, adapters...) })
		}
		if under(path, charms...) {
			forbid(path, p.deps, "the charms do not depend on the adapters, server/client or lib/pq", func(d string) bool {
				return under(d, adapters...) || d == "server/client" || under(d, "github.com/lib/pq")
			})
		}
		if under(path, "agent", "cmd/livepatch-client", "cmd/livepatch-admin") {
			forbid(path, p.deps, "the agent and the admin CLI reach the server through server/client only", func(d string) bool {
				return under(d, adapters...) || under(d, "hooks")
			})
		}
		if !under(path, testTooling...) {
			forbid(path, p.deps, "test tooling is imported only by tests and by other test tooling", func(d string) bool { return under(d, testTooling...) })
		}
		if under(path, "tests/jujusim", "tests/standin") {
			forbid(path, p.deps, "the emulator runs the charms, the agent and the server as processes", func(d string) bool {
				return under(d, "hooks/livepatch", "hooks/ubuntuadvantage", "actions", "agent") || (under(d, "server") && d != "server/config")
			})
		}
	}
}

// TestRulesSeeViolations checks the checks: each rule catches a dependency it forbids.
func TestRulesSeeViolations(t *testing.T) {
	list(t)
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"strings", true}, {"net/http", true}, {"server", false}, {"github.com/lib/pq", false}, {"golang.org/x/net/http/httpproxy", false},
	} {
		if got := standard(tt.path); got != tt.want {
			t.Errorf("standard(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
	if !under("tests/standin/pro", testTooling...) || under("testsuite", testTooling...) || !under("server/httpapi", adapters...) {
		t.Error("under does not match package trees")
	}
}
