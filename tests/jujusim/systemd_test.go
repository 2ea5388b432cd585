package jujusim_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestSystemctl(t *testing.T) {
	m, sc := newModel(t)
	sc.set(t, "install", `
mkdir -p "$JUJU_SIM_ROOT/usr/local/bin"
cp /bin/sleep "$JUJU_SIM_ROOT/usr/local/bin/svc"
cat > "$JUJU_SIM_ROOT/etc/systemd/system/svc.service" <<EOF
[Unit]
Description=test service

[Service]
ExecStart=/usr/local/bin/svc 1000
Environment="GREETING=hello world" OTHER=1
Restart=always
RestartSec=0.05

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl is-enabled svc > "$SIMTEST_SCRIPTS/before" || true
systemctl enable --now svc
systemctl is-active svc > "$SIMTEST_SCRIPTS/active"
systemctl is-enabled svc > "$SIMTEST_SCRIPTS/enabled"
`)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitIdle(t, m)
	for file, want := range map[string]string{"before": "disabled\n", "active": "active\n", "enabled": "enabled\n"} {
		if got := sc.read(t, file); got != want {
			t.Errorf("%s: got %q, want %q", file, got, want)
		}
	}
	pid, err := m.ServicePID("cli/0", "svc")
	if err != nil || pid == 0 {
		t.Fatalf("svc pid = %d, %v", pid, err)
	}
	root, _ := m.UnitRoot("cli/0")
	if exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); exe != filepath.Join(root, "usr/local/bin/svc") {
		t.Errorf("service runs %q, want the binary under the unit root", exe)
	}
	env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if !containsEnv(env, "GREETING=hello world") || !containsEnv(env, "OTHER=1") {
		t.Errorf("service environment %q lacks Environment= values", env)
	}

	// Restart=always brings a killed service back.
	syscall.Kill(pid, syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := m.WaitService(ctx, "cli/0", "svc", func(state string, p int) bool { return state == "active" && p != pid && p != 0 }); err != nil {
		t.Fatal(err)
	}

	res, err := m.Exec(ctx, "cli/0", "sh", "-c", "systemctl stop svc; systemctl is-active svc; echo $?")
	if err != nil || res.Stdout != "inactive\n3\n" {
		t.Errorf("stop/is-active = %+v, %v", res, err)
	}
	res, _ = m.Exec(ctx, "cli/0", "systemctl", "start", "nope")
	if res.Code != 5 || res.Stderr != "Failed to start nope.service: Unit nope.service not found.\n" {
		t.Errorf("start nope = %+v", res)
	}

	if _, err := m.Exec(ctx, "cli/0", "systemctl", "start", "svc"); err != nil {
		t.Fatal(err)
	}
	pid, _ = m.ServicePID("cli/0", "svc")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("service pid %d still alive after Close", pid)
	}
}

func containsEnv(environ []byte, kv string) bool {
	for _, e := range splitNUL(environ) {
		if e == kv {
			return true
		}
	}
	return false
}

func splitNUL(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	return out
}
