package pro_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
	"github.com/livepatch-onprem/livepatch/tests/standin/pro"
	"github.com/livepatch-onprem/livepatch/tests/standin/webproxy"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(args ...string) result {
	var out, errOut bytes.Buffer
	code := pro.Run(args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

// machine gives the test a fresh machine root with no proxy in the environment.
func machine(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	t.Setenv("JUJU_SIM_ROOT", root)
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		t.Setenv(k, "")
	}
	return root
}

func startProxy(t *testing.T) *webproxy.Proxy {
	t.Helper()
	p, err := webproxy.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func startContracts(t *testing.T, root string) *contracts.Server {
	t.Helper()
	cs := contracts.New("good-token")
	if err := cs.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	conf := filepath.Join(root, "etc/ubuntu-advantage/uaclient.conf")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	if err := os.WriteFile(conf, []byte("contract_url: "+cs.URL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return cs
}

func status(t *testing.T) map[string]any {
	t.Helper()
	res := run("status", "--format", "json")
	var st map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("pro status: %v (%+v)", err, res)
	}
	return st
}

func uaConfig(t *testing.T) map[string]any {
	t.Helper()
	return status(t)["config"].(map[string]any)["ua_config"].(map[string]any)
}

func TestConfigSetUnset(t *testing.T) {
	machine(t)
	p := startProxy(t)
	withUser := strings.Replace(p.URL, "http://", "http://user:s3cret@", 1)
	for _, args := range [][]string{
		{"config", "set", "http_proxy=" + p.URL},
		{"config", "set", "https_proxy=" + withUser},
	} {
		if res := run(args...); res.code != 0 {
			t.Fatalf("%v: %+v", args, res)
		}
	}
	// The proxies were checked through the proxy, as the real client does.
	want := []string{"HEAD http://api.snapcraft.io/", "CONNECT api.snapcraft.io:443"}
	if diff := cmp.Diff(want, p.Requests()); diff != "" {
		t.Errorf("proxy requests (-want +got):\n%s", diff)
	}
	if res := run("config", "show", "https_proxy"); res.stdout != "https_proxy "+withUser+"\n" {
		t.Errorf("config show https_proxy = %+v", res)
	}
	cfg := uaConfig(t)
	if cfg["http_proxy"] != p.URL || cfg["https_proxy"] != "<REDACTED>" || cfg["update_messaging_timer"] != float64(21600) {
		t.Errorf("status ua_config = %v", cfg)
	}
	if res := run("config", "unset", "https_proxy"); res.code != 0 {
		t.Fatalf("unset: %+v", res)
	}
	if cfg := uaConfig(t); cfg["https_proxy"] != nil || cfg["http_proxy"] != p.URL {
		t.Errorf("after unset: %v", cfg)
	}
	show := run("config", "show").stdout
	if !strings.Contains(show, "https_proxy                    None\n") || !strings.Contains(show, "apt_news                       True\n") {
		t.Errorf("config show:\n%s", show)
	}
}

func TestConfigRefusals(t *testing.T) {
	machine(t)
	p := startProxy(t)
	tests := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"config", "set", "no_proxy=localhost"}, 1, "<key> must be one of: http_proxy, https_proxy"},
		{[]string{"config", "set", "http_proxy"}, 1, "Expected <key>=<value> but found: http_proxy"},
		{[]string{"config", "set", "http_proxy=http://u:a=b@squid:3128"}, 1, "Expected <key>=<value>"},
		{[]string{"config", "set", "http_proxy= "}, 1, "Empty value provided for http_proxy."},
		{[]string{"config", "set", "http_proxy=squid:3128"}, 1, `"squid:3128" is not a valid url. Not setting as proxy.`},
		{[]string{"config", "set", "http_proxy=socks5://squid:1080"}, 1, "is not a valid url"},
		{[]string{"config", "set", "http_proxy=http://127.0.0.1:1"}, 1, `"http://127.0.0.1:1" is not working. Not setting as proxy.`},
		{[]string{"config", "set", "metering_timer=-1"}, 1, "must be a positive integer"},
		{[]string{"config", "set", "apt_news=yes"}, 1, "<value> must be one of: true, false"},
		{[]string{"config", "set", "lxd_guest_attach=on"}, 1, "not attached"},
		{[]string{"config", "set"}, 2, "required: key_value_pair"},
		{[]string{"config", "unset", "no_proxy"}, 1, "<key> must be one of"},
		{[]string{"config", "unset"}, 2, "required: key"},
		{[]string{"config", "show", "token"}, 1, "'token' must be one of"},
		{[]string{"config", "get"}, 2, "invalid choice"},
	}
	for _, tt := range tests {
		res := run(tt.args...)
		if res.code != tt.code || !strings.Contains(res.stderr, tt.inStderr) {
			t.Errorf("%q = %+v, want exit %d and %q", tt.args, res, tt.code, tt.inStderr)
		}
	}
	// A proxy that would be bypassed cannot reach the internet for the check.
	t.Setenv("no_proxy", "snapcraft.io")
	if res := run("config", "set", "http_proxy="+p.URL); res.code != 1 || !strings.Contains(res.stderr, "is not working") {
		t.Errorf("proxy bypassed for api.snapcraft.io: %+v", res)
	}
	if got := p.Requests(); len(got) != 0 {
		t.Errorf("refused settings reached the proxy: %q", got)
	}
	if cfg := uaConfig(t); cfg["http_proxy"] != nil {
		t.Errorf("a refused setting was kept: %v", cfg)
	}
}

