// Package cos is what the livepatch charm gives the Canonical Observability Stack: its
// Prometheus alert rules (prometheus_alert_rules/) and Grafana dashboards
// (grafana_dashboards/), embedded in the charm, and the relation data of the two
// interfaces that carry them, written as Canonical's libraries write them:
//
//   - cos_agent (charms.grafana_agent.v0.cos_agent, the grafana-agent and
//     opentelemetry-collector subordinates): one JSON document under the unit data key
//     "config" with the scrape jobs of this unit, the alert rules and the dashboards;
//   - prometheus_scrape (charms.prometheus_k8s.v0.prometheus_scrape, Prometheus related
//     directly): scrape_metadata, scrape_jobs and alert_rules in the application data,
//     prometheus_scrape_unit_address and prometheus_scrape_unit_name in each unit's.
//
// Alert rules are written with the placeholder %%juju_topology%% in every selector; the
// charm replaces it with the application's topology matchers and adds the topology
// labels to every rule, as cosl's AlertRules does, so that one deployment's rules never
// fire on another's metrics.
package cos

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"
	"gopkg.in/yaml.v3"
)

//go:embed prometheus_alert_rules/*.rules grafana_dashboards/*.json
var assets embed.FS

// Topology is a unit's Juju topology, as cosl's JujuTopology holds it.
type Topology struct {
	Model, ModelUUID, Application, Unit, CharmName string
}

// Identifier is the terse form cosl uses in rule group names:
// <model>_<first 8 of the model UUID>_<application>.
func (t Topology) Identifier() string {
	uuid := t.ModelUUID
	if len(uuid) > 8 {
		uuid = uuid[:8]
	}
	return strings.ReplaceAll(t.Model+"_"+uuid+"_"+t.Application, "/", "_")
}

// labels are the topology labels every rule carries (cosl's label_matcher_dict: no unit).
func (t Topology) labels() map[string]string {
	out := map[string]string{}
	for k, v := range map[string]string{"juju_model": t.Model, "juju_model_uuid": t.ModelUUID,
		"juju_application": t.Application, "juju_charm": t.CharmName} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// matchers is the PromQL label matcher list that replaces %%juju_topology%% (cosl's
// alert_expression_str: model, model UUID and application, never the unit or the charm).
func (t Topology) matchers() string {
	var parts []string
	for _, kv := range [][2]string{{"juju_model", t.Model}, {"juju_model_uuid", t.ModelUUID}, {"juju_application", t.Application}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+strconv.Quote(kv[1]))
		}
	}
	return strings.Join(parts, ",")
}

// RuleGroups is a Prometheus rule file: {"groups": [...]}.
type RuleGroups struct {
	Groups []RuleGroup `json:"groups" yaml:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name  string `json:"name" yaml:"name"`
	Rules []Rule `json:"rules" yaml:"rules"`
}

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `json:"alert" yaml:"alert"`
	Expr        string            `json:"expr" yaml:"expr"`
	For         string            `json:"for,omitempty" yaml:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty" yaml:"annotations,omitempty"`
}

