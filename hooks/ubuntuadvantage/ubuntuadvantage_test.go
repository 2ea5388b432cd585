package ubuntuadvantage_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/ubuntuadvantage"
)

const (
	goodToken = "C1good-s3cret-token"
	badToken  = "C1bad-s3cret-token"
)

// fakePro is the Pro client and apt on a fake machine. It answers as the real client does
// (canonical/ubuntu-pro-client): attach refuses an attached machine (exit 2), detach an
// unattached one (exit 1), config set refuses a proxy that does not work (exit 1).
type fakePro struct {
	mu        sync.Mutex
	installed bool
	attached  bool
	attachURL string
	root      string
	// attachFiles records the attach-config content and mode seen by each pro attach.
	attachFiles []string
	// proxies holds the pro config proxy settings; brokenProxy is refused by config set.
	proxies     map[string]string
	brokenProxy string
	// statusFails makes pro status fail as a broken client does.
	statusFails bool
}

func (p *fakePro) commands() hookstest.Commands {
	return hookstest.Commands{
		"apt-get": func(args []string, _ []byte) ([]byte, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(args) > 0 && args[0] == "install" {
				p.installed = true
			}
			return nil, nil
		},
		"add-apt-repository": func([]string, []byte) ([]byte, error) { return nil, nil },
		"pro": func(args []string, _ []byte) ([]byte, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !p.installed {
				return nil, fmt.Errorf("cannot run pro: %w", exec.ErrNotFound)
			}
			switch args[0] {
			case "--version":
				return []byte("32.3\n"), nil
			case "attach":
				if len(args) != 3 || args[1] != "--attach-config" {
					return nil, hookstest.Exit(2, "usage: pro attach <token> [flags]")
				}
				if p.attached {
					return nil, hookstest.Exit(2, "This machine is already attached to 'Cloud account'\nTo use a different subscription first run: sudo pro detach.\n")
				}
				info, err := os.Stat(args[2])
				if err != nil {
					return nil, hookstest.Exit(1, err.Error())
				}
				data, _ := os.ReadFile(args[2])
				p.attachFiles = append(p.attachFiles, fmt.Sprintf("%o %s", info.Mode().Perm(), data))
				var cfg struct {
					Token string `yaml:"token"`
				}
				yaml.Unmarshal(data, &cfg)
				if cfg.Token != goodToken {
					return nil, hookstest.Exit(1, "Invalid token. See https://ubuntu.com/pro/dashboard\n")
				}
				conf, _ := os.ReadFile(filepath.Join(p.root, ubuntuadvantage.ConfPath))
				p.attached = true
				p.attachURL = string(conf)
				return []byte("This machine is now attached to 'Ubuntu Pro'\n"), nil
			case "detach":
				if !p.attached {
					return nil, hookstest.Exit(1, "This machine is not attached to an Ubuntu Pro subscription.\nSee https://ubuntu.com/pro\n")
				}
				p.attached = false
				return []byte("This machine is now detached.\n"), nil
			case "config":
				if p.proxies == nil {
					p.proxies = map[string]string{}
				}
				switch {
				case len(args) == 3 && args[1] == "set":
					key, value, _ := strings.Cut(args[2], "=")
					if value == p.brokenProxy {
						return nil, hookstest.Exit(1, fmt.Sprintf("%q is not working. Not setting as proxy.\n", value))
					}
					p.proxies[key] = value
					return nil, nil
				case len(args) == 3 && args[1] == "unset":
					delete(p.proxies, args[2])
					return nil, nil
				}
				return nil, hookstest.Exit(2, "usage: pro config <command> [flags]")
			case "status":
				if p.statusFails {
					return nil, hookstest.Exit(1, "Unexpected error(s) occurred.\n")
				}
				if !p.attached {
					return []byte(`{"attached":false,"services":[]}`), nil
				}
				return []byte(`{"attached":true,"services":[
					{"name":"livepatch","status":"enabled"},{"name":"esm-infra","status":"enabled"},
					{"name":"fips","status":"disabled"},{"name":"esm-apps","status":"warning"},{"name":"cis","status":"n/a"}]}`), nil
			}
			return nil, hookstest.Exit(2, "unknown command "+args[0])
		},
	}
}

// proxyUnset are the commands of a first hook in a model without proxies: the charm
// takes the Pro client's proxy settings over, as the reference charm does.
var proxyUnset = []string{"pro config unset http_proxy", "pro config unset https_proxy"}

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func newHarness(t *testing.T, installed bool) (*hookstest.Harness, *fakePro) {
	t.Helper()
	h := hookstest.New(t, ubuntuadvantage.Charm())
	h.LoadCharm(t, filepath.Join("..", "..", "charms", "ubuntu-advantage"))
	p := &fakePro{installed: installed, root: h.Root}
	h.System = p.commands()
	return h, p
}

