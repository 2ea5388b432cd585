package jujusim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/standin/haproxy"
	"github.com/livepatch-onprem/livepatch/tests/standin/postgresql"
	"github.com/livepatch-onprem/livepatch/tests/standin/pro"
	"github.com/livepatch-onprem/livepatch/tests/standin/prometheus"
	"github.com/livepatch-onprem/livepatch/tests/standin/s3integrator"
)

func init() {
	RegisterStandin(StandinCharm{Name: "haproxy", Files: haproxy.Files, Main: haproxy.Main})
	RegisterStandin(StandinCharm{Name: "postgresql", Files: postgresql.Files, Main: postgresql.Main})
	RegisterStandin(StandinCharm{Name: "prometheus", Files: prometheus.Files, Main: prometheus.Main})
	RegisterStandin(StandinCharm{Name: "s3-integrator", Files: s3integrator.Files, Main: s3integrator.Main})
	// s3-integrator on track 2/ (its application is still s3-integrator).
	RegisterStandin(StandinCharm{Name: "s3-integrator-2", Files: s3integrator.Files2, Main: s3integrator.Main2})
	for _, name := range []string{"pro", "ubuntu-advantage", "ua"} {
		RegisterCommand(name, pro.Main)
	}
	for _, name := range []string{"apt-get", "apt", "add-apt-repository"} {
		RegisterCommand(name, aptMain(name))
	}
}

// aptMain is the apt stand-in: packages are not installed (the emulated machines share the
// host's), the request is only logged under the machine root.
func aptMain(name string) func(args []string) int {
	return func(args []string) int {
		root := os.Getenv("JUJU_SIM_ROOT")
		if root == "" {
			fmt.Fprintf(os.Stderr, "%s: not in a jujusim machine\n", name)
			return 1
		}
		p := filepath.Join(root, "var/log/jujusim-apt.log")
		os.MkdirAll(filepath.Dir(p), 0o755)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return 1
		}
		defer f.Close()
		fmt.Fprintf(f, "%s %s %s\n", time.Now().Format(time.RFC3339), name, strings.Join(args, " "))
		return 0
	}
}
