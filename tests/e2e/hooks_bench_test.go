package e2e

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

// BenchmarkDeployBundle times the bundle from `deploy` to every unit Active (the
// deployment guide's configuration steps included: url_template, admin users, the
// ubuntu-advantage token, get-resource-token, the first sync), and the wall time of each
// hook of our charms, dispatch process start to exit. Run with:
//
//	go test -run '^$' -bench DeployBundle -benchtime 1x ./tests/e2e
func BenchmarkDeployBundle(b *testing.B) {
	var settle, idle time.Duration
	var hooks []time.Duration
	byName := map[string][]time.Duration{}
	for range b.N {
		start := time.Now()
		d := deploy.New(b, deploy.Options{})
		idle += time.Since(start)
		d.Configure(b)
		settle += time.Since(start)
		for _, r := range d.Model.History() {
			if strings.HasPrefix(r.Hook, "action:") {
				continue
			}
			if strings.HasPrefix(r.Unit, "livepatch/") || strings.HasPrefix(r.Unit, "ubuntu-advantage/") {
				hooks = append(hooks, r.Duration)
				app, _, _ := strings.Cut(r.Unit, "/")
				byName[app+" "+r.Hook] = append(byName[app+" "+r.Hook], r.Duration)
			}
		}
	}
	slices.Sort(hooks)
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		ds := byName[name]
		slices.Sort(ds)
		b.Logf("%-55s n=%-3d median %6.1f ms  max %7.1f ms", name, len(ds),
			float64(ds[len(ds)/2])/float64(time.Millisecond), float64(ds[len(ds)-1])/float64(time.Millisecond))
	}
	pct := func(p float64) float64 {
		if len(hooks) == 0 {
			return 0
		}
		return float64(hooks[int(p*float64(len(hooks)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(idle.Seconds()/float64(b.N), "deploy-idle-s")
	b.ReportMetric(settle.Seconds()/float64(b.N), "deploy-active-s")
	b.ReportMetric(float64(len(hooks))/float64(b.N), "hooks")
	b.ReportMetric(pct(0.5), "hook-p50-ms")
	b.ReportMetric(pct(0.9), "hook-p90-ms")
	b.ReportMetric(pct(1), "hook-max-ms")
}