func state(config map[string]any) hookstest.State {
	return hookstest.State{
		Unit:   "ubuntu-advantage/0",
		Config: config,
		Env:    map[string]string{"JUJU_PRINCIPAL_UNIT": "livepatch/0"},
		Relations: []hookstest.Relation{{
			ID: 7, Endpoint: "juju-info", RemoteApp: "livepatch",
			RemoteUnits: map[string]map[string]string{"livepatch/0": {"private-address": "10.0.0.5"}},
		}},
	}
}

func checkNoLeaks(t *testing.T, res hookstest.Result) {
	t.Helper()
	public := []string{res.Status.Message}
	public = append(public, res.Logs...)
	public = append(public, hookstest.CommandLines(res.Commands)...)
	public = append(public, hookstest.CommandLines(res.ToolCalls)...)
	for _, p := range public {
		if strings.Contains(p, "s3cret") {
			t.Errorf("token leaked in %q", p)
		}
	}
}

const attachedStatus = "Attached (esm-apps,esm-infra,livepatch)"

func TestReconcile(t *testing.T) {
	tests := []struct {
		name         string
		installed    bool
		config       map[string]any
		want         hooks.Status
		wantCommands []string
	}{{
		name:   "no token, pro missing",
		config: map[string]any{},
		want:   hooks.Blocked(ubuntuadvantage.MessageNoToken),
		wantCommands: cat([]string{
			"pro --version", "apt-get update", "apt-get install --yes ubuntu-advantage-tools",
		}, proxyUnset, []string{"pro status --format json"}),
	}, {
		name:   "no token, pro missing, ppa set",
		config: map[string]any{"ppa": "ppa:ua-client/stable"},
		want:   hooks.Blocked(ubuntuadvantage.MessageNoToken),
		wantCommands: cat([]string{
			"add-apt-repository --yes ppa:ua-client/stable", "pro --version", "apt-get update",
			"apt-get install --yes ubuntu-advantage-tools",
		}, proxyUnset, []string{"pro status --format json"}),
	}, {
		name:         "no token, pro installed",
		installed:    true,
		config:       map[string]any{},
		want:         hooks.Blocked(ubuntuadvantage.MessageNoToken),
		wantCommands: cat([]string{"pro --version"}, proxyUnset, []string{"pro status --format json"}),
	}, {
		name:      "valid token",
		installed: true,
		config:    map[string]any{"token": goodToken},
		want:      hooks.Active(attachedStatus),
		wantCommands: cat([]string{"pro --version"}, proxyUnset, []string{
			"pro status --format json",
			"pro attach --attach-config ROOT/var/lib/ubuntu-advantage-charm/attach-config.yaml",
			"pro status --format json",
		}),
	}, {
		name:      "invalid token",
		installed: true,
		config:    map[string]any{"token": badToken},
		want:      hooks.Blocked(ubuntuadvantage.MessageAttachError + " (Invalid token. See https://ubuntu.com/pro/dashboard)"),
		wantCommands: cat([]string{"pro --version"}, proxyUnset, []string{
			"pro status --format json",
			"pro attach --attach-config ROOT/var/lib/ubuntu-advantage-charm/attach-config.yaml",
		}),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newHarness(t, tt.installed)
			res := h.Run(t, "config-changed", state(tt.config))
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if diff := cmp.Diff(tt.want, res.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			var want []string
			for _, c := range tt.wantCommands {
				want = append(want, strings.ReplaceAll(c, "ROOT", h.Root))
			}
			var got []string
			for _, c := range res.Commands {
				got = append(got, c.String())
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			checkNoLeaks(t, res)
			if _, err := os.Stat(filepath.Join(h.Root, ubuntuadvantage.AttachConfigPath)); !os.IsNotExist(err) {
				t.Errorf("attach config left on disk: %v", err)
			}
		})
	}
}

func TestAttachConfigFile(t *testing.T) {
	h, p := newHarness(t, true)
	h.Run(t, "config-changed", state(map[string]any{"token": goodToken}))
	if diff := cmp.Diff([]string{"600 token: " + goodToken + "\n"}, p.attachFiles); diff != "" {
		t.Errorf("attach config files (-want +got):\n%s", diff)
	}
}

func TestContractURL(t *testing.T) {
	h, p := newHarness(t, true)
	h.WriteFile(t, ubuntuadvantage.ConfPath, "contract_url: https://old.example\ndata_dir: /var/lib/ubuntu-advantage\nlog_level: debug\n", 0o644)
	st := state(map[string]any{"token": goodToken, "contract_url": "https://contracts.internal:8484"})
	res := h.Run(t, "config-changed", st)
	want := "contract_url: https://contracts.internal:8484\ndata_dir: /var/lib/ubuntu-advantage\nlog_level: debug\n"
	if diff := cmp.Diff(want, h.ReadFile(t, ubuntuadvantage.ConfPath)); diff != "" {
		t.Errorf("uaclient.conf (-want +got):\n%s", diff)
	}
	if !strings.Contains(p.attachURL, "https://contracts.internal:8484") {
		t.Errorf("attached before contract_url was written: %q", p.attachURL)
	}

	// Changing contract_url re-attaches.
	st = res.State
	st.Config["contract_url"] = "https://contracts.canonical.com"
	res = h.Run(t, "config-changed", st)
	got := hookstest.CommandLines(res.Commands)
	if d, a := slices.Index(got, "pro detach --assume-yes"), slices.IndexFunc(got, func(l string) bool { return strings.HasPrefix(l, "pro attach") }); d < 0 || a < d {
		t.Errorf("commands %q: want detach then attach", got)
	}
	if res.Status != hooks.Active(attachedStatus) {
		t.Errorf("status %v", res.Status)
	}
}

func TestTokenLifecycle(t *testing.T) {
	h, p := newHarness(t, true)
	st := state(map[string]any{"token": goodToken})
	steps := []struct {
		name         string
		hook         string
		token        string
		want         hooks.Status
		wantCommands []string
	}{
		{"attach", "config-changed", goodToken, hooks.Active(attachedStatus),
			cat([]string{"pro --version"}, proxyUnset, []string{"pro status --format json", "pro attach --attach-config attach-config.yaml", "pro status --format json"})},
		{"nothing changed", "update-status", goodToken, hooks.Active(attachedStatus),
			[]string{"pro --version", "pro status --format json"}},
		{"token changed to a bad one", "config-changed", badToken,
			hooks.Blocked(ubuntuadvantage.MessageAttachError + " (Invalid token. See https://ubuntu.com/pro/dashboard)"),
			[]string{"pro --version", "pro detach --assume-yes", "pro status --format json", "pro attach --attach-config attach-config.yaml"}},
		{"update-status does not retry a bad token", "update-status", badToken,
			hooks.Blocked(ubuntuadvantage.MessageAttachError + " (Invalid token. See https://ubuntu.com/pro/dashboard)"),
			[]string{"pro --version"}},
		{"token fixed", "config-changed", goodToken, hooks.Active(attachedStatus),
			[]string{"pro --version", "pro status --format json", "pro attach --attach-config attach-config.yaml", "pro status --format json"}},
		{"token removed", "config-changed", "", hooks.Blocked(ubuntuadvantage.MessageNoToken),
			[]string{"pro --version", "pro detach --assume-yes", "pro status --format json"}},
	}
	for _, step := range steps {
		st.Config["token"] = step.token
		res := h.Run(t, step.hook, st)
		if res.Err != nil {
			t.Fatalf("%s: %v", step.name, res.Err)
		}
		if diff := cmp.Diff(step.want, res.Status); diff != "" {
			t.Errorf("%s: status (-want +got):\n%s", step.name, diff)
		}
		var got []string
		for _, line := range hookstest.CommandLines(res.Commands) {
			got = append(got, strings.ReplaceAll(line, filepath.Join(h.Root, filepath.Dir(ubuntuadvantage.AttachConfigPath))+"/", ""))
		}
		if diff := cmp.Diff(step.wantCommands, got); diff != "" {
			t.Errorf("%s: commands (-want +got):\n%s", step.name, diff)
		}
		checkNoLeaks(t, res)
		st = res.State
	}
	if p.attached {
		t.Error("still attached after the token was removed")
	}
}

func TestDetachedByHand(t *testing.T) {
	h, p := newHarness(t, true)
	st := h.Run(t, "config-changed", state(map[string]any{"token": goodToken})).State
	p.mu.Lock()
	p.attached = false
	p.mu.Unlock()
	res := h.Run(t, "update-status", st)
	if !strings.HasPrefix(res.Status.Message, ubuntuadvantage.MessageAttachError) {
		t.Errorf("status %v", res.Status)
	}
	res = h.Run(t, "config-changed", res.State)
	if res.Status != hooks.Active(attachedStatus) {
		t.Errorf("status after re-attach %v", res.Status)
	}
}

func TestRemoveDetaches(t *testing.T) {
	h, p := newHarness(t, true)
	st := h.Run(t, "config-changed", state(map[string]any{"token": goodToken})).State
	if res := h.Run(t, "stop", st); len(res.Commands) != 0 {
		t.Errorf("stop ran %v", hookstest.CommandLines(res.Commands))
	}
	res := h.Run(t, "remove", st)
	if diff := cmp.Diff([]string{"pro detach --assume-yes"}, hookstest.CommandLines(res.Commands)); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if p.attached {
		t.Error("still attached after remove")
	}
}
