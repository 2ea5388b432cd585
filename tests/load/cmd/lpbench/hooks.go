package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/livepatch-onprem/livepatch/tests/load"
)

// hookBenchArgs run BenchmarkDeployBundle (tests/e2e/hooks_bench_test.go) once, verbose so
// that it prints every hook's timing.
var hookBenchArgs = []string{"test", "-count=1", "-run", "^$", "-bench", "DeployBundle", "-benchtime", "1x", "-v", "./tests/e2e"}

// hooks measures the charm hooks: the bundle deployed in the Juju model emulator and
// configured as the deployment guide says, timing every hook (rows 4a and 4b).
func (b *bench) hooks(ctx context.Context) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b.logf("Charm hooks: go %s (in %s)", strings.Join(hookBenchArgs, " "), root)
	cmd := exec.CommandContext(ctx, "go", hookBenchArgs...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(hookBenchArgs, " "), err, lastLines(out, 30))
	}
	hb, err := load.ParseHookBench(bytes.NewReader(out))
	if err != nil {
		return fmt.Errorf("%v\n%s", err, lastLines(out, 30))
	}
	b.logf("Charm hooks: deploy to Active %.1f s, hook median %.1f ms over %d hooks", hb.DeployActive, hb.P50, hb.Hooks)
	b.report.Summary = append(b.report.Summary, hb.Rows()...)
	b.report.Sections = append(b.report.Sections, hb.Section())
	return nil
}

// moduleRoot returns the directory of go.mod at or above the working directory: make bench
// runs from the repository.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the hooks phase runs go test in the repository: run lpbench from it (make bench does)")
		}
		dir = parent
	}
}

// lastLines returns the end of a command's output, for an error.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
