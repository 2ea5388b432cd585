package load

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// HookBench is what BenchmarkDeployBundle (tests/e2e/hooks_bench_test.go) printed: the
// deploy times, the percentiles of every hook of our charms, and each hook's line.
type HookBench struct {
	DeployIdle, DeployActive float64 // seconds, from deploy
	Hooks                    int
	P50, P90, Max            float64 // ms, over every hook
	ByHook                   []HookTiming
}

// HookTiming is one hook name's timing: "livepatch config-changed" run N times.
type HookTiming struct {
	Name        string
	N           int
	Median, Max float64 // ms
}

var (
	hookLineRE  = regexp.MustCompile(`^\s*hooks_bench_test\.go:\d+: (.+?)\s+n=(\d+)\s+median\s+([0-9.]+) ms\s+max\s+([0-9.]+) ms\s*$`)
	benchLineRE = regexp.MustCompile(`^BenchmarkDeployBundle\S*\s+\d+\s+(.*)$`)
)

// ParseHookBench reads the -v output of go test -bench DeployBundle.
func ParseHookBench(r io.Reader) (HookBench, error) {
	var hb HookBench
	found := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := hookLineRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[2])
			med, _ := strconv.ParseFloat(m[3], 64)
			mx, _ := strconv.ParseFloat(m[4], 64)
			hb.ByHook = append(hb.ByHook, HookTiming{Name: m[1], N: n, Median: med, Max: mx})
			continue
		}
		m := benchLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		found = true
		f := strings.Fields(m[1])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return HookBench{}, fmt.Errorf("cannot read the benchmark line %q: %v", line, err)
			}
			switch f[i+1] {
			case "deploy-idle-s":
				hb.DeployIdle = v
			case "deploy-active-s":
				hb.DeployActive = v
			case "hooks":
				hb.Hooks = int(v)
			case "hook-p50-ms":
				hb.P50 = v
			case "hook-p90-ms":
				hb.P90 = v
			case "hook-max-ms":
				hb.Max = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return HookBench{}, err
	}
	if !found || hb.Hooks == 0 {
		return HookBench{}, fmt.Errorf("no BenchmarkDeployBundle result in the output")
	}
	return hb, nil
}

// Rows returns the summary rows 4a and 4b.
func (hb HookBench) Rows() []Row {
	slowest := HookTiming{}
	for _, h := range hb.ByHook {
		if h.Median > slowest.Median {
			slowest = h
		}
	}
	result := fmt.Sprintf("median %.1f ms, p90 %.1f ms over %d hooks of livepatch and ubuntu-advantage", hb.P50, hb.P90, hb.Hooks)
	if slowest.Name != "" {
		result += fmt.Sprintf("; slowest by median: %s %.1f ms", slowest.Name, slowest.Median)
	}
	return []Row{{
		ID: "4a", Measurement: "charm hooks: dispatch wall time per hook (emulator)", Result: result,
		Ceiling: "-", Ratio: "-", Target: "< 50 ms per hook (median)", Met: Verdict(hb.P50 < 50),
	}, {
		ID: "4b", Measurement: "charm hooks: `deploy` of the bundle to all units Active",
		Result:  fmt.Sprintf("%.1f s (%.1f s to the guide's first stop, then its configuration steps through get-resource-token and the first sync)", hb.DeployActive, hb.DeployIdle),
		Ceiling: "-", Ratio: "-", Target: "< 60 s", Met: Verdict(hb.DeployActive < 60),
	}}
}

// Section returns the per-hook detail table.
func (hb HookBench) Section() Section {
	s := Section{
		Title: "4. Charm hooks",
		Text: "`go test -run '^$' -bench DeployBundle -benchtime 1x -v ./tests/e2e` " +
			"(tests/e2e/hooks_bench_test.go): the bundle deployed in the Juju model emulator with the real " +
			"haproxy and PostgreSQL, then the deployment guide's configuration steps. A hook's time is from " +
			"the start of the charm's dispatch process to its exit, service restarts included (livepatch " +
			"config-changed waits for the server's health and its settle time). Most of a hook is its " +
			"hook-tool calls, each a process talking to the emulator.",
		Header: []string{"hook", "runs", "median ms", "max ms"},
	}
	for _, h := range hb.ByHook {
		s.Rows = append(s.Rows, []string{h.Name, strconv.Itoa(h.N), fmt.Sprintf("%.1f", h.Median), fmt.Sprintf("%.1f", h.Max)})
	}
	return s
}