// unsafeName are the characters cosl replaces with "_" in group names.
var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_:]`)

// AlertRules returns the charm's alert rules for topology t: each group named
// <identifier>_<group>_alerts, each expression's %%juju_topology%% replaced, each rule
// labelled with the topology (labels the file sets win).
func AlertRules(t Topology) (RuleGroups, error) {
	var out RuleGroups
	files, err := fs.Glob(assets, "prometheus_alert_rules/*.rules")
	if err != nil {
		return out, err
	}
	slices.Sort(files)
	for _, f := range files {
		data, err := assets.ReadFile(f)
		if err != nil {
			return out, err
		}
		var file RuleGroups
		if err := yaml.Unmarshal(data, &file); err != nil {
			return out, fmt.Errorf("alert rules %s: %w", path.Base(f), err)
		}
		for _, g := range file.Groups {
			g.Name = unsafeName.ReplaceAllString(t.Identifier()+"_"+g.Name+"_alerts", "_")
			for i, r := range g.Rules {
				r.Expr = strings.TrimSpace(strings.ReplaceAll(r.Expr, "%%juju_topology%%", t.matchers()))
				labels := t.labels()
				for k, v := range r.Labels {
					labels[k] = v
				}
				r.Labels = labels
				g.Rules[i] = r
			}
			out.Groups = append(out.Groups, g)
		}
	}
	return out, nil
}

// Dashboards returns the charm's Grafana dashboards as cosl's GrafanaDashboard carries
// them over relation data: each file's JSON, xz (LZMA) compressed, base64 encoded.
func Dashboards() ([]string, error) {
	files, err := fs.Glob(assets, "grafana_dashboards/*.json")
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var out []string
	for _, f := range files {
		data, err := assets.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !json.Valid(data) {
			return nil, fmt.Errorf("dashboard %s is not valid JSON", path.Base(f))
		}
		var buf bytes.Buffer
		w, err := xz.NewWriter(&buf)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		out = append(out, base64.StdEncoding.EncodeToString(buf.Bytes()))
	}
	return out, nil
}

// DecodeDashboard reverses Dashboards' encoding of one dashboard.
func DecodeDashboard(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	r, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	// Our own dashboards are tens of KiB; a bound keeps a corrupt one from filling memory.
	const maxDashboard = 8 << 20
	n, err := out.ReadFrom(io.LimitReader(r, maxDashboard+1))
	if err != nil {
		return nil, err
	}
	if n > maxDashboard {
		return nil, fmt.Errorf("dashboard larger than %d bytes", maxDashboard)
	}
	return out.Bytes(), nil
}

// ScrapeJob is one Prometheus scrape_config as both interfaces carry it.
type ScrapeJob struct {
	JobName       string         `json:"job_name,omitempty"`
	MetricsPath   string         `json:"metrics_path"`
	StaticConfigs []StaticConfig `json:"static_configs"`
}

// StaticConfig is a static_configs entry.
type StaticConfig struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// AgentUnitData is the cos_agent provider's unit data (CosAgentProviderUnitData), kept as
// one JSON document under the key "config".
type AgentUnitData struct {
	MetricsAlertRules RuleGroups  `json:"metrics_alert_rules"`
	LogAlertRules     struct{}    `json:"log_alert_rules"`
	Dashboards        []string    `json:"dashboards"`
	MetricsScrapeJobs []ScrapeJob `json:"metrics_scrape_jobs"`
	LogSlots          []string    `json:"log_slots"`
}

// AgentDataKey is the unit data key of the cos_agent document.
const AgentDataKey = "config"

// AgentData returns the cos_agent unit data of a unit whose server listens on port: the
// subordinate on the same machine scrapes localhost:<port>/metrics. The job name is
// <application>_0_default, as the library names a charm's first job.
func AgentData(t Topology, port int) (map[string]string, error) {
	rules, err := AlertRules(t)
	if err != nil {
		return nil, err
	}
	dashboards, err := Dashboards()
	if err != nil {
		return nil, err
	}
	d := AgentUnitData{
		MetricsAlertRules: rules,
		Dashboards:        dashboards,
		MetricsScrapeJobs: []ScrapeJob{{
			JobName:       t.Application + "_0_default",
			MetricsPath:   "/metrics",
			StaticConfigs: []StaticConfig{{Targets: []string{"localhost:" + strconv.Itoa(port)}}},
		}},
		LogSlots: []string{},
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return map[string]string{AgentDataKey: string(data)}, nil
}

// ScrapeAppData returns the prometheus_scrape provider's application data: the job
// targets "*:<port>", which Prometheus expands to every unit's address.
func ScrapeAppData(t Topology, port int) (map[string]string, error) {
	rules, err := AlertRules(t)
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(map[string]string{"model": t.Model, "model_uuid": t.ModelUUID,
		"application": t.Application, "unit": t.Unit, "charm_name": t.CharmName})
	if err != nil {
		return nil, err
	}
	jobs, err := json.Marshal([]ScrapeJob{{MetricsPath: "/metrics",
		StaticConfigs: []StaticConfig{{Targets: []string{"*:" + strconv.Itoa(port)}}}}})
	if err != nil {
		return nil, err
	}
	alerts, err := json.Marshal(rules)
	if err != nil {
		return nil, err
	}
	return map[string]string{"scrape_metadata": string(meta), "scrape_jobs": string(jobs), "alert_rules": string(alerts)}, nil
}

// ScrapeUnitData returns the prometheus_scrape provider's unit data.
func ScrapeUnitData(address, unit string) map[string]string {
	return map[string]string{"prometheus_scrape_unit_address": address, "prometheus_scrape_unit_name": unit}
}
