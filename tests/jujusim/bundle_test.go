package jujusim_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestDeployBundle(t *testing.T) {
	dir := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return "./" + r
	}
	srv := rel(testCharm(t, "srv", srvMeta, "", ""))
	cli := rel(testCharm(t, "cli", cliMeta, cliConfig, ""))
	sub := rel(testCharm(t, "sub", subMeta, "", ""))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bundle := write("bundle.yaml", `
name: test-bundle
description: a test bundle
series: jammy
applications:
  srv: {charm: `+srv+`, num_units: 1}
  cli: {charm: `+cli+`, num_units: 1, options: {port: 9000}}
  sub: {charm: `+sub+`}
relations:
  - [cli, srv]
  - [cli, sub]
`)
	overlay := write("overlay.yaml", `
applications:
  cli: {num_units: 2, options: {name: overlaid}}
`)

	t.Run("invalid", func(t *testing.T) {
		m, _ := newModel(t)
		for _, content := range []string{
			strings.Replace(string(must(os.ReadFile(bundle))), "port: 9000", "port: many", 1),
			strings.Replace(string(must(os.ReadFile(bundle))), "nope: 1", "", 1) + "  - [cli, nothere]\n",
			strings.Replace(string(must(os.ReadFile(bundle))), "{charm: "+sub+"}", "{charm: "+sub+", num_units: 1}", 1),
		} {
			if err := m.DeployBundle(write("bad.yaml", content)); err == nil {
				t.Errorf("bundle deployed, want a verification error:\n%s", content)
			}
		}
	})

	m, _ := newModel(t)
	if err := m.DeployBundle(bundle, overlay); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	st := m.Status()
	if got := st.UnitNames("cli"); !slices.Equal(got, []string{"cli/0", "cli/1"}) {
		t.Errorf("cli units = %v", got)
	}
	if got := st.UnitNames("sub"); len(got) != 2 {
		t.Errorf("sub units = %v, want one per cli unit", got)
	}
	cfg, _ := m.Config("cli")
	if cfg["port"] != int64(9000) || cfg["name"] != "overlaid" {
		t.Errorf("cli config = %v", cfg)
	}
	if _, err := m.RelationID("cli", "srv"); err != nil {
		t.Error(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRelateInference(t *testing.T) {
	m, _ := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "sub", subMeta, "", "")})
	for _, tt := range []struct{ a, b, err string }{
		{"cli", "srv", ""},
		{"cli", "srv", "already exists"},
		{"cli:db", "srv:cluster", `application "srv" has no "cluster" relation`},
		{"cli", "sub", ""},
		{"cli:nope", "srv", `application "cli" has no "nope" relation`},
		{"srv", "sub", ""},
		{"nope", "srv", `application "nope" not found`},
	} {
		_, err := m.Relate(tt.a, tt.b)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Relate(%s, %s) = %v, want %q", tt.a, tt.b, err, tt.err)
		}
	}
}
