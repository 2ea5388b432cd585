package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

// TestProcess runs the built dispatch binary as Juju would, with hook tools and pro as shell
// scripts on PATH that record their arguments.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	dispatch := filepath.Join(dir, "charm", "dispatch")
	copyFile(t, testbin.Program(t, "./cmd/ubuntu-advantage-charm"), dispatch)
	tools := filepath.Join(dir, "tools")
	calls := filepath.Join(dir, "calls.txt")
	if err := os.MkdirAll(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"config-get": `{"contract_url":"https://contracts.canonical.com","ppa":"","token":"C1s3cret"}`,
		"pro":        "",
		"status-set": "",
		"juju-log":   "",
	}
	for name, out := range outputs {
		script := "#!/bin/sh\n" +
			`printf '%s' "$(basename "$0")" >>"$CALLS"` + "\n" +
			`for a in "$@"; do printf ' %s' "$a" >>"$CALLS"; done` + "\n" +
			`echo >>"$CALLS"` + "\n"
		if name == "pro" {
			// The proxy pro runs with; pro attach fails like an invalid token does; pro
			// status reports a machine not attached.
			script += `echo "  http_proxy=$http_proxy no_proxy=$no_proxy" >>"$CALLS"` + "\n" +
				`if [ "$1" = attach ]; then echo 'Invalid token. See https://ubuntu.com/pro/dashboard' >&2; exit 1; fi` + "\n" +
				`if [ "$1" = status ]; then echo '{"attached":false,"services":[]}'; fi` + "\n"
		}
		if out != "" {
			script += "cat <<'EOF'\n" + out + "\nEOF\n"
		}
		if err := os.WriteFile(filepath.Join(tools, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	cmd := exec.Command(dispatch)
	cmd.Dir = filepath.Dir(dispatch)
	cmd.Env = []string{
		"PATH=" + tools + ":/usr/bin:/bin",
		"JUJU_DISPATCH_PATH=hooks/config-changed",
		"JUJU_UNIT_NAME=ubuntu-advantage/0",
		"JUJU_CHARM_DIR=" + filepath.Dir(dispatch),
		"JUJU_SIM_ROOT=" + root,
		"CALLS=" + calls,
		"JUJU_CHARM_HTTP_PROXY=http://squid.internal:3128",
		"JUJU_CHARM_HTTPS_PROXY=",
		"JUJU_CHARM_NO_PROXY=10.0.0.0/8",
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dispatch: %v\n%s", err, stderr.String())
	}
	data, _ := os.ReadFile(calls)
	got := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	attachConfig := filepath.Join(root, "var/lib/ubuntu-advantage-charm/attach-config.yaml")
	want := []string{
		"config-get --format=json",
		"pro --version",
		"  http_proxy=http://squid.internal:3128 no_proxy=10.0.0.0/8",
		"pro config set http_proxy=http://squid.internal:3128",
		"  http_proxy=http://squid.internal:3128 no_proxy=10.0.0.0/8",
		"pro config unset https_proxy",
		"  http_proxy=http://squid.internal:3128 no_proxy=10.0.0.0/8",
		"juju-log --log-level INFO -- Pro client proxies: http_proxy \"http://squid.internal:3128\", https_proxy \"\"",
		"pro status --format json",
		"  http_proxy=http://squid.internal:3128 no_proxy=10.0.0.0/8",
		"status-set -- maintenance Attaching to Ubuntu Pro",
		"pro attach --attach-config " + attachConfig,
		"  http_proxy=http://squid.internal:3128 no_proxy=10.0.0.0/8",
		"status-set -- blocked Error attaching, possibly an invalid token or contract_url? (Invalid token. See https://ubuntu.com/pro/dashboard)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if strings.Contains(string(data), "C1s3cret") {
		t.Error("token on a command line")
	}
	conf, err := os.ReadFile(filepath.Join(root, "etc/ubuntu-advantage/uaclient.conf"))
	if err != nil || string(conf) != "contract_url: https://contracts.canonical.com\n" {
		t.Errorf("uaclient.conf %q, %v", conf, err)
	}
}

// copyFile copies the executable src to dst, creating dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
