package ubuntuadvantage_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/ubuntuadvantage"
)

const (
	squid      = "http://squid.internal:3128"
	squidTLS   = "http://squid.internal:3129"
	modelNoPxy = "10.0.0.0/8,contracts.internal"
	// authProxy carries credentials that must not show.
	authProxy = "http://proxyuser:s3cret-pw@squid.internal:3128"
)

func withModelProxy(st hookstest.State, httpProxy, httpsProxy, noProxy string) hookstest.State {
	st.Env = maps.Clone(st.Env)
	st.Env[hooks.EnvHTTPProxy] = httpProxy
	st.Env[hooks.EnvHTTPSProxy] = httpsProxy
	st.Env[hooks.EnvNoProxy] = noProxy
	return st
}

// envOf returns the proxy variables a command ran with.
func envOf(cmd hooks.Command) map[string]string {
	env := map[string]string{}
	for _, kv := range cmd.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// TestModelProxy: the model's proxies reach every program the charm runs that may go out
// (apt-get, add-apt-repository, pro) as http_proxy/https_proxy/no_proxy in both cases, and
// the Pro client's own settings (pro config set) before pro attach; removing them from the
// model unsets them; a changed proxy is set again, an unchanged one is left alone.
func TestModelProxy(t *testing.T) {
	h, p := newHarness(t, false)
	st := withModelProxy(state(map[string]any{"token": goodToken, "ppa": "ppa:ua-client/stable"}), squid, squidTLS, modelNoPxy)
	res := h.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Status != hooks.Active(attachedStatus) {
		t.Fatalf("status %v", res.Status)
	}
	wantEnv := map[string]string{
		"http_proxy": squid, "HTTP_PROXY": squid, "https_proxy": squidTLS, "HTTPS_PROXY": squidTLS,
		"no_proxy": modelNoPxy, "NO_PROXY": modelNoPxy,
	}
	var lines []string
	for _, cmd := range res.Commands {
		lines = append(lines, cmd.String())
		if diff := cmp.Diff(wantEnv, envOf(cmd)); diff != "" {
			t.Errorf("%s: environment (-want +got):\n%s", cmd, diff)
		}
	}
	setHTTP := slices.Index(lines, "pro config set http_proxy="+squid)
	setHTTPS := slices.Index(lines, "pro config set https_proxy="+squidTLS)
	attach := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "pro attach") })
	if setHTTP < 0 || setHTTPS < 0 || attach < setHTTPS {
		t.Errorf("commands %q: want the pro config proxies set before pro attach", lines)
	}
	for _, prog := range []string{"add-apt-repository --yes", "apt-get update", "apt-get install"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prog) }) {
			t.Errorf("commands %q: no %s", lines, prog)
		}
	}
	if diff := cmp.Diff(map[string]string{"http_proxy": squid, "https_proxy": squidTLS}, p.proxies); diff != "" {
		t.Errorf("pro config (-want +got):\n%s", diff)
	}

	// Nothing changed: pro config is left alone.
	res = h.Run(t, "update-status", res.State)
	if got := hookstest.CommandLines(res.Commands); slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "pro config") }) {
		t.Errorf("update-status with the same proxies ran %q", got)
	}

	// The model's https proxy changes; Juju runs no hook for model config, the next one
	// (update-status at the latest) applies it.
	res = h.Run(t, "update-status", withModelProxy(res.State, squid, "http://other.internal:8080", modelNoPxy))
	if diff := cmp.Diff(map[string]string{"http_proxy": squid, "https_proxy": "http://other.internal:8080"}, p.proxies); diff != "" {
		t.Errorf("pro config after the change (-want +got):\n%s", diff)
	}

	// The model proxy is removed: the charm unsets both, and runs programs without proxies.
	res = h.Run(t, "update-status", withModelProxy(res.State, "", "", ""))
	if len(p.proxies) != 0 {
		t.Errorf("pro config after the model proxy was removed: %v", p.proxies)
	}
	got := hookstest.CommandLines(res.Commands)
	for _, want := range proxyUnset {
		if !slices.Contains(got, want) {
			t.Errorf("commands %q: no %s", got, want)
		}
	}
	for _, cmd := range res.Commands {
		if len(cmd.Env) != 0 {
			t.Errorf("%s ran with %q after the model proxy was removed", cmd, cmd.Env)
		}
	}
	if res.Status != hooks.Active(attachedStatus) {
		t.Errorf("status %v", res.Status)
	}
}

