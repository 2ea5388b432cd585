package livepatch_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

// A machine that reboots before the charm is configured must not start a server that
// cannot run: until a valid configuration is rendered there is no unit to start and
// nothing is enabled; the unit, once written, starts only when the configuration exists.
func TestServiceBeforeConfiguration(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	delete(st.Config, "url_template")
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Status.Name != "blocked" {
		t.Fatalf("status %v, want blocked", res.Status)
	}
	for _, line := range hookstest.CommandLines(res.Commands) {
		if strings.HasPrefix(line, "systemctl") {
			t.Errorf("unconfigured charm ran %q", line)
		}
	}
	for _, p := range []string{livepatch.UnitPath, livepatch.ConfigPath} {
		if _, err := os.Stat(filepath.Join(e.H.Root, p)); !os.IsNotExist(err) {
			t.Errorf("unconfigured charm wrote %s (%v)", p, err)
		}
	}

	st = lpt.Ready(true)
	res = e.H.Run(t, "config-changed", st)
	lines := hookstest.CommandLines(res.Commands)
	enable := indexOf(lines, "systemctl enable livepatch-server.service")
	if enable < 0 || enable > indexOf(lines, "systemctl restart livepatch-server.service") {
		t.Errorf("commands %q: want the service enabled before its first start", lines)
	}
	unit := e.H.ReadFile(t, livepatch.UnitPath)
	if want := "ConditionPathExists=" + filepath.Join(e.H.Root, livepatch.ConfigPath) + "\n"; !strings.Contains(unit, want) {
		t.Errorf("unit lacks %q:\n%s", want, unit)
	}
}

func indexOf(lines []string, s string) int {
	for i, l := range lines {
		if l == s {
			return i
		}
	}
	return -1
}

// The server runs as the livepatch system user, created at install; what it reads (the
// configuration, readable by that user only) and writes (a filesystem store the charm
// creates) belong to it, and the sandbox lets it write there and nowhere else.
func TestServiceUserOwnsItsFiles(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["patchstore"] = "filesystem"
	st.Config["storage_path"] = "/srv/livepatch/patches"
	e.Install(t, st)
	if !e.Users[livepatch.ServiceUser] {
		t.Fatalf("install did not create the %s user", livepatch.ServiceUser)
	}
	if res := e.H.Run(t, "config-changed", st); res.Err != nil || res.Status.Name != "active" {
		t.Fatalf("config-changed: %v %v", res.Status, res.Err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{livepatch.ConfigPath, 0o600}, {"/srv/livepatch/patches", 0o750 | os.ModeDir}} {
		info, err := os.Stat(filepath.Join(e.H.Root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		sys := info.Sys().(*syscall.Stat_t)
		if info.Mode() != f.mode || int(sys.Uid) != lpt.UserID() || int(sys.Gid) != lpt.UserID() {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", f.path, info.Mode(), sys.Uid, sys.Gid, f.mode, lpt.UserID(), lpt.UserID())
		}
	}
	unit := strings.ReplaceAll(e.H.ReadFile(t, livepatch.UnitPath), e.H.Root, "")
	for _, want := range []string{"User=livepatch\n", "ProtectSystem=strict\n", "ReadWritePaths=-/srv/livepatch/patches\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
}

// An unprivileged server cannot listen on a privileged port: such a port is a Blocked
// status that says what to do.
func TestPrivilegedPortBlocked(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["port"] = 80
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	want := hooks.Blocked("port 80 is not between 1024 and 65535 (the server runs unprivileged, as the livepatch user; haproxy serves clients on 80 and 443)")
	if res.Status != want {
		t.Errorf("status %v, want %v", res.Status, want)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for livepatch-server\.service: ([0-9.]+)`)

// systemd-analyze security rates the sandbox of the rendered unit (offline, from the file
// alone) 3.0 or better, with either patch store.
func TestServiceSandboxScore(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is missing: apt-get install -y systemd")
		}
		t.Skip("systemd-analyze is missing: apt-get install -y systemd")
	}
	for _, store := range []string{"postgres", "filesystem"} {
		t.Run(store, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(true)
			st.Config["patchstore"] = store
			e.Install(t, st)
			if res := e.H.Run(t, "config-changed", st); res.Err != nil {
				t.Fatal(res.Err)
			}
			dir := t.TempDir()
			unit := strings.ReplaceAll(e.H.ReadFile(t, livepatch.UnitPath), e.H.Root, "")
			if err := os.WriteFile(filepath.Join(dir, livepatch.ServiceName), []byte(unit), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "security", "--offline=true", "--no-pager", livepatch.ServiceName)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			m := exposureRE.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure level in:\n%s", out)
			}
			score, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("exposure level %.1f", score)
			if score > 3.0 {
				t.Errorf("exposure level %.1f, want 3.0 or better:\n%s", score, out)
			}
		})
	}
}