func TestAttachThroughProxy(t *testing.T) {
	attach := func(t *testing.T) {
		t.Helper()
		if res := run("attach", "good-token"); res.code != 0 {
			t.Fatalf("attach: %+v", res)
		}
	}
	t.Run("pro config", func(t *testing.T) {
		root := machine(t)
		cs := startContracts(t, root)
		p := startProxy(t)
		run("config", "set", "http_proxy="+p.URL)
		attach(t)
		if !slices.Contains(p.Requests(), "POST "+cs.URL+"/v1/context/machines/token") {
			t.Errorf("attach did not go through the proxy: %q", p.Requests())
		}
	})
	t.Run("environment", func(t *testing.T) {
		root := machine(t)
		cs := startContracts(t, root)
		p := startProxy(t)
		t.Setenv("http_proxy", p.URL)
		attach(t)
		if !slices.Contains(p.Requests(), "POST "+cs.URL+"/v1/context/machines/token") {
			t.Errorf("attach did not use http_proxy: %q", p.Requests())
		}
	})
	t.Run("no_proxy", func(t *testing.T) {
		root := machine(t)
		startContracts(t, root)
		p := startProxy(t)
		run("config", "set", "http_proxy="+p.URL)
		t.Setenv("no_proxy", "localhost,127.0.0.1")
		attach(t)
		if got := p.Requests(); len(got) != 1 {
			t.Errorf("requests through the proxy besides its check: %q", got)
		}
	})
	t.Run("no_proxy CIDR is not honoured", func(t *testing.T) {
		root := machine(t)
		cs := startContracts(t, root)
		p := startProxy(t)
		t.Setenv("http_proxy", p.URL)
		t.Setenv("no_proxy", "127.0.0.0/8")
		attach(t)
		if !slices.Contains(p.Requests(), "POST "+cs.URL+"/v1/context/machines/token") {
			t.Errorf("urllib's no_proxy has no CIDR, yet the request went direct: %q", p.Requests())
		}
	})
}

func TestPreattached(t *testing.T) {
	root := machine(t)
	if err := pro.Preattach(root, "Cloud account"); err != nil {
		t.Fatal(err)
	}
	st := status(t)
	var enabled []string
	for _, s := range st["services"].([]any) {
		if s := s.(map[string]any); s["status"] == "enabled" {
			enabled = append(enabled, s["name"].(string))
		}
	}
	if st["attached"] != true || !slices.Equal(enabled, []string{"esm-apps", "esm-infra"}) {
		t.Errorf("status of a pre-attached machine: attached %v, enabled %v", st["attached"], enabled)
	}
	f := filepath.Join(t.TempDir(), "attach.yaml")
	os.WriteFile(f, []byte("token: good-token\n"), 0o600)
	res := run("attach", "--attach-config", f)
	if res.code != 2 || !strings.Contains(res.stderr, "This machine is already attached to 'Cloud account'") {
		t.Errorf("attach on a pre-attached machine = %+v", res)
	}
	if res := run("attach", "--attach-config", f, "good-token"); res.code != 2 {
		t.Errorf("already attached comes first: %+v", res)
	}
	if res := run("detach", "--assume-yes"); res.code != 0 {
		t.Errorf("detach = %+v", res)
	}
	if status(t)["attached"] != false {
		t.Error("still attached after detach")
	}
	if res := run("attach", "--attach-config", f, "good-token"); res.code != 1 || !strings.Contains(res.stderr, "Do not pass the TOKEN arg") {
		t.Errorf("token and attach config = %+v", res)
	}
}

// TestDetach checks detach as the real client answers it: an unattached machine first
// (exit 1), the services it will disable, a prompt without --assume-yes that fails on an
// end of input and declines on anything but y/yes.
func TestDetach(t *testing.T) {
	root := machine(t)
	res := run("detach", "--assume-yes")
	if res.code != 1 || res.stderr != "This machine is not attached to an Ubuntu Pro subscription.\nSee https://ubuntu.com/pro\n" {
		t.Errorf("detach unattached = %+v", res)
	}
	if err := pro.Preattach(root, "Cloud account"); err != nil {
		t.Fatal(err)
	}
	detach := func(stdin string, args ...string) result {
		var out, errOut bytes.Buffer
		code := pro.RunWithInput(append([]string{"detach"}, args...), strings.NewReader(stdin), &out, &errOut)
		return result{code, out.String(), errOut.String()}
	}
	if res := detach(""); res.code != 1 || !strings.HasPrefix(res.stderr, "An unexpected error occurred: EOF when reading a line") {
		t.Errorf("detach without a terminal = %+v", res)
	}
	if res := detach("n\n"); res.code != 1 || status(t)["attached"] != true {
		t.Errorf("detach declined = %+v", res)
	}
	want := `
Detach will disable the following services:
    esm-apps
    esm-infra
Are you sure? (y/N) This machine is now detached.
`[1:]
	if res := detach("y\n"); res.code != 0 || res.stdout != want {
		t.Errorf("detach confirmed = %+v, want stdout %q", res, want)
	}
	if status(t)["attached"] != false {
		t.Error("still attached after detach")
	}
	f := filepath.Join(t.TempDir(), "missing.yaml")
	if res := run("attach", "--attach-config", f); res.code != 2 || !strings.Contains(res.stderr, "argument --attach-config: can't open") {
		t.Errorf("attach with a missing attach config = %+v", res)
	}
}
