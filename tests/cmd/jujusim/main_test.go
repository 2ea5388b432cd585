package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestMain(m *testing.M) {
	if code, ok := jujusim.MultiCall(); ok {
		os.Exit(code)
	}
	// Started through the "jujusim" symlink, the test binary is the CLI (and the daemon).
	if filepath.Base(os.Args[0]) == "jujusim" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

const demoCharm = `
name: demo
summary: demo
description: demo
peers:
  ring: {interface: demo-ring}
`

func writeDemoCharm(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "demo")
	os.MkdirAll(dir, 0o755)
	files := map[string]string{
		"metadata.yaml": demoCharm,
		"config.yaml":   "options:\n  greeting: {type: string, default: hello, description: greeting}\n",
		"actions.yaml":  "hello:\n  description: say hello\n  params:\n    name: {type: string}\n  required: [name]\n",
		"dispatch": `#!/bin/sh
case "$JUJU_DISPATCH_PATH" in
actions/hello) action-set message="$(config-get greeting) $(action-get name)" ;;
hooks/secret-changed) status-set active "secret revision $JUJU_SECRET_REVISION" ;;
*) status-set active "$(config-get greeting)" ;;
esac
`,
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == "dispatch" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCLI(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "jujusim")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "model")
	jujusimCmd := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "JUJUSIM_HOME="+home)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), code
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := jujusimCmd(args...)
		if code != 0 {
			t.Fatalf("jujusim %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	t.Cleanup(func() { jujusimCmd("destroy-model", "--no-prompt") })

	must("deploy", writeDemoCharm(t), "-n", "2")
	must("wait", "--timeout", "60s", "--status", "demo=active")
	must("configure", "demo", "greeting=hi")
	must("wait", "--timeout", "60s")
	if got := must("config", "demo", "greeting"); got != "hi\n" {
		t.Errorf("config demo greeting = %q", got)
	}
	out := must("run-action", "demo/leader", "hello", "name=bob", "--wait")
	if !strings.Contains(out, "message: hi bob") || !strings.Contains(out, "status: completed") {
		t.Errorf("run-action output:\n%s", out)
	}
	if _, errOut, code := jujusimCmd("run", "demo/0", "hello"); code == 0 || !strings.Contains(errOut, "name") {
		t.Errorf("run without a required param: exit %d, %s", code, errOut)
	}
	var st jujusim.Status
	if err := json.Unmarshal([]byte(must("status", "--format", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if u, ok := st.Unit("demo/1"); !ok || u.Workload.Message != "hi" {
		t.Errorf("status of demo/1 = %+v", u)
	}
	// The leader is whichever unit won the lease: the other is not.
	leader, other := "demo/0", "demo/1"
	if u, _ := st.Unit("demo/1"); u.Leader {
		leader, other = other, leader
	}
	if out := must("status"); !strings.Contains(out, leader+"*") {
		t.Errorf("tabular status lacks the leader mark of %s:\n%s", leader, out)
	}
	if got := must("ssh", other, "is-leader"); got != "False\n" {
		t.Errorf("ssh %s is-leader = %q", other, got)
	}
	if got := must("ssh", leader, "is-leader"); got != "True\n" {
		t.Errorf("ssh %s is-leader = %q", leader, got)
	}
	if out := must("show-unit", "demo/0"); !strings.Contains(out, "endpoint: ring") {
		t.Errorf("show-unit:\n%s", out)
	}
	// User secrets, as an operator types them.
	uri := strings.TrimSpace(must("add-secret", "greeting-secret", "greeting=bonjour", "--info", "what to say"))
	if !strings.HasPrefix(uri, "secret:") {
		t.Errorf("add-secret printed %q", uri)
	}
	if _, errOut, code := jujusimCmd("add-secret", "bad", "ab=1"); code != 1 || !strings.Contains(errOut, `key "ab" not valid`) {
		t.Errorf("add-secret with a short key: exit %d, %s", code, errOut)
	}
	if _, _, code := jujusimCmd("ssh", "demo/0", "secret-get", uri); code != 1 {
		t.Errorf("secret-get before grant-secret: exit %d, want 1", code)
	}
	must("grant-secret", "greeting-secret", "demo")
	if got := must("ssh", "demo/0", "secret-get", uri, "greeting"); got != "bonjour\n" {
		t.Errorf("secret-get after grant-secret = %q", got)
	}
	must("update-secret", "greeting-secret", "greeting=salut")
	must("wait", "--timeout", "60s")
	if out := must("status"); !strings.Contains(out, "secret revision 2") {
		t.Errorf("no secret-changed after update-secret:\n%s", out)
	}
	if out := must("show-secret", "greeting-secret", "--reveal"); !strings.Contains(out, "greeting: salut") || !strings.Contains(out, "revision: 2") {
		t.Errorf("show-secret --reveal:\n%s", out)
	}
	must("remove-secret", "greeting-secret")
	if out := must("secrets"); strings.Contains(out, "greeting-secret") {
		t.Errorf("secrets after remove-secret:\n%s", out)
	}
	must("remove-unit", "demo/1")
	must("wait", "--timeout", "60s")
	if out := must("debug-log", "--replay", "--include", "demo/1"); !strings.Contains(out, "unit removed") {
		t.Errorf("debug-log:\n%s", out)
	}
	must("destroy-model", "--no-prompt")
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("model directory still there after destroy-model: %v", err)
	}
	if _, errOut, code := jujusimCmd("status"); code == 0 || !strings.Contains(errOut, "no model running") {
		t.Errorf("status after destroy: exit %d %s", code, errOut)
	}
}
