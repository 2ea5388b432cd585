package jujusim_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestMain(m *testing.M) {
	// The test binary is also the hook tool / systemctl binary of the models it starts.
	if code, ok := jujusim.MultiCall(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// testCharm writes a charm whose dispatch sources $SIMTEST_SCRIPTS/<hook-or-action> when it
// exists, so each test scripts the hooks it cares about with the real hook tools.
func testCharm(t *testing.T, name, metadata, config, actions string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	files := map[string]string{
		"metadata.yaml": metadata,
		"config.yaml":   config,
		"dispatch": `#!/bin/sh
set -e
hook="${JUJU_DISPATCH_PATH#*/}"
echo "$JUJU_UNIT_NAME $JUJU_DISPATCH_PATH" >> "$SIMTEST_SCRIPTS/ran"
if [ -f "$SIMTEST_SCRIPTS/$hook" ]; then . "$SIMTEST_SCRIPTS/$hook"; fi
`,
	}
	if actions != "" {
		files["actions.yaml"] = actions
	}
	if config == "" {
		files["config.yaml"] = "options: {}\n"
	}
	for f, content := range files {
		mode := os.FileMode(0o644)
		if f == "dispatch" {
			mode = 0o755
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// scripts is the directory of per-hook scripts of one test.
type scripts string

func (s scripts) set(t *testing.T, hook, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(string(s), hook), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s scripts) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(string(s), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// newModel starts a model whose hooks source the test's scripts; opts adjust its options.
func newModel(t *testing.T, opts ...func(*jujusim.Options)) (*jujusim.Model, scripts) {
	t.Helper()
	sc := scripts(t.TempDir())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := jujusim.Options{
		Dir:      t.TempDir(),
		ExtraEnv: []string{"SIMTEST_SCRIPTS=" + string(sc), "SIMTEST_BIN=" + exe},
		Logf: func(format string, args ...any) {
			if testing.Verbose() {
				t.Logf(format, args...)
			}
		},
	}
	for _, f := range opts {
		f(&o)
	}
	m, err := jujusim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("model seed: rerun with JUJUSIM_SEED=%d", m.Seed())
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m, sc
}

// leaderAndMinion returns the leader of a two-unit application and its other unit.
func leaderAndMinion(t *testing.T, m *jujusim.Model, app string) (string, string) {
	t.Helper()
	leader := m.Leader(app)
	units := m.Status().UnitNames(app)
	if leader == "" || len(units) != 2 {
		t.Fatalf("%s: leader %q of units %v, want a leader of two", app, leader, units)
	}
	if units[0] == leader {
		return leader, units[1]
	}
	return leader, units[0]
}

func waitIdle(t *testing.T, m *jujusim.Model) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := m.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

const (
	srvMeta = `
name: srv
summary: test server
description: test server
provides:
  db: {interface: testdb}
peers:
  cluster: {interface: srv-peer}
`
	cliMeta = `
name: cli
summary: test client
description: test client
requires:
  db: {interface: testdb}
`
	subMeta = `
name: sub
summary: test subordinate
description: test subordinate
subordinate: true
requires:
  juju-info: {interface: juju-info, scope: container}
`
	cliConfig = `
options:
  name: {type: string, default: "x", description: a string}
  port: {type: int, default: 8080, description: an int}
  debug: {type: boolean, default: false, description: a bool}
  ratio: {type: float, description: a float without default}
`
	cliActions = `
greet:
  description: greet someone
  params:
    who: {type: string, default: world}
    times: {type: integer, default: 1}
  additionalProperties: false
`
)
