package config_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/livepatch-onprem/livepatch/server/config"
)

const minimal = `
server:
  address: 127.0.0.1:8080
  url-template: http://10.0.0.1/patches/{filename}
database:
  connection-string: postgres://u:p@127.0.0.1/livepatch?sslmode=disable
`

func TestParseDefaults(t *testing.T) {
	c, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.Server.Address = "127.0.0.1:8080"
	want.Server.URLTemplate = "http://10.0.0.1/patches/{filename}"
	want.Database.ConnectionString = "postgres://u:p@127.0.0.1/livepatch?sslmode=disable"
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if c.Auth.SessionTTL.D() != 240*time.Hour || c.PatchSync.Interval.D() != time.Hour {
		t.Errorf("durations: %v %v", c.Auth.SessionTTL.D(), c.PatchSync.Interval.D())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	c.Auth.BasicUsers = []string{"admin:$2y$10$" + strings.Repeat("a", 53)}
	c.PatchSync.Flavors = []string{"generic", "aws"}
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, data)
	}
	if diff := cmp.Diff(c, back, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestParseListsEveryProblem(t *testing.T) {
	_, err := config.Parse([]byte(`
server:
  address: nowhere
  url-template: http://x/patches/
  log-level: loud
database:
  connection-string: ""
patch-storage:
  type: filesystem
machine-reports:
  retention-days: 0
patch-sync:
  minimum-kernel-version: "5.15"
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`server.address "nowhere" is not host:port`,
		`does not contain {filename}`,
		`server.log-level "loud"`,
		"database.connection-string is required",
		"patch-storage.filesystem-path is required",
		"machine-reports.retention-days must be at least 1",
		`kernel version "5.15" is not of the form x.y.z`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestParseRejectsUnknownKeysAndBadDurations(t *testing.T) {
	for in, want := range map[string]string{
		minimal + "serve:\n  x: 1\n":                   "field serve not found",
		minimal + "auth:\n  session-ttl: forever\n":    `invalid duration "forever"`,
		minimal + "patch-cache:\n  cache-size: lots\n": "cannot unmarshal",
		"server:\n  address: [1, 2]\n":                 "cannot unmarshal",
	} {
		if _, err := config.Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestParseBasicUser(t *testing.T) {
	hash := "$2b$10$" + strings.Repeat("A", 53)
	for _, prefix := range []string{"$2y$", "$2a$", "$2b$"} {
		entry := "admin:" + prefix + hash[4:]
		if _, _, err := config.ParseBasicUser(entry); err != nil {
			t.Errorf("ParseBasicUser(%s...): %v", prefix, err)
		}
	}
	for entry, want := range map[string]string{
		"admin":               "not of the form user:bcrypt-hash",
		"admin:plaintext":     `user "admin": password is not a bcrypt hash`,
		":$2y$10$" + hash[7:]: "not of the form",
		"bad user:" + hash:    "characters other than",
		"admin:$1$abc$def":    "not a bcrypt hash",
		strings.Repeat("a", config.MaxUserName+1) + ":" + hash: "longer than 64 bytes",
	} {
		_, _, err := config.ParseBasicUser(entry)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBasicUser(%q) = %v, want %q", entry, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "plaintext") {
			t.Errorf("error echoes the secret: %v", err)
		}
	}
}

// TestParseBasicUserHtpasswd checks the real htpasswd output parses, as operators paste it.
func TestParseBasicUserHtpasswd(t *testing.T) {
	path, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Skip("htpasswd is not installed (apache2-utils)")
	}
	out, err := exec.Command(path, "-bnBC", "10", "admin", "pw").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := config.ParseBasicUser(strings.TrimSpace(string(out))); err != nil {
		t.Errorf("htpasswd output %q: %v", out, err)
	}
}

func TestCheckURLTemplate(t *testing.T) {
	for tmpl, ok := range map[string]bool{
		"http://10.0.0.1/patches/{filename}":           true,
		"https://lp.example.com/v1/patches/{filename}": true,
		"":                         false,
		"http://10.0.0.1/patches/": false,
		"ftp://x/{filename}":       false,
		"/patches/{filename}":      false,
	} {
		if err := config.CheckURLTemplate(tmpl); (err == nil) != ok {
			t.Errorf("CheckURLTemplate(%q) = %v, want ok=%v", tmpl, err, ok)
		}
	}
}

func TestSyncTiers(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		want       string // a problem the error must name; "" = valid
	}{{
		name: "off by default",
		yaml: minimal,
	}, {
		name: "on, with the landing tier empty",
		yaml: minimal + "patch-sync:\n  enabled: true\n  upstream-url: https://central.example\n  sync-tiers: true\n",
	}, {
		name: "on, with a landing tier",
		yaml: minimal + "patch-sync:\n  enabled: true\n  upstream-url: https://central.example\n  sync-tiers: true\n  tier: beta\n",
		want: `patch-sync.tier "beta" is meaningless with patch-sync.sync-tiers: synced patches go to the tier they are in on the upstream; leave patch-sync.tier empty`,
	}, {
		name: "both set while sync is off",
		yaml: minimal + "patch-sync:\n  sync-tiers: true\n  tier: beta\n",
		want: `patch-sync.tier "beta" is meaningless with patch-sync.sync-tiers`,
	}, {
		name: "on without an upstream",
		yaml: minimal + "patch-sync:\n  enabled: true\n",
		want: "patch-sync.upstream-url is empty: give the URL of the livepatch on-prem server to sync from, or turn patch-sync.enabled off and import offline bundles",
	}, {
		name: "a landing tier without sync-tiers",
		yaml: minimal + "patch-sync:\n  enabled: true\n  upstream-url: https://central.example\n  tier: beta\n",
	}, {
		name: "not a boolean",
		yaml: minimal + "patch-sync:\n  sync-tiers: sometimes\n",
		want: "cannot unmarshal",
	}} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			case tt.want == "" && c.PatchSync.SyncTiers != strings.Contains(tt.yaml, "sync-tiers: true"):
				t.Errorf("sync-tiers = %v", c.PatchSync.SyncTiers)
			}
		})
	}
}

// TestSyncTiersRendering: sync-tiers is written only when on, so the files rendered for
// servers that do not know the key stay the same.
func TestSyncTiersRendering(t *testing.T) {
	c, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "sync-tiers") {
		t.Errorf("sync-tiers off is rendered:\n%s", data)
	}
	c.PatchSync.SyncTiers = true
	if data, err = c.Marshal(); err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(data)
	if err != nil || !back.PatchSync.SyncTiers || !strings.Contains(string(data), "  sync-tiers: true\n") {
		t.Errorf("sync-tiers on renders as\n%s\nand reads back as %v, %v", data, back.PatchSync.SyncTiers, err)
	}
}

func TestTrustedProxies(t *testing.T) {
	got, err := config.ParseTrustedProxies([]string{"10.0.0.2", " 10.1.0.0/16 ", "::ffff:192.0.2.1", "2001:db8::/64", "10.2.3.4/24"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.2/32", "10.1.0.0/16", "192.0.2.1/32", "2001:db8::/64", "10.2.3.0/24"}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("ParseTrustedProxies (-want +got):\n%s", diff)
	}
	_, err = config.Parse([]byte(strings.Replace(minimal, "server:\n", "server:\n  trusted-proxies: [haproxy]\n", 1)))
	if err == nil || !strings.Contains(err.Error(), `server.trusted-proxies: "haproxy" is not an IP address or CIDR`) {
		t.Errorf("Parse with a host name as proxy: %v", err)
	}
}