// TestOverrideProxy: override-http-proxy and override-https-proxy replace the model's, as
// in the reference charm; no_proxy stays the model's.
func TestOverrideProxy(t *testing.T) {
	h, p := newHarness(t, true)
	st := withModelProxy(state(map[string]any{"token": goodToken, "override-https-proxy": "http://override.internal:8443"}), squid, squidTLS, modelNoPxy)
	res := h.Run(t, "config-changed", st)
	if res.Status != hooks.Active(attachedStatus) {
		t.Fatalf("status %v", res.Status)
	}
	if diff := cmp.Diff(map[string]string{"http_proxy": squid, "https_proxy": "http://override.internal:8443"}, p.proxies); diff != "" {
		t.Errorf("pro config (-want +got):\n%s", diff)
	}
	env := envOf(res.Commands[0])
	if env["https_proxy"] != "http://override.internal:8443" || env["no_proxy"] != modelNoPxy {
		t.Errorf("environment %v", env)
	}

	st = res.State
	st.Config["override-http-proxy"] = "http://override.internal:8080"
	res = h.Run(t, "config-changed", st)
	if diff := cmp.Diff(map[string]string{"http_proxy": "http://override.internal:8080", "https_proxy": "http://override.internal:8443"}, p.proxies); diff != "" {
		t.Errorf("pro config with both overrides (-want +got):\n%s", diff)
	}
	if env := envOf(res.Commands[0]); env["http_proxy"] != "http://override.internal:8080" {
		t.Errorf("environment %v", env)
	}
}

// TestProxyRefused: a proxy the Pro client refuses (it checks a proxy works before it
// takes it) is a Blocked status naming the setting, with the proxy's password masked in the
// status and the log, and no attach; every hook retries it, and once the proxy works the
// machine attaches.
func TestProxyRefused(t *testing.T) {
	h, p := newHarness(t, true)
	p.brokenProxy = authProxy
	st := withModelProxy(state(map[string]any{"token": goodToken}), authProxy, "", "")
	res := h.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := hooks.Blocked(`cannot set the Pro client's http_proxy: "http://proxyuser:xxxxx@squid.internal:3128" is not working. Not setting as proxy.`)
	if diff := cmp.Diff(want, res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	for _, line := range append(res.Logs, res.Status.Message) {
		if strings.Contains(line, "s3cret") {
			t.Errorf("proxy password in %q", line)
		}
	}
	if p.attached {
		t.Error("attached although the proxy was refused")
	}
	p.brokenProxy = ""
	res = h.Run(t, "update-status", res.State)
	if res.Status != hooks.Active(attachedStatus) {
		t.Errorf("status once the proxy works: %v", res.Status)
	}
	for _, line := range res.Logs {
		if strings.Contains(line, "s3cret") {
			t.Errorf("proxy password in the log: %q", line)
		}
	}
}

// TestAlreadyAttached: a machine attached before the charm ran (a Pro cloud image) is
// handled as the reference charm (canonical/ubuntu-pro-operator) handles it: with a token,
// the charm detaches it and attaches with its token; without one it detaches it and is
// Blocked; when pro status fails it detaches to be sure, and a failed detach leaves pro
// attach to say what is wrong.
func TestAlreadyAttached(t *testing.T) {
	attachCmd := "pro attach --attach-config ROOT" + ubuntuadvantage.AttachConfigPath
	tests := []struct {
		name         string
		token        string
		statusFails  bool
		want         hooks.Status
		wantCommands []string
		wantAttached bool
	}{{
		name:         "token set",
		token:        goodToken,
		want:         hooks.Active(attachedStatus),
		wantCommands: []string{"pro status --format json", "pro detach --assume-yes", attachCmd, "pro status --format json"},
		wantAttached: true,
	}, {
		name:         "no token",
		want:         hooks.Blocked(ubuntuadvantage.MessageNoToken),
		wantCommands: []string{"pro status --format json", "pro detach --assume-yes"},
	}, {
		name:         "pro status fails",
		token:        goodToken,
		statusFails:  true,
		wantCommands: []string{"pro status --format json", "pro detach --assume-yes", attachCmd, "pro status --format json"},
		wantAttached: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, p := newHarness(t, true)
			p.attached = true // attached at first boot, not by the charm
			p.statusFails = tt.statusFails
			res := h.Run(t, "config-changed", state(map[string]any{"token": tt.token}))
			if tt.statusFails {
				// The charm attached; the final pro status still fails: a hook error,
				// retried by Juju.
				if res.Err == nil {
					t.Errorf("no hook error with pro status failing")
				}
			} else if diff := cmp.Diff(tt.want, res.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			got := hookstest.CommandLines(res.Commands)
			got = slices.DeleteFunc(got, func(l string) bool { return l == "pro --version" || strings.HasPrefix(l, "pro config") })
			var want []string
			for _, c := range tt.wantCommands {
				want = append(want, strings.ReplaceAll(c, "ROOT", h.Root))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			if p.attached != tt.wantAttached {
				t.Errorf("attached = %v, want %v", p.attached, tt.wantAttached)
			}
			checkNoLeaks(t, res)
		})
	}

	// Attached by hand after the charm was left without a token: the next hook detaches.
	h, p := newHarness(t, true)
	st := h.Run(t, "config-changed", state(map[string]any{})).State
	p.mu.Lock()
	p.attached = true
	p.mu.Unlock()
	if res := h.Run(t, "update-status", st); res.Status != hooks.Blocked(ubuntuadvantage.MessageNoToken) || p.attached {
		t.Errorf("status %v, attached %v: want the machine detached without a token", res.Status, p.attached)
	}
}
