// Package prometheus is the stand-in for the prometheus-k8s charm's prometheus_scrape
// requirer: a real charm (metadata in charm/, dispatch = this package's Main via the
// jujusim multi-call binary) that renders prometheus.yml from the metrics-endpoint
// relation data alone, as the real charm's MetricsEndpointConsumer does, and runs a real
// Prometheus on its unit address (port 9090), reloaded with SIGHUP when the configuration
// changes. From each related application it reads scrape_metadata, scrape_jobs and
// alert_rules (application data) and each unit's prometheus_scrape_unit_address and
// prometheus_scrape_unit_name; a "*:<port>" target becomes one target per unit, labelled
// with the unit's Juju topology; the alert rules go to one rule file per application.
package prometheus

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/tests/standin/hookenv"
)

//go:embed charm
var files embed.FS

// Files holds metadata.yaml and config.yaml.
var Files, _ = fs.Sub(files, "charm")

// Binary and Promtool are Debian's prometheus package's programs.
var (
	Binary   = "/usr/bin/prometheus"
	Promtool = "/usr/bin/promtool"
)

// Port is where Prometheus listens on the unit's address.
const Port = 9090

const service = "prometheus.service"

func cfgPath() string  { return hookenv.Path("etc/prometheus/prometheus.yml") }
func rulesDir() string { return hookenv.Path("etc/prometheus/rules") }

// Main is the charm's dispatch.
func Main() int { return hookenv.Main("prometheus", run) }

func run(hook string) error {
	switch hook {
	case "install":
		return install()
	case "stop":
		return hookenv.Systemctl("disable", "--now", service)
	case "remove":
		return nil
	}
	return reconcile()
}

