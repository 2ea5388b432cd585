package livepatch_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

