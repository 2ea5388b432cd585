package haproxy

import (
	"flag"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestRender(t *testing.T) {
	var services []Service
	err := yaml.Unmarshal([]byte(`
- service_name: livepatch
  service_host: "0.0.0.0"
  service_port: 80
  service_options: [balance leastconn, cookie SRVNAME insert, option httpchk GET /debug/info]
  server_options: maxconn 200 cookie S{i} check
`), &services)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{ // as config-get --format=json decodes it
		"global_maxconn": 4096.0, "global_spread_checks": 0.0, "global_default_dh_param": 2048.0,
		"default_mode": "http", "default_retries": 3.0, "default_options": "httplog, dontlognull",
		"default_timeouts": "queue 60000, connect 5000, client 60000, server 60000",
	}
	backends := map[string][]server{"livepatch": {
		{name: "livepatch-0-8080", addr: "127.0.9.2", port: "8080"},
		{name: "livepatch-1-8080", addr: "127.0.9.3", port: "8080"},
	}}
	got := Render(cfg, services, backends, "127.0.9.1", "0")
	if *update {
		os.WriteFile("testdata/haproxy.cfg.golden", []byte(got), 0o644)
	}
	want, err := os.ReadFile("testdata/haproxy.cfg.golden")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("haproxy.cfg (-want +got):\n%s", diff)
	}
}
