package charms_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/juju/charm/v12"
	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/charms"
	"github.com/livepatch-onprem/livepatch/internal/testbin"
)

const repoRoot = ".."

func TestManifest(t *testing.T) {
	got, err := charms.Manifest([]byte(`
type: charm
platforms:
  ubuntu-24.04-amd64:
    build-on: [ubuntu@24.04:amd64]
    build-for: [ubuntu@24.04:amd64]
  ubuntu-22.04-amd64:
    build-on: [ubuntu@22.04:amd64]
    build-for: [ubuntu@22.04:amd64]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := `
# Written by make charms from charmcraft.yaml.
bases:
  - name: ubuntu
    channel: "22.04"
    architectures:
      - amd64
  - name: ubuntu
    channel: "24.04"
    architectures:
      - amd64
`[1:]
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("manifest (-want +got):\n%s", diff)
	}
	m, err := charm.ReadManifest(strings.NewReader(string(got)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("invalid manifest: %v", err)
	}
	if _, err := charms.Manifest([]byte("type: charm\n")); err == nil {
		t.Error("manifest without platforms accepted")
	}
}

// metadataYAMLKeys are the keys charmcraft refuses in charmcraft.yaml while metadata.yaml
// exists (its METADATA_YAML_KEYS).
var metadataYAMLKeys = []string{
	"assumes", "containers", "description", "devices", "display-name", "docs", "extra-bindings",
	"issues", "maintainers", "name", "peers", "provides", "requires", "resources", "series",
	"storage", "subordinate", "summary", "terms", "website",
}

// TestCharmcraftYAML checks each charmcraft.yaml as charmcraft reads it next to
// metadata.yaml, config.yaml and actions.yaml: type charm, no key of those files,
// multi-base platforms (no top-level base or bases), and one part.
func TestCharmcraftYAML(t *testing.T) {
	for _, name := range []string{"livepatch", "ubuntu-advantage"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(name, "charmcraft.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["type"] != "charm" {
				t.Errorf("type %v, want charm", doc["type"])
			}
			for _, k := range metadataYAMLKeys {
				if _, ok := doc[k]; ok {
					t.Errorf("charmcraft.yaml has %q, which belongs to metadata.yaml", k)
				}
			}
			for file, key := range map[string]string{"config.yaml": "config", "actions.yaml": "actions"} {
				if _, err := os.Stat(filepath.Join(name, file)); err == nil {
					if _, ok := doc[key]; ok {
						t.Errorf("charmcraft.yaml has %q, which belongs to %s", key, file)
					}
				}
			}
			for _, k := range []string{"base", "build-base", "bases"} {
				if _, ok := doc[k]; ok {
					t.Errorf("charmcraft.yaml has %q: the platforms name their bases", k)
				}
			}
			if _, err := charms.Manifest(data); err != nil {
				t.Error(err)
			}
			platforms, _ := doc["platforms"].(map[string]any)
			for pname, p := range platforms {
				spec, _ := p.(map[string]any)
				on, _ := spec["build-on"].([]any)
				for_, _ := spec["build-for"].([]any)
				if len(on) == 0 || len(for_) != 1 {
					t.Errorf("platform %s: build-on %v, build-for %v: want build-on entries and one build-for", pname, on, for_)
				}
				for _, b := range append(on, for_...) {
					if s, _ := b.(string); !strings.HasPrefix(s, "ubuntu@") || !strings.Contains(s, ":") {
						t.Errorf("platform %s: %v is not <base>:<arch>", pname, b)
					}
				}
			}
			parts, _ := doc["parts"].(map[string]any)
			if len(parts) != 1 {
				t.Errorf("parts %v, want one", parts)
			}
		})
	}
}

// TestSourceCharms checks the charm sources as Juju would read them.
func TestSourceCharms(t *testing.T) {
	for _, tt := range []struct {
		name        string
		subordinate bool
		endpoints   map[string]string // endpoint -> interface
	}{
		{"livepatch", false, map[string]string{"db": "pgsql", "database": "postgresql_client", "website": "http", "livepatch": "livepatch-peers",
			"cos-agent": "cos_agent", "metrics-endpoint": "prometheus_scrape", "s3-credentials": "s3"}},
		{"ubuntu-advantage", true, map[string]string{"juju-info": "juju-info"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cd, err := charm.ReadCharmDir(filepath.Join(tt.name))
			if err != nil {
				t.Fatal(err)
			}
			if err := charm.CheckMeta(cd); err != nil {
				t.Fatal(err)
			}
			meta := cd.Meta()
			if meta.Name != tt.name || meta.Subordinate != tt.subordinate {
				t.Errorf("name %q subordinate %v", meta.Name, meta.Subordinate)
			}
			got := map[string]string{}
			for name, r := range meta.CombinedRelations() {
				got[name] = r.Interface
			}
			if diff := cmp.Diff(tt.endpoints, got); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if tt.subordinate {
				if r := meta.Requires["juju-info"]; r.Scope != charm.ScopeContainer {
					t.Errorf("juju-info scope %q, want container", r.Scope)
				}
			}
		})
	}
}

func readCharms(t *testing.T) map[string]charm.Charm {
	t.Helper()
	all, err := charms.ReadPublicCharms(filepath.Join(repoRoot, "bundle", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"livepatch", "ubuntu-advantage"} {
		cd, err := charm.ReadCharmDir(name)
		if err != nil {
			t.Fatal(err)
		}
		all[name] = cd
	}
	return all
}

func TestBundleVerifies(t *testing.T) {
	if err := charms.VerifyBundle(filepath.Join(repoRoot, "bundle", "bundle.yaml"), "", readCharms(t), nil); err != nil {
		t.Fatal(err)
	}
}

// TestBundlePinsPublicCharms checks that haproxy and postgresql are pinned to a channel and
// to the revisions whose metadata and config bundle/testdata holds, and that a missing or
// different pin is caught.
func TestBundlePinsPublicCharms(t *testing.T) {
	path := filepath.Join(repoRoot, "bundle", "bundle.yaml")
	public, err := charms.ReadPublicCharms(filepath.Join(repoRoot, "bundle", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for name, ch := range public {
		got[name] = ch.Revision()
	}
	if diff := cmp.Diff(map[string]int{"haproxy": 84, "postgresql": 468}, got); diff != "" {
		t.Errorf("fixture revisions (-want +got):\n%s", diff)
	}
	if err := charms.CheckPins(path, public); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, old, new, want string }{
		{"no revision", "    revision: 468\n", "", `"postgresql" (charm postgresql) has no revision`},
		{"no channel", "    channel: latest/stable\n", "", `"haproxy" (charm haproxy) has no channel`},
		{"another revision", "revision: 84\n", "revision: 85\n", "pinned to revision 85 of haproxy, but the fixture is of revision 84"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("bundle.yaml has no %q", tt.old)
			}
			p := filepath.Join(t.TempDir(), "bundle.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			err := charms.CheckPins(p, public)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestBundleVerificationCatchesMistakes shows the verification is not vacuous.
func TestBundleVerificationCatchesMistakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "bundle", "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"mismatched interface", `["livepatch:database", "postgresql:database"]`, `["livepatch:database", "postgresql:db"]`, "mismatched interface"},
		{"unknown endpoint", `["livepatch:website", "haproxy:reverseproxy"]`, `["livepatch:web", "haproxy:reverseproxy"]`, `"web"`},
		{"provider to provider", `["livepatch:website", "haproxy:reverseproxy"]`, `["livepatch:website", "haproxy:website"]`, "provider to provider"},
		{"units of a subordinate", "charm: ubuntu-advantage\n", "charm: ubuntu-advantage\n    num_units: 1\n", "subordinate"},
		{"unknown option", "patchstore: postgres", "patch_store: postgres", "patch_store"},
		{"unknown option of a public charm", "global_maxconn: 4096", "global_max_conn: 4096", `"global_max_conn" not found in charm "haproxy"`},
		{"option of the wrong type", "global_maxconn: 4096", "global_maxconn: lots", "global_maxconn"},
		{"string option given a number", `default_timeouts: "queue 60000, connect 5000, client 60000, server 60000"`, "default_timeouts: 60000", "default_timeouts"},
		{"revision without channel", "    channel: 14/stable\n", "", "requires a channel"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("bundle.yaml has no %q", tt.old)
			}
			path := filepath.Join(t.TempDir(), "bundle.yaml")
			if err := os.WriteFile(path, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			err := charms.VerifyBundle(path, "", readCharms(t), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestBundleEndpointsExist checks every relation of the bundle names an endpoint of its
// charm's metadata (juju-info is implicit on every charm).
func TestBundleEndpointsExist(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "bundle", "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Applications map[string]struct {
			Charm string `yaml:"charm"`
		} `yaml:"applications"`
		Relations [][]string `yaml:"relations"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	all := readCharms(t)
	want := [][]string{
		{"livepatch:database", "postgresql:database"},
		{"livepatch:website", "haproxy:reverseproxy"},
		{"ubuntu-advantage:juju-info", "livepatch:juju-info"},
	}
	if diff := cmp.Diff(want, doc.Relations); diff != "" {
		t.Errorf("relations (-want +got):\n%s", diff)
	}
	for _, rel := range doc.Relations {
		for _, end := range rel {
			app, endpoint, _ := strings.Cut(end, ":")
			ch := all[doc.Applications[app].Charm]
			if ch == nil {
				t.Fatalf("no charm for %s", app)
			}
			if _, ok := ch.Meta().CombinedRelations()[endpoint]; !ok && endpoint != "juju-info" {
				t.Errorf("%s: charm %s has no endpoint %q", end, ch.Meta().Name, endpoint)
			}
		}
	}
}

func TestValidateRejectsBrokenCharm(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"metadata.yaml":   "name: broken\nsummary: s\ndescription: d\n",
		"config.yaml":     "options:\n  x:\n    type: int\n    default: 1\n",
		"charmcraft.yaml": "type: charm\nplatforms:\n  p:\n    build-for: [ubuntu@22.04:amd64]\n",
		"dispatch":        "#!/bin/sh\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "broken.charm")
	if err := charms.Pack(dir, out); err != nil {
		t.Fatal(err)
	}
	_, _, err := charms.Validate(out)
	for _, want := range []string{"dispatch is not executable", "config option x has no description"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %v, want %q", err, want)
		}
	}
}

// TestMakeCharms runs `make charms` into a temporary directory and checks the archives.
func TestMakeCharms(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary: skipped with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	out := t.TempDir()
	if err := testbin.MakeCharms(out, nil); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		members []string
	}{
		{"livepatch", []string{"README.md", "actions.yaml", "bin/livepatch-server", "config.yaml", "dispatch", "manifest.yaml", "metadata.yaml", "revision"}},
		{"ubuntu-advantage", []string{"README.md", "config.yaml", "dispatch", "manifest.yaml", "metadata.yaml", "revision"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca, members, err := charms.Validate(filepath.Join(out, tt.name+".charm"))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.members {
				if _, ok := members[m]; !ok {
					t.Errorf("archive has no %s", m)
				}
			}
			for _, m := range []string{"dispatch", "bin/livepatch-server"} {
				if mode, ok := members[m]; ok && mode.Perm() != 0o755 {
					t.Errorf("%s mode %v, want 0755", m, mode)
				}
			}
			if _, ok := members["charmcraft.yaml"]; ok {
				t.Error("charmcraft.yaml is in the archive")
			}
			bases := ca.Manifest().Bases
			var channels []string
			for _, b := range bases {
				channels = append(channels, b.Channel.Track)
			}
			slices.Sort(channels)
			if diff := cmp.Diff([]string{"22.04", "24.04"}, channels); diff != "" {
				t.Errorf("manifest bases (-want +got):\n%s", diff)
			}
			src, _ := os.ReadFile(filepath.Join(tt.name, "config.yaml"))
			expanded := t.TempDir()
			if err := ca.ExpandTo(expanded); err != nil {
				t.Fatal(err)
			}
			packed, _ := os.ReadFile(filepath.Join(expanded, "config.yaml"))
			if string(src) != string(packed) {
				t.Error("config.yaml in the archive differs from the source")
			}
		})
	}
}
