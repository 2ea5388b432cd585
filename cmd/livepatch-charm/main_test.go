package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jujucharm "github.com/juju/charm/v12"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

// dispatch is the charm binary, built once per test run (internal/testbin) for the
// process tests.
var dispatch string

func TestMain(m *testing.M) {
	dir, err := testbin.Build(nil, "./cmd/livepatch-charm")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot build the dispatch binary: %v\n", err)
		os.Exit(1)
	}
	dispatch = filepath.Join(dir, "livepatch-charm")
	os.Exit(m.Run())
}

// TestNoDatabaseDriver keeps lib/pq out of the hook binary.
func TestNoDatabaseDriver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(dep, "github.com/lib/pq") {
			t.Errorf("cmd/livepatch-charm depends on %s", dep)
		}
	}
}

// unit is a fake unit: a charm directory holding the dispatch binary, a filesystem root, and
// hook tools as shell scripts that record their arguments and print canned output.
type unit struct {
	charmDir, root, tools, calls string
}

func newUnit(t *testing.T, outputs map[string]string) *unit {
	t.Helper()
	base := t.TempDir()
	u := &unit{
		charmDir: filepath.Join(base, "charm"),
		root:     filepath.Join(base, "root"),
		tools:    filepath.Join(base, "tools"),
		calls:    filepath.Join(base, "calls.txt"),
	}
	for _, d := range []string{u.charmDir, u.root, u.tools, filepath.Join(u.charmDir, "hooks"), filepath.Join(u.charmDir, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(dispatch)
	if err != nil {
		t.Fatal(err)
	}
	writeExec(t, filepath.Join(u.charmDir, "dispatch"), string(data))
	if err := os.Symlink("../dispatch", filepath.Join(u.charmDir, "hooks", "install")); err != nil {
		t.Fatal(err)
	}
	tools := []string{"config-get", "relation-ids", "relation-list", "relation-get", "relation-set", "status-set",
		"application-version-set", "is-leader", "juju-log", "open-port", "close-port", "network-get", "unit-get",
		"action-get", "action-set", "action-fail", "action-log", "systemctl"}
	for _, name := range tools {
		out, ok := outputs[name]
		script := "#!/bin/sh\n" +
			`printf '%s' "$(basename "$0")" >>"$CALLS"` + "\n" +
			`for a in "$@"; do printf ' %s' "$a" >>"$CALLS"; done` + "\n" +
			`echo >>"$CALLS"` + "\n"
		switch {
		case strings.HasPrefix(out, "exit "):
			script += "echo 'ERROR permission denied' >&2\n" + out + "\n"
		case ok:
			script += "cat <<'EOF'\n" + out + "\nEOF\n"
		}
		writeExec(t, filepath.Join(u.tools, name), script)
	}
	return u
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// run runs the charm as Juju does and returns the exit code, stderr and the tool calls.
func (u *unit) run(t *testing.T, argv0, dispatchPath string) (int, string, []string) {
	t.Helper()
	cmd := exec.Command(argv0)
	cmd.Dir = u.charmDir
	cmd.Env = []string{
		"PATH=" + u.tools + ":/usr/bin:/bin",
		"JUJU_UNIT_NAME=livepatch/0",
		"JUJU_MODEL_UUID=6b5b8c3e-0d3c-4e39-8f4f-5d2a3a6d7e01",
		"JUJU_CHARM_DIR=" + u.charmDir,
		"JUJU_SIM_ROOT=" + u.root,
		"CALLS=" + u.calls,
	}
	if dispatchPath != "" {
		cmd.Env = append(cmd.Env, "JUJU_DISPATCH_PATH="+dispatchPath)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(u.calls)
	return code, stderr.String(), strings.Split(strings.TrimSpace(string(data)), "\n")
}

// defaultConfig returns what config-get --format=json prints for the charm's defaults.
func defaultConfig(t *testing.T) string {
	t.Helper()
	cd, err := jujucharm.ReadCharmDir(filepath.Join("..", "..", "charms", "livepatch"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(cd.Config().DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestProcessConfigChangedBlocked(t *testing.T) {
	u := newUnit(t, map[string]string{
		"config-get":   defaultConfig(t),
		"relation-ids": `[]`,
	})
	code, stderr, calls := u.run(t, filepath.Join(u.charmDir, "dispatch"), "hooks/config-changed")
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	// Invalid config stops the hook before any relation is read.
	want := []string{
		"config-get --format=json",
		"status-set -- blocked " + livepatch.MessageURLTemplateNotSet,
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("tool calls (-want +got):\n%s", diff)
	}
}

func TestProcessInstallThroughHookSymlink(t *testing.T) {
	u := newUnit(t, nil)
	writeExec(t, filepath.Join(u.charmDir, livepatch.BundledBinary), "#!/bin/sh\necho 'livepatch-server v9.9.9'\n")
	// No JUJU_DISPATCH_PATH: the hook name comes from argv[0], as with very old Juju.
	code, stderr, calls := u.run(t, filepath.Join(u.charmDir, "hooks", "install"), "")
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"application-version-set -- v9.9.9",
		"status-set -- maintenance livepatch-server installed, waiting for configuration",
	} {
		if !slices.Contains(calls, want) {
			t.Errorf("no call %q in %q", want, calls)
		}
	}
	if _, err := os.Stat(filepath.Join(u.root, livepatch.ServerBinary)); err != nil {
		t.Errorf("install did not create %s: %v", livepatch.ServerBinary, err)
	}
	// The unit is written and enabled only once a valid configuration exists.
	if _, err := os.Stat(filepath.Join(u.root, livepatch.UnitPath)); !os.IsNotExist(err) {
		t.Errorf("install wrote %s before any configuration: %v", livepatch.UnitPath, err)
	}
	for _, call := range calls {
		if strings.HasPrefix(call, "systemctl enable") {
			t.Errorf("install called %q before any configuration", call)
		}
	}
}

func TestProcessHookToolFailure(t *testing.T) {
	u := newUnit(t, map[string]string{"config-get": "exit 1"})
	code, stderr, _ := u.run(t, filepath.Join(u.charmDir, "dispatch"), "hooks/update-status")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.HasPrefix(stderr, "ERROR hook update-status: cannot run hook tool config-get: ") ||
		!strings.Contains(stderr, "permission denied") {
		t.Errorf("stderr %q", stderr)
	}
}

func TestProcessAction(t *testing.T) {
	u := newUnit(t, map[string]string{
		"action-get": `{}`,
		"is-leader":  `false`,
	})
	code, stderr, calls := u.run(t, filepath.Join(u.charmDir, "dispatch"), "actions/schema-upgrade")
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	want := "action-fail -- schema-upgrade must run on the leader: juju run livepatch/leader schema-upgrade"
	if !slices.Contains(calls, want) {
		t.Errorf("no call %q in %q", want, calls)
	}
}
