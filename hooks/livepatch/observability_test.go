package livepatch_test

import (
	"encoding/json"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch/cos"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

// TestCOSRelations checks what a running unit publishes to COS: on cos-agent its own
// scrape target with the alert rules and dashboards; on metrics-endpoint its address, and
// from the leader only the application's jobs, metadata and rules.
func TestCOSRelations(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	st.Relations = append(st.Relations,
		hookstest.Relation{ID: 40, Endpoint: livepatch.COSAgentEndpoint, RemoteApp: "grafana-agent",
			RemoteUnits: map[string]map[string]string{"grafana-agent/0": {}}},
		hookstest.Relation{ID: 41, Endpoint: livepatch.MetricsEndpoint, RemoteApp: "prometheus",
			RemoteUnits: map[string]map[string]string{"prometheus/0": {}}})
	res := e.H.Run(t, "cos-agent-relation-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	var doc cos.AgentUnitData
	agent := res.State.Relation(livepatch.COSAgentEndpoint)
	if err := json.Unmarshal([]byte(agent.LocalUnitData[cos.AgentDataKey]), &doc); err != nil {
		t.Fatalf("cos-agent unit data: %v (%v)", err, agent.LocalUnitData)
	}
	if len(doc.MetricsScrapeJobs) != 1 || doc.MetricsScrapeJobs[0].StaticConfigs[0].Targets[0] != "localhost:8080" {
		t.Errorf("scrape jobs = %+v", doc.MetricsScrapeJobs)
	}
	if len(doc.MetricsAlertRules.Groups) == 0 || doc.MetricsAlertRules.Groups[0].Rules[0].Labels["juju_model"] != "test" {
		t.Errorf("alert rules = %+v", doc.MetricsAlertRules)
	}
	scrape := res.State.Relation(livepatch.MetricsEndpoint)
	if scrape.LocalUnitData["prometheus_scrape_unit_name"] != "livepatch/0" || scrape.LocalUnitData["prometheus_scrape_unit_address"] == "" {
		t.Errorf("metrics-endpoint unit data = %v", scrape.LocalUnitData)
	}
	if scrape.LocalAppData["scrape_jobs"] != `[{"metrics_path":"/metrics","static_configs":[{"targets":["*:8080"]}]}]` {
		t.Errorf("metrics-endpoint app data = %v", scrape.LocalAppData)
	}

	// A non-leader publishes its own target and leaves the application data alone.
	st = lpt.Ready(false)
	st.Unit = "livepatch/1"
	e2 := lpt.New(t)
	e2.Install(t, st)
	st.Relations = append(st.Relations, hookstest.Relation{ID: 41, Endpoint: livepatch.MetricsEndpoint, RemoteApp: "prometheus",
		RemoteUnits: map[string]map[string]string{"prometheus/0": {}}})
	res = e2.H.Run(t, "metrics-endpoint-relation-joined", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	scrape = res.State.Relation(livepatch.MetricsEndpoint)
	if scrape.LocalUnitData["prometheus_scrape_unit_name"] != "livepatch/1" || len(scrape.LocalAppData) != 0 {
		t.Errorf("non-leader wrote unit %v, app %v", scrape.LocalUnitData, scrape.LocalAppData)
	}
}
