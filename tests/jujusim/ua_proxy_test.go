package jujusim_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/ubuntuadvantage"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
	"github.com/livepatch-onprem/livepatch/tests/standin/pro"
	"github.com/livepatch-onprem/livepatch/tests/standin/webproxy"
)

// uaCharm is our ubuntu-advantage charm, its hooks run by this test binary: the charm
// directory's metadata and config with a dispatch that calls Main.
const uaCharm = "simtest-ubuntu-advantage"

func init() {
	jujusim.RegisterStandin(jujusim.StandinCharm{
		Name:  uaCharm,
		Files: os.DirFS(filepath.Join("..", "..", "charms", "ubuntu-advantage")),
		Main: func() int {
			return hooks.Main(ubuntuadvantage.Charm())
		},
	})
}

// uaModel starts a model with extraEnv in every hook's environment (after Juju's own, so
// JUJU_CHARM_*_PROXY there are the model's proxy settings), a principal cli/0 and the
// ubuntu-advantage charm related to it, pointed at a contracts stand-in that accepts
// tokens. before runs on cli/0's machine root before the subordinate arrives.
func uaModel(t *testing.T, tokens []string, before func(root string), extraEnv ...string) (*jujusim.Model, *contracts.Server) {
	t.Helper()
	cs := contracts.New(tokens...)
	if err := cs.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	sc := scripts(t.TempDir())
	m, err := jujusim.New(jujusim.Options{
		Dir:      t.TempDir(),
		ExtraEnv: append([]string{"SIMTEST_SCRIPTS=" + string(sc)}, extraEnv...),
		Logf: func(format string, args ...any) {
			if testing.Verbose() {
				t.Logf(format, args...)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, "")})
	waitIdle(t, m)
	if before != nil {
		root, err := m.UnitRoot("cli/0")
		if err != nil {
			t.Fatal(err)
		}
		before(root)
	}
	deploy(t, m, jujusim.DeployArgs{Charm: uaCharm, Config: map[string]any{"contract_url": cs.URL}})
	relate(t, m, "cli", "ubuntu-advantage")
	waitIdle(t, m)
	return m, cs
}

func uaStatus(t *testing.T, m *jujusim.Model) jujusim.StatusInfo {
	t.Helper()
	u, ok := m.Status().Unit("ubuntu-advantage/0")
	if !ok {
		t.Fatal("no unit ubuntu-advantage/0")
	}
	return u.Workload
}

func setConfig(t *testing.T, m *jujusim.Model, values map[string]string) {
	t.Helper()
	if err := m.SetConfig("ubuntu-advantage", values); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
}

// TestUATokenSecret: the contract token as a Juju user secret, as an operator does it:
// juju add-secret, juju config token_secret= before juju grant-secret (Blocked, naming the
// fix), grant (picked up at the next hook: Juju runs none for a grant), then juju
// update-secret: secret-changed, and the charm detaches and attaches with the new token.
func TestUATokenSecret(t *testing.T) {
	m, cs := uaModel(t, []string{"token-one"}, nil)
	if st := uaStatus(t, m); st.Current != "blocked" || st.Message != ubuntuadvantage.MessageNoToken {
		t.Fatalf("before any token: %+v", st)
	}
	uri, err := m.AddSecret("pro-token", "Ubuntu Pro contract token", map[string]string{"token": "token-one"})
	if err != nil {
		t.Fatal(err)
	}
	setConfig(t, m, map[string]string{"token_secret": uri})
	st := uaStatus(t, m)
	if st.Current != "blocked" || !strings.Contains(st.Message, "token_secret") || !strings.Contains(st.Message, "juju grant-secret <secret> ubuntu-advantage") {
		t.Errorf("secret not granted: %+v, want Blocked naming token_secret and juju grant-secret", st)
	}

	if err := m.GrantSecret("pro-token", "ubuntu-advantage"); err != nil {
		t.Fatal(err)
	}
	m.TriggerUpdateStatus()
	waitIdle(t, m)
	if st := uaStatus(t, m); st.Current != "active" || !strings.HasPrefix(st.Message, "Attached (") {
		t.Fatalf("after grant-secret and update-status: %+v", st)
	}
	if cs.MachineCount() != 1 {
		t.Errorf("machine tokens issued: %d, want 1", cs.MachineCount())
	}

	// A rotation to a token the contracts server refuses shows it is the new token in use.
	if err := m.UpdateSecret("pro-token", jujusim.UpdateSecretArgs{Content: map[string]string{"token": "token-refused"}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if st := uaStatus(t, m); st.Current != "blocked" || !strings.Contains(st.Message, "Invalid token") {
		t.Errorf("after rotating to a refused token: %+v", st)
	}
	if !slices.Contains(m.HookNames("ubuntu-advantage/0"), "secret-changed") {
		t.Errorf("no secret-changed hook: %v", m.HookNames("ubuntu-advantage/0"))
	}

	cs.AddContractToken("token-two")
	if err := m.UpdateSecret("pro-token", jujusim.UpdateSecretArgs{Content: map[string]string{"token": "token-two"}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if st := uaStatus(t, m); st.Current != "active" || !strings.HasPrefix(st.Message, "Attached (") {
		t.Errorf("after rotating to token-two: %+v", st)
	}
	if cs.MachineCount() != 2 {
		t.Errorf("machine tokens issued: %d, want 2 (attached again with the new token)", cs.MachineCount())
	}

	// A secret without the token key.
	if err := m.UpdateSecret("pro-token", jujusim.UpdateSecretArgs{Content: map[string]string{"value": "token-two"}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if st := uaStatus(t, m); st.Current != "blocked" || !strings.Contains(st.Message, `no "token" key`) {
		t.Errorf("secret without a token key: %+v", st)
	}
	for _, e := range m.Logs() {
		for _, tok := range []string{"token-one", "token-two", "token-refused"} {
			if strings.Contains(e.Message, tok) {
				t.Errorf("token in the log: %s", e)
			}
		}
	}
}

// TestUAModelProxy: in a model with juju-http-proxy and juju-https-proxy (no juju-no-proxy),
// the charm gives the Pro client the proxies (which checks them through the proxy, as the
// real client does) and the attach to the contracts server goes through the proxy; the
// proxy's password reaches no log.
func TestUAModelProxy(t *testing.T) {
	proxy, err := webproxy.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	// The http proxy takes credentials, which must show nowhere.
	authURL := strings.Replace(proxy.URL, "http://", "http://squiduser:s3cret-pw@", 1)
	m, cs := uaModel(t, []string{"token-one"}, nil,
		"JUJU_CHARM_HTTP_PROXY="+authURL, "JUJU_CHARM_HTTPS_PROXY="+proxy.URL, "JUJU_CHARM_NO_PROXY=")
	setConfig(t, m, map[string]string{"token": "token-one"})
	if st := uaStatus(t, m); st.Current != "active" {
		t.Fatalf("status %+v", st)
	}
	reqs := proxy.Requests()
	for _, want := range []string{"HEAD http://api.snapcraft.io/", "CONNECT api.snapcraft.io:443", "POST " + cs.URL + "/v1/context/machines/token"} {
		if !slices.Contains(reqs, want) {
			t.Errorf("proxy requests %q: no %q", reqs, want)
		}
	}
	res, err := m.Exec(t.Context(), "cli/0", "pro", "config", "show", "https_proxy")
	if err != nil {
		t.Fatal(err)
	}
	if want := "https_proxy " + proxy.URL + "\n"; res.Stdout != want {
		t.Errorf("pro config show https_proxy = %q, want %q", res.Stdout, want)
	}
	for _, e := range m.Logs() {
		if strings.Contains(e.Message, "s3cret-pw") {
			t.Errorf("proxy password in the log: %s", e)
		}
	}
	if !slices.ContainsFunc(m.Logs(), func(e jujusim.LogEntry) bool {
		return strings.Contains(e.Message, "http_proxy \"http://squiduser:xxxxx@")
	}) {
		t.Error("no log of the Pro client's proxies with the password masked")
	}
}

// TestUAPreattached: a machine attached before the charm arrives (a Pro cloud image) is
// detached and attached with the charm's token, as the reference charm does.
func TestUAPreattached(t *testing.T) {
	m, cs := uaModel(t, []string{"token-one"}, func(root string) {
		if err := pro.Preattach(root, "Cloud account"); err != nil {
			t.Fatal(err)
		}
	})
	if st := uaStatus(t, m); st.Current != "blocked" || st.Message != ubuntuadvantage.MessageNoToken {
		t.Errorf("without a token: %+v", st)
	}
	res, err := m.Exec(t.Context(), "cli/0", "pro", "status", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Stdout, `"attached":false`) {
		t.Errorf("the cloud image's attachment was kept without a token: %s", res.Stdout)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := m.SetConfig("ubuntu-advantage", map[string]string{"token": "token-one"}); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if st := uaStatus(t, m); st.Current != "active" || cs.MachineCount() != 1 {
		t.Errorf("with a token: %+v, %d machine tokens", st, cs.MachineCount())
	}
}
