package load_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/tests/load"
)

const hookBenchOutput = `goos: linux
goarch: amd64
pkg: github.com/livepatch-onprem/livepatch/tests/e2e
BenchmarkDeployBundle
    hooks_bench_test.go:44: livepatch config-changed                                n=4   median   35.2 ms  max  3812.4 ms
    hooks_bench_test.go:44: ubuntu-advantage install                                n=1   median   31.0 ms  max    31.0 ms
BenchmarkDeployBundle-2   	       1	24012345678 ns/op	        11.80 deploy-idle-s	        24.01 deploy-active-s	        26.00 hooks	        31.80 hook-p50-ms	        72.10 hook-p90-ms	      3812 hook-max-ms
PASS
ok  	github.com/livepatch-onprem/livepatch/tests/e2e	40.1s
`

func TestParseHookBench(t *testing.T) {
	hb, err := load.ParseHookBench(strings.NewReader(hookBenchOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := load.HookBench{
		DeployIdle: 11.8, DeployActive: 24.01, Hooks: 26, P50: 31.8, P90: 72.1, Max: 3812,
		ByHook: []load.HookTiming{
			{Name: "livepatch config-changed", N: 4, Median: 35.2, Max: 3812.4},
			{Name: "ubuntu-advantage install", N: 1, Median: 31, Max: 31},
		},
	}
	if diff := cmp.Diff(want, hb); diff != "" {
		t.Errorf("ParseHookBench (-want +got):\n%s", diff)
	}
	rows := hb.Rows()
	if len(rows) != 2 || rows[0].ID != "4a" || rows[0].Met != "yes" || !strings.Contains(rows[0].Result, "median 31.8 ms") ||
		!strings.Contains(rows[0].Result, "slowest by median: livepatch config-changed 35.2 ms") ||
		rows[1].ID != "4b" || rows[1].Met != "yes" || !strings.HasPrefix(rows[1].Result, "24.0 s") {
		t.Errorf("rows = %+v", rows)
	}
	if s := hb.Section(); len(s.Rows) != 2 || s.Rows[0][0] != "livepatch config-changed" {
		t.Errorf("section = %+v", s)
	}

	if _, err := load.ParseHookBench(strings.NewReader("FAIL\n")); err == nil {
		t.Error("no error for output without a result")
	}
}
