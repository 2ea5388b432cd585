package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch/cos"
)

// checkObservability checks a /metrics scrape of a serving, syncing server against what
// the charm gives COS: promtool check metrics finds nothing to say about the names, and
// every livepatch metric and label that an alert rule or a dashboard query names is one
// the server exports.
func checkObservability(t *testing.T, scrape []byte) {
	t.Helper()
	if promtool, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool is missing (apt-get install -y prometheus): metric names not linted")
	} else {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(scrape)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(scrape))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	labels := map[string][]string{} // exported series name -> its label names
	for name, f := range families {
		var names []string
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
		}
		series := []string{name}
		if f.GetType().String() == "HISTOGRAM" {
			series = []string{name + "_bucket", name + "_sum", name + "_count"}
			names = append(names, "le")
		}
		slices.Sort(names)
		for _, s := range series {
			labels[s] = slices.Compact(names)
		}
	}

	var exprs []string
	rules, err := cos.AlertRules(cos.Topology{Model: "m", ModelUUID: "00000000-0000-4000-8000-000000000001", Application: "livepatch", CharmName: "livepatch"})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	dashboards, err := cos.Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dashboards {
		raw, err := cos.DecodeDashboard(d)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Panels []struct {
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatal(err)
		}
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	if len(exprs) == 0 {
		t.Fatal("no alert rule or dashboard query found")
	}
	// Labels the scrape adds (Juju topology, instance, job) are not the server's to export.
	scrapeLabels := func(l string) bool { return strings.HasPrefix(l, "juju_") || l == "instance" || l == "job" }
	for _, e := range exprs {
		for _, sel := range selectorPattern.FindAllStringSubmatch(e, -1) {
			name, matchers := sel[1], sel[2]
			have, ok := labels[name]
			if !ok {
				t.Errorf("%s is not exported by the server (in %q)", name, e)
				continue
			}
			for _, m := range matcherPattern.FindAllStringSubmatch(matchers, -1) {
				if l := m[1]; !scrapeLabels(l) && !slices.Contains(have, l) {
					t.Errorf("%s has no label %q (in %q); it has %v", name, l, e, have)
				}
			}
		}
	}
}

var (
	// selectorPattern finds the server's metrics in a PromQL expression, with their label
	// matchers when they have any.
	selectorPattern = regexp.MustCompile(`\b(livepatch_[a-z0-9_]+)(?:\{([^}]*)\})?`)
	matcherPattern  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)
