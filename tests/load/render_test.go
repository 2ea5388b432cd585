package load

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// lookTool finds a tool the test runs; a missing haproxy fails under CI (make deps installs
// it), a missing nginx (only make bench installs it) skips.
func lookTool(t *testing.T, name string, required bool) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if required && os.Getenv("CI") != "" {
		t.Fatalf("%s not installed: run make deps", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

func TestHAProxyConfig(t *testing.T) {
	h := HAProxy{MaxConn: 8192, ServerMaxConn: 64, Frontends: []Frontend{
		{Name: "one", Bind: "127.0.0.10:18001", Servers: []string{"127.0.0.11:18002"}},
		{Name: "two", Bind: "127.0.0.10:18003", Servers: []string{"127.0.0.11:18002", "127.0.0.12:18004"}},
	}}
	data, err := h.Render()
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{
		"    maxconn 8192\n",
		"frontend two\n    bind 127.0.0.10:18003\n    default_backend two\n",
		"backend two\n    balance roundrobin\n    option httpchk GET /debug/info\n    http-check expect status 200\n" +
			"    server two-0 127.0.0.11:18002 check inter 2s maxconn 64\n" +
			"    server two-1 127.0.0.12:18004 check inter 2s maxconn 64\n",
		"    mode http\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("haproxy config lacks %q:\n%s", want, text)
		}
	}
	haproxy := lookTool(t, "haproxy", true)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(path, data, 0o644)
	if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c refuses the config: %v\n%s\n%s", err, out, text)
	}
}

func TestHAProxyConfigNeedsServers(t *testing.T) {
	if _, err := (HAProxy{Frontends: []Frontend{{Name: "x", Bind: "127.0.0.1:1"}}}).Render(); err == nil {
		t.Error("a frontend without servers rendered")
	}
}

func TestNginxConfig(t *testing.T) {
	dir := t.TempDir()
	n := Nginx{Listen: "127.0.0.14:18005", Root: filepath.Join(dir, "patches"), Dir: dir}
	data, err := n.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.14:18005;", "alias " + n.Root + "/;", "sendfile on;", "daemon off;", "worker_processes auto;", "location = /debug/info"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("nginx config lacks %q", want)
		}
	}
	if _, err := (Nginx{Listen: "x"}).Render(); err == nil {
		t.Error("an nginx config without root and dir rendered")
	}
	nginx := lookTool(t, "nginx", false)
	path := filepath.Join(dir, "nginx.conf")
	os.WriteFile(path, data, 0o644)
	if out, err := exec.Command(nginx, "-t", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", path).CombinedOutput(); err != nil {
		t.Errorf("nginx -t refuses the config: %v\n%s", err, out)
	}
}

func TestUnitConfigLoadsInTheServer(t *testing.T) {
	u := Unit{
		Address: "127.0.0.11:18002", URLTemplate: "http://127.0.0.10/patches/{filename}",
		DSN:       "postgres://postgres@127.0.0.1:5432/livepatch?sslmode=disable",
		BasicUser: "admin:$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		Storage:   config.StorageFilesystem, FilesystemPath: "/srv/patches", PatchCache: true,
	}
	data, err := u.Render()
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse(data)
	if err != nil {
		t.Fatalf("the server refuses the rendered config: %v\n%s", err, data)
	}
	want := config.Default()
	want.Server.Address, want.Server.URLTemplate = u.Address, u.URLTemplate
	want.Database.ConnectionString = u.DSN
	want.Auth.BasicUsers = []string{u.BasicUser}
	want.PatchStorage = config.PatchStorage{Type: config.StorageFilesystem, FilesystemPath: "/srv/patches"}
	want.PatchCache.Enabled = true
	gotYAML, _ := got.Marshal()
	wantYAML, _ := want.Marshal()
	if string(gotYAML) != string(wantYAML) {
		t.Errorf("config round trip:\n%s\nwant:\n%s", gotYAML, wantYAML)
	}
	if _, err := (Unit{}).Render(); err == nil {
		t.Error("a unit without address or database rendered")
	}
}

func TestPostgresSettings(t *testing.T) {
	text := DefaultPostgresSettings().Render()
	for _, want := range []string{"shared_buffers = 2GB\n", "max_wal_size = 8GB\n", "logging_collector = off\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("settings lack %q", want)
		}
	}
	// The cluster's own settings are internal/pgtest's.
	for _, own := range []string{"port", "listen_addresses", "unix_socket_directories", "max_connections", "fsync", "synchronous_commit", "full_page_writes"} {
		if strings.Contains(text, "\n"+own+" ") {
			t.Errorf("settings repeat the cluster's %s:\n%s", own, text)
		}
	}
}

func TestParseRates(t *testing.T) {
	got, err := ParseRates("500, 1000,2500.5")
	if err != nil || len(got) != 3 || got[2] != 2500.5 {
		t.Errorf("ParseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "x", "100,-1"} {
		if _, err := ParseRates(bad); err == nil {
			t.Errorf("ParseRates(%q) succeeded", bad)
		}
	}
}
