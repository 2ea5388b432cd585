package cos_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch/cos"
)

var topology = cos.Topology{Model: "lp", ModelUUID: "00000000-0000-4000-8000-000000000001",
	Application: "livepatch", Unit: "livepatch/0", CharmName: "livepatch"}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is missing: apt-get install -y prometheus")
	}
	return p
}

// TestAlertRules renders the rules as the charm publishes them, has the real promtool
// check them and run their unit tests (testdata/alerts_test.yaml).
func TestAlertRules(t *testing.T) {
	tool := promtool(t)
	rules, err := cos.AlertRules(topology)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules.Groups) == 0 || len(rules.Groups[0].Rules) < 5 {
		t.Fatalf("rules = %+v", rules)
	}
	for _, g := range rules.Groups {
		if !strings.HasPrefix(g.Name, "lp_00000000_livepatch_") || !strings.HasSuffix(g.Name, "_alerts") {
			t.Errorf("group name %q: want lp_00000000_livepatch_<group>_alerts", g.Name)
		}
		for _, r := range g.Rules {
			if strings.Contains(r.Expr, "%%") {
				t.Errorf("%s: placeholder left in %q", r.Alert, r.Expr)
			}
			if !strings.Contains(r.Expr, `juju_application="livepatch"`) {
				t.Errorf("%s: expression not limited to the application: %q", r.Alert, r.Expr)
			}
			if r.Labels["juju_model_uuid"] != topology.ModelUUID || r.Labels["juju_charm"] != "livepatch" || r.Labels["severity"] == "" {
				t.Errorf("%s: labels %v", r.Alert, r.Labels)
			}
			if _, ok := r.Labels["juju_unit"]; ok {
				t.Errorf("%s: a unit label would match one unit only", r.Alert)
			}
		}
	}
	dir := t.TempDir()
	data, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "livepatch.rules"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("testdata/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "livepatch.rules"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(tool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboards checks each dashboard survives the relation encoding and is Grafana JSON
// bound to the COS datasource and topology variables.
func TestDashboards(t *testing.T) {
	encoded, err := cos.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	if len(encoded) == 0 {
		t.Fatal("no dashboards")
	}
	for _, e := range encoded {
		raw, err := cos.DecodeDashboard(e)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Title, UID string
			Templating struct{ List []struct{ Name, Type string } }
			Panels     []struct {
				Type, Title string
				Datasource  struct{ UID string }
				Targets     []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if d.Title == "" || d.UID == "" {
			t.Errorf("dashboard without title or uid: %q %q", d.Title, d.UID)
		}
		vars := map[string]string{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v.Type
		}
		for _, v := range []string{"prometheusds", "juju_model", "juju_model_uuid", "juju_application", "juju_unit"} {
			if _, ok := vars[v]; !ok {
				t.Errorf("%s: no $%s variable", d.Title, v)
			}
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${prometheusds}" || len(p.Targets) == 0 {
				t.Errorf("%s / %s: datasource %q, %d queries", d.Title, p.Title, p.Datasource.UID, len(p.Targets))
			}
			for _, tg := range p.Targets {
				if strings.Contains(tg.Expr, "livepatch_") && !strings.Contains(tg.Expr, `juju_application=~"$juju_application"`) {
					t.Errorf("%s / %s: query not scoped to the selected application: %q", d.Title, p.Title, tg.Expr)
				}
			}
		}
	}
}

// TestRelationData checks the documents both interfaces carry.
func TestRelationData(t *testing.T) {
	agent, err := cos.AgentData(topology, 8080)
	if err != nil {
		t.Fatal(err)
	}
	var doc cos.AgentUnitData
	if err := json.Unmarshal([]byte(agent[cos.AgentDataKey]), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.MetricsScrapeJobs) != 1 || doc.MetricsScrapeJobs[0].JobName != "livepatch_0_default" ||
		doc.MetricsScrapeJobs[0].StaticConfigs[0].Targets[0] != "localhost:8080" || doc.MetricsScrapeJobs[0].MetricsPath != "/metrics" {
		t.Errorf("scrape jobs = %+v", doc.MetricsScrapeJobs)
	}
	if len(doc.MetricsAlertRules.Groups) == 0 || len(doc.Dashboards) == 0 || doc.LogSlots == nil {
		t.Errorf("cos_agent data lacks rules, dashboards or log_slots: %s", agent[cos.AgentDataKey][:200])
	}
	// The library reads these keys; absent ones fail its validation.
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(agent[cos.AgentDataKey]), &raw)
	for _, k := range []string{"metrics_alert_rules", "log_alert_rules", "dashboards", "metrics_scrape_jobs", "log_slots"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("cos_agent data lacks %q", k)
		}
	}

	app, err := cos.ScrapeAppData(topology, 8080)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []cos.ScrapeJob
	if err := json.Unmarshal([]byte(app["scrape_jobs"]), &jobs); err != nil || len(jobs) != 1 || jobs[0].StaticConfigs[0].Targets[0] != "*:8080" {
		t.Errorf("scrape_jobs = %s, %v", app["scrape_jobs"], err)
	}
	var meta map[string]string
	if err := json.Unmarshal([]byte(app["scrape_metadata"]), &meta); err != nil || meta["model_uuid"] != topology.ModelUUID || meta["charm_name"] != "livepatch" {
		t.Errorf("scrape_metadata = %s, %v", app["scrape_metadata"], err)
	}
	var rules cos.RuleGroups
	if err := json.Unmarshal([]byte(app["alert_rules"]), &rules); err != nil || len(rules.Groups) == 0 {
		t.Errorf("alert_rules = %.200s, %v", app["alert_rules"], err)
	}
	unit := cos.ScrapeUnitData("10.0.0.5", "livepatch/0")
	if unit["prometheus_scrape_unit_address"] != "10.0.0.5" || unit["prometheus_scrape_unit_name"] != "livepatch/0" {
		t.Errorf("unit data = %v", unit)
	}
}
