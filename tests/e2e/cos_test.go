package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/prometheus"
)

// TestPrometheusAlerts relates a real Prometheus (the prometheus stand-in charm: Debian's
// prometheus, configured only from the metrics-endpoint relation data) to a two-unit
// deployment: it scrapes both units, loads the charm's alert rules, and the sync-failure
// alert fires when the upstream goes away and resolves when it comes back.
func TestPrometheusAlerts(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(prometheus.Binary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: apt-get install -y prometheus", prometheus.Binary)
		}
		t.Skipf("%s is missing: apt-get install -y prometheus", prometheus.Binary)
	}
	d := deploy.Deploy(t, deploy.Options{Units: 2})
	// The shortest sync interval the charm takes: the alert needs two of them.
	if err := d.Model.SetConfig("livepatch", map[string]string{"sync_interval": "1m"}); err != nil {
		t.Fatal(err)
	}
	// $ juju deploy prometheus-k8s prometheus; juju integrate livepatch:metrics-endpoint prometheus
	if _, err := d.Model.Deploy(jujusim.DeployArgs{Charm: "prometheus", Config: map[string]any{
		"evaluation_interval": "1s", "scrape_interval": "1s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Model.Relate("livepatch:metrics-endpoint", "prometheus:metrics-endpoint"); err != nil {
		t.Fatal(err)
	}
	d.WaitActive(t)
	addr, err := d.Model.UnitAddress("prometheus/0")
	if err != nil {
		t.Fatal(err)
	}
	prom := fmt.Sprintf("http://%s:%d", addr, prometheus.Port)

	// Both units are scraped, with their Juju topology.
	waitProm(t, prom, "both livepatch units scraped", func() (bool, string) {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					Labels map[string]string
					Health string
				}
			}
		}
		if err := promGet(prom+"/api/v1/targets?state=active", &r); err != nil {
			return false, err.Error()
		}
		var up []string
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health == "up" && tg.Labels["juju_application"] == "livepatch" && tg.Labels["juju_model_uuid"] == d.Model.UUID() {
				up = append(up, tg.Labels["juju_unit"])
			}
		}
		slices.Sort(up)
		return slices.Equal(up, []string{"livepatch/0", "livepatch/1"}), fmt.Sprintf("up: %v", up)
	})
	// The charm's rules are loaded.
	waitProm(t, prom, "the charm's alert rules loaded", func() (bool, string) {
		var names []string
		for _, r := range promRules(t, prom) {
			names = append(names, r.Name)
		}
		return slices.Contains(names, "LivepatchSyncFailing") && slices.Contains(names, "LivepatchUnitDown"), fmt.Sprintf("rules: %v", names)
	})
	if s := alertState(t, prom, "LivepatchSyncFailing"); s != "" {
		t.Fatalf("LivepatchSyncFailing is %s while sync works", s)
	}

	// The upstream goes away: runs fail, and once the last success is two intervals old
	// the alert fires.
	if err := d.Upstream.Stop(); err != nil {
		t.Fatal(err)
	}
	c := d.AdminClient(t)
	start := time.Now()
	if rep, err := c.TriggerSyncWait(t.Context()); err != nil || rep.Outcome == server.SyncSuccess {
		t.Fatalf("sync with the upstream down: %+v, %v", rep, err)
	}
	waitProm(t, prom, "LivepatchSyncFailing firing", func() (bool, string) {
		s := alertState(t, prom, "LivepatchSyncFailing")
		return s == "firing", "state " + s
	})
	t.Logf("LivepatchSyncFailing fired %v after the upstream stopped", time.Since(start).Round(time.Second))

	// It comes back: the next sync succeeds and the alert resolves.
	if err := d.Upstream.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	d.TriggerSync(t)
	waitProm(t, prom, "LivepatchSyncFailing resolved", func() (bool, string) {
		s := alertState(t, prom, "LivepatchSyncFailing")
		return s == "", "state " + s
	})
}

type promRule struct {
	Name   string
	State  string
	Alerts []struct {
		State  string
		Labels map[string]string
	}
}

// promRules lists the alerting rules Prometheus evaluates.
func promRules(t *testing.T, prom string) []promRule {
	t.Helper()
	var r struct {
		Data struct{ Groups []struct{ Rules []promRule } }
	}
	if err := promGet(prom+"/api/v1/rules?type=alert", &r); err != nil {
		t.Logf("rules: %v", err)
		return nil
	}
	var out []promRule
	for _, g := range r.Data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// alertState is the state of the named alert ("pending", "firing") or "" when inactive.
func alertState(t *testing.T, prom, name string) string {
	for _, r := range promRules(t, prom) {
		if r.Name == name && r.State != "inactive" {
			return r.State
		}
	}
	return ""
}

func promGet(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitProm polls check every second (Prometheus evaluates every second here) until it
// holds, for at most five minutes: the sync alert needs two sync intervals.
func waitProm(t *testing.T, prom, what string, check func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		ok, state := check()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			var alerts json.RawMessage
			promGet(prom+"/api/v1/alerts", &alerts)
			t.Fatalf("waiting for %s: %s (alerts: %s)", what, state, alerts)
		case <-tick.C:
		}
	}
}