func install() error {
	for _, d := range []string{rulesDir(), hookenv.Path("var/lib/prometheus")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	addr, err := hookenv.Address()
	if err != nil {
		return err
	}
	unit := fmt.Sprintf(`[Unit]
Description=Prometheus (jujusim stand-in)

[Service]
ExecStart=%s --config.file=%s --storage.tsdb.path=%s --web.listen-address=%s:%d
ExecReload=/bin/kill -HUP $MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
`, Binary, cfgPath(), hookenv.Path("var/lib/prometheus"), addr, Port)
	if err := os.WriteFile(hookenv.Path("etc/systemd/system/"+service), []byte(unit), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath(), []byte("global: {}\n"), 0o644); err != nil {
		return err
	}
	return hookenv.Systemctl("daemon-reload")
}

// job is a scrape_config as the relation carries it.
type job struct {
	JobName        string         `json:"job_name,omitempty" yaml:"job_name"`
	MetricsPath    string         `json:"metrics_path,omitempty" yaml:"metrics_path,omitempty"`
	ScrapeInterval string         `json:"scrape_interval,omitempty" yaml:"scrape_interval,omitempty"`
	StaticConfigs  []staticConfig `json:"static_configs" yaml:"static_configs"`
}

type staticConfig struct {
	Targets []string          `json:"targets" yaml:"targets"`
	Labels  map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// metadata is scrape_metadata.
type metadata struct {
	Model     string `json:"model"`
	ModelUUID string `json:"model_uuid"`
	App       string `json:"application"`
	CharmName string `json:"charm_name"`
}

func (m metadata) identifier() string {
	uuid := m.ModelUUID
	if len(uuid) > 8 {
		uuid = uuid[:8]
	}
	return m.Model + "_" + uuid + "_" + m.App
}

func reconcile() error {
	cfg, err := hookenv.Config()
	if err != nil {
		return err
	}
	str := func(k string) string { s, _ := cfg[k].(string); return s }
	jobs, rules, err := collect()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(rulesDir(), 0o755); err != nil {
		return err
	}
	// Rule files of applications no longer related go; the others are rewritten.
	rulesChanged := false
	old, _ := filepath.Glob(filepath.Join(rulesDir(), "*.rules"))
	for _, f := range old {
		if _, ok := rules[strings.TrimSuffix(filepath.Base(f), ".rules")]; !ok {
			os.Remove(f)
			rulesChanged = true
		}
	}
	for id, r := range rules {
		p := filepath.Join(rulesDir(), id+".rules")
		if have, _ := os.ReadFile(p); bytes.Equal(have, r) {
			continue
		}
		if err := os.WriteFile(p, r, 0o644); err != nil {
			return err
		}
		rulesChanged = true
	}
	doc := map[string]any{
		"global":         map[string]any{"scrape_interval": str("scrape_interval"), "evaluation_interval": str("evaluation_interval")},
		"rule_files":     []string{filepath.Join(rulesDir(), "*.rules")},
		"scrape_configs": jobs,
	}
	rendered, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := cfgPath() + ".new"
	if err := os.WriteFile(tmp, rendered, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command(Promtool, "check", "config", tmp).CombinedOutput(); err != nil {
		return hookenv.Status("blocked", "invalid scrape configuration or alert rules from the relation: "+lastLine(out))
	}
	prev, _ := os.ReadFile(cfgPath())
	changed := !bytes.Equal(prev, rendered)
	if err := os.Rename(tmp, cfgPath()); err != nil {
		return err
	}
	active := exec.Command("systemctl", "is-active", "--quiet", service).Run() == nil
	switch {
	case !active:
		err = hookenv.Systemctl("enable", "--now", service)
	case changed || rulesChanged:
		err = hookenv.Systemctl("reload", service)
	}
	if err != nil {
		return err
	}
	hookenv.Run("open-port", fmt.Sprintf("%d/tcp", Port))
	return hookenv.Status("active", fmt.Sprintf("%d targets", countTargets(jobs)))
}

// collect reads every metrics-endpoint relation: the scrape jobs with one target per
// unit, and the rule files by application identifier.
func collect() ([]job, map[string][]byte, error) {
	ids, err := hookenv.RelationIDs("metrics-endpoint")
	if err != nil {
		return nil, nil, err
	}
	var jobs []job
	rules := map[string][]byte{}
	for _, id := range ids {
		app, err := hookenv.RemoteApp(id)
		if err != nil {
			return nil, nil, err
		}
		data, err := hookenv.AppData(id, app)
		if err != nil {
			return nil, nil, err
		}
		var meta metadata
		if err := json.Unmarshal([]byte(data["scrape_metadata"]), &meta); err != nil || meta.ModelUUID == "" {
			continue // the provider's leader has not written it yet
		}
		var relJobs []job
		if err := json.Unmarshal([]byte(data["scrape_jobs"]), &relJobs); err != nil {
			hookenv.Log("ignoring scrape_jobs of %s: %v", app, err)
			continue
		}
		units, err := hookenv.Units(id)
		if err != nil {
			return nil, nil, err
		}
		type unitAddr struct{ name, addr string }
		var addrs []unitAddr
		for _, u := range units {
			ud, err := hookenv.UnitData(id, u)
			if err != nil {
				return nil, nil, err
			}
			if a := ud["prometheus_scrape_unit_address"]; a != "" {
				addrs = append(addrs, unitAddr{cmp.Or(ud["prometheus_scrape_unit_name"], u), a})
			}
		}
		slices.SortFunc(addrs, func(a, b unitAddr) int { return strings.Compare(a.name, b.name) })
		for i, j := range relJobs {
			out := job{JobName: fmt.Sprintf("juju_%s_%d_%s", meta.identifier(), i, cmp.Or(j.JobName, "prometheus_scrape")),
				MetricsPath: j.MetricsPath, ScrapeInterval: j.ScrapeInterval}
			for _, sc := range j.StaticConfigs {
				for _, target := range sc.Targets {
					host, port, ok := strings.Cut(target, ":")
					if !ok || host != "*" {
						// A fixed target, labelled with the application only.
						out.StaticConfigs = append(out.StaticConfigs, staticConfig{Targets: []string{target}, Labels: topology(meta, "", sc.Labels)})
						continue
					}
					for _, u := range addrs {
						out.StaticConfigs = append(out.StaticConfigs, staticConfig{Targets: []string{u.addr + ":" + port}, Labels: topology(meta, u.name, sc.Labels)})
					}
				}
			}
			if len(out.StaticConfigs) > 0 {
				jobs = append(jobs, out)
			}
		}
		if r := data["alert_rules"]; r != "" && r != "{}" {
			var groups map[string]any
			if err := json.Unmarshal([]byte(r), &groups); err != nil {
				hookenv.Log("ignoring alert_rules of %s: %v", app, err)
				continue
			}
			y, err := yaml.Marshal(groups)
			if err != nil {
				return nil, nil, err
			}
			rules["juju_"+meta.identifier()] = y
		}
	}
	return jobs, rules, nil
}

// topology returns the labels a target gets: its own, then the Juju topology.
func topology(m metadata, unit string, own map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range own {
		out[k] = v
	}
	out["juju_model"], out["juju_model_uuid"], out["juju_application"] = m.Model, m.ModelUUID, m.App
	if m.CharmName != "" {
		out["juju_charm"] = m.CharmName
	}
	if unit != "" {
		out["juju_unit"] = unit
	}
	return out
}

func countTargets(jobs []job) int {
	n := 0
	for _, j := range jobs {
		n += len(j.StaticConfigs)
	}
	return n
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
