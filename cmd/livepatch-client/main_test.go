package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/agent"
	"github.com/livepatch-onprem/livepatch/internal/badserver"
	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testMachineID = "0123456789abcdef0123456789abcdef"

// machine is a fake machine for the client: a root tree with /etc/machine-id, /proc and
// /sys/kernel/livepatch, a kernel release, an insmod that loads modules into the fake
// sysfs, and a state directory.
type machine struct {
	t        *testing.T
	root     string
	stateDir string
	release  string
	euid     int
	now      func() time.Time
	insmods  []string
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	m := &machine{t: t, root: t.TempDir(), stateDir: filepath.Join(t.TempDir(), "state"), release: "5.15.0-107-generic", now: time.Now}
	for name, content := range map[string]string{
		"etc/machine-id":                    testMachineID + "\n",
		"proc/cpuinfo":                      "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n",
		"proc/stat":                         "cpu  1 2 3\nbtime 1714550400\n",
		"proc/uptime":                       "93600.52 180000.10\n",
		"proc/sys/kernel/hostname":          "web-7\n",
		"run/cloud-init/instance-data.json": `{"v1": {"cloud_name": "openstack", "region": "RegionOne", "availability_zone": "nova"}}`,
	} {
		path := filepath.Join(m.root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(m.sysfs(), 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *machine) sysfs() string { return filepath.Join(m.root, "sys/kernel/livepatch") }

// insmod "loads" a module: it appears enabled in the fake sysfs.
func (m *machine) insmod(ctx context.Context, name string, args ...string) ([]byte, error) {
	m.insmods = append(m.insmods, name+" "+strings.Join(args, " "))
	module := strings.TrimSuffix(filepath.Base(args[len(args)-1]), ".ko")
	if err := os.MkdirAll(filepath.Join(m.sysfs(), module), 0o755); err != nil {
		return nil, err
	}
	return nil, os.WriteFile(filepath.Join(m.sysfs(), module, "enabled"), []byte("1\n"), 0o644)
}

// global returns the global of a command line on the machine, and its output buffers.
func (m *machine) global(stdin string) (g *global, stdout, stderr *bytes.Buffer) {
	stdout, stderr = new(bytes.Buffer), new(bytes.Buffer)
	return &global{
		stdin:  strings.NewReader(stdin),
		stdout: stdout,
		stderr: stderr,
		euid:   m.euid,
		opts: agent.Options{
			System: agent.System{Root: m.root, Uname: func() (string, string, error) { return m.release, "x86_64", nil }},
			Runner: m.insmod,
			Now:    m.now,
		},
	}, stdout, stderr
}

// run runs livepatch-client with the state directory and stdin.
func (m *machine) run(stdin string, args ...string) (code int, stdout, stderr string) {
	m.t.Helper()
	g, out, errb := m.global(stdin)
	args = append([]string{"--state-dir", m.stateDir}, args...)
	code = run(m.t.Context(), g, args)
	return code, out.String(), errb.String()
}

// mustRun runs livepatch-client and fails the test unless it exits 0.
func (m *machine) mustRun(stdin string, args ...string) string {
	m.t.Helper()
	code, out, errOut := m.run(stdin, args...)
	if code != 0 {
		m.t.Fatalf("livepatch-client %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// testCA is a self-signed CA certificate (ed25519 key from a zero seed), valid 2024-2034.
var testCA = `
-----BEGIN CERTIFICATE-----
MIIBJDCB16ADAgECAgEBMAUGAytlcDAaMRgwFgYDVQQDEw9FeGFtcGxlIFJvb3Qg
Q0EwHhcNMjQwMTAxMDAwMDAwWhcNMzQwMTAxMDAwMDAwWjAaMRgwFgYDVQQDEw9F
eGFtcGxlIFJvb3QgQ0EwKjAFBgMrZXADIQA7aie8zrakLWKjqNAqbw1zZTIVdx3i
Q6Y6wEihi1naKaNCMEAwDgYDVR0PAQH/BAQDAgIEMA8GA1UdEwEB/wQFMAMBAf8w
HQYDVR0OBBYEFBOeOUDmS1SRciCI2aDXQWKPyCbgMAUGAytlcANBACQXgtyrCzKg
E10lRdUvx3UwXoRRFX2jreCymGqPRlw76Nztb1IyydGUApqAtjbrlbcK0BO5vxZR
vBy+jva/pwI=
-----END CERTIFICATE-----
`[1:]

func TestConfigShowAndSet(t *testing.T) {
	m := newMachine(t)
	want := `
remote-server: ""
ca-certs: ""
check-interval: 60 # minutes (default)
dial-timeout: 12s # default
request-timeout: 1m0s # default
http-proxy: ""
https-proxy: ""
no-proxy: ""
trusted-key: ""
mode: normal # default
machine-id: 0123456789abcdef0123456789abcdef # default: from /etc/machine-id
kernel: 5.15.0-107-generic # default: the running kernel
report-hostname: true # default
cutoff-date: ""
patch-delay: ""
`[1:]
	if got := m.mustRun("", "config"); got != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}

	if out := m.mustRun(testCA, "config", "remote-server=http://10.0.0.1/", "ca-certs=@stdin", "check-interval=30",
		"https-proxy=http://user:hunter2@squid:3128", "mode=no-apply", "kernel=5.15.0-108-generic", "request-timeout=90s"); out != "" {
		t.Errorf("config set printed %q", out)
	}
	want = `
remote-server: http://10.0.0.1
ca-certs: '1 certificate: Example Root CA (sha256 7d0e8cac, expires 2034-01-01)'
check-interval: 30 # minutes
dial-timeout: 12s # default
request-timeout: 1m30s
http-proxy: ""
https-proxy: http://user:xxxxx@squid:3128
no-proxy: ""
trusted-key: ""
mode: no-apply
machine-id: 0123456789abcdef0123456789abcdef # default: from /etc/machine-id
kernel: 5.15.0-108-generic
report-hostname: true # default
cutoff-date: ""
patch-delay: ""
`[1:]
	if got := m.mustRun("", "config"); got != want {
		t.Errorf("config after set:\n%s\nwant:\n%s", got, want)
	}
	// key= clears.
	m.mustRun("", "config", "https-proxy=", "kernel=", "check-interval=")
	got := m.mustRun("", "config")
	for _, line := range []string{"https-proxy: \"\"\n", "kernel: 5.15.0-107-generic # default: the running kernel\n", "check-interval: 60 # minutes (default)\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("config after clearing lacks %q:\n%s", line, got)
		}
	}
	for name, wantPerm := range map[string]os.FileMode{"": 0o755, "config.yaml": 0o600} {
		fi, err := os.Stat(filepath.Join(m.stateDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != wantPerm {
			t.Errorf("%s/%s: mode %v, want %v", m.stateDir, name, fi.Mode().Perm(), wantPerm)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	m := newMachine(t)
	tests := []struct {
		stdin string
		args  []string
		err   string
	}{
		{args: nil, err: "error: missing command\n"},
		{args: []string{"enabel"}, err: `error: unknown command "enabel" for "livepatch-client" (did you mean "enable"?)` + "\n"},
		{args: []string{"enable"}, err: "error: enable takes one argument, the auth token\n"},
		{args: []string{"enable", "a", "b"}, err: "error: enable takes one argument, the auth token\n"},
		{args: []string{"disable", "now"}, err: `error: unexpected argument "now"` + "\n"},
		{args: []string{"status", "--format", "xml"}, err: `error: invalid format "xml": want one of humane, json, yaml` + "\n"},
		{args: []string{"status", "--bogus"}, err: "error: unknown flag: --bogus\n"},
		{args: []string{"config", "colour=blue"}, err: `error: unknown config key "colour"` + "\nvalid keys: remote-server, ca-certs, check-interval, dial-timeout, request-timeout, http-proxy, https-proxy, no-proxy, trusted-key, mode, machine-id, kernel, report-hostname, cutoff-date, patch-delay\n"},
		{args: []string{"config", "remote-server"}, err: `error: invalid argument "remote-server": want key=value (key= clears a key)` + "\n"},
		{args: []string{"config", "mode=fast"}, err: `error: invalid mode "fast": want one of normal, no-apply, no-refresh, stop` + "\n"},
		{args: []string{"config", "check-interval=soon"}, err: `error: invalid check-interval "soon": want a number of minutes from 0 to 10080` + "\n"},
		{stdin: "not a certificate", args: []string{"config", "ca-certs=@stdin"}, err: "error: invalid ca-certs: not PEM certificates (want -----BEGIN CERTIFICATE----- blocks)\n"},
		{args: []string{"config", "ca-certs=@stdin"}, err: "error: ca-certs=@stdin: standard input is empty\n"},
		{stdin: testCA, args: []string{"config", "ca-certs=@stdin", "trusted-key=@stdin"}, err: "error: both ca-certs and trusted-key read @stdin: standard input can be read once\n"},
	}
	for _, tt := range tests {
		code, out, errOut := m.run(tt.stdin, tt.args...)
		if code != cli.ExitUsage || out != "" || !strings.HasPrefix(errOut, tt.err) || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and %q with the usage", tt.args, code, out, errOut, tt.err)
		}
	}
	// Bad values leave the config alone.
	if _, err := os.Stat(filepath.Join(m.stateDir, "config.yaml")); err == nil {
		t.Error("a usage error wrote the config")
	}
}

func TestRuntimeErrors(t *testing.T) {
	m := newMachine(t)
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"status"}, "error: machine is not enabled: run livepatch-client enable <token>\n"},
		{[]string{"refresh"}, "error: machine is not enabled: run livepatch-client enable <token>\n"},
		{[]string{"enable", "token"}, "error: remote-server is not set: run livepatch-client config remote-server=<URL> first\n"},
	}
	for _, tt := range tests {
		code, out, errOut := m.run("", tt.args...)
		if code != cli.ExitError || out != "" || errOut != tt.err {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and %q", tt.args, code, out, errOut, tt.err)
		}
	}
	if out := m.mustRun("", "disable"); out != "This machine is not enabled: nothing to do.\n" {
		t.Errorf("disable of a machine not enabled: %q", out)
	}
	m.mustRun("", "config", "remote-server=http://127.0.0.1:1")
	code, _, errOut := m.run("", "enable", "token")
	if code != cli.ExitError || !strings.HasPrefix(errOut, "error: cannot reach livepatch server at http://127.0.0.1:1: ") {
		t.Errorf("enable with the server down: exit %d, %q", code, errOut)
	}
}

func TestNeedsRoot(t *testing.T) {
	m := newMachine(t)
	m.euid = 1000
	for _, args := range [][]string{
		{"--state-dir", agent.DefaultStateDir, "enable", "token"},
		{"--state-dir", agent.DefaultStateDir, "disable"},
		{"--state-dir", agent.DefaultStateDir, "refresh"},
		{"--state-dir", agent.DefaultStateDir, "run"},
		{"--state-dir", agent.DefaultStateDir, "config", "mode=stop"},
	} {
		code, _, errOut := m.run("", args...)
		name := "livepatch-client " + args[2]
		want := "error: " + name + " must be run as root: try sudo " + name + " (or use --state-dir DIR)\n"
		if code != cli.ExitError || errOut != want {
			t.Errorf("%q as non-root: exit %d, %q; want %q", args, code, errOut, want)
		}
	}
	// A directory the user cannot write gives the same advice.
	if os.Geteuid() != 0 {
		ro := t.TempDir()
		os.Chmod(ro, 0o555)
		code, _, errOut := m.run("", "--state-dir", filepath.Join(ro, "state"), "config", "mode=stop")
		if code != cli.ExitError || !strings.Contains(errOut, "permission denied: run livepatch-client as root (sudo), or use --state-dir") {
			t.Errorf("read-only state dir: exit %d, %q", code, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	m := newMachine(t)
	if out := m.mustRun("", "--version"); out != "livepatch-client version "+agent.Version+"\n" {
		t.Errorf("--version: %q", out)
	}
}

// TestHungServer: enable and refresh against a server that accepts connections and never
// answers end with exit 1 once request-timeout runs out, saying what to raise.
func TestHungServer(t *testing.T) {
	url := badserver.Silent(t)
	m := newMachine(t)
	m.mustRun("", "config", "remote-server="+url, "request-timeout=1s")
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := m.run("", "enable", "auth-token")
		done <- result{code, stdout, stderr}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("enable has not ended after 30s: it waits without a deadline")
	}
	want := "error: livepatch server at " + url + " did not answer within 1s (a slow server needs a longer request-timeout: livepatch-client config request-timeout=5m)\n"
	if r.code != cli.ExitError || r.stdout != "" || r.stderr != want {
		t.Errorf("enable: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", r.code, r.stdout, r.stderr, want)
	}
}
