// Package ubuntuadvantage holds the hooks of the ubuntu-advantage subordinate charm. Every
// hook runs Reconcile, which does what canonical/ubuntu-pro-operator (the charm published
// as ubuntu-advantage) does: install the Pro client if it is missing (from ppa when set),
// write contract_url to uaclient.conf, give the Pro client the proxies (the model's, or the
// override-* options) with pro config set/unset, detach when the token was removed or
// changed, replace an attachment the charm did not make (a Pro cloud image's) with its own,
// attach with the token (passed in a root-only attach-config file, never on a command line)
// and report the enabled services. Every program it runs that may reach the network
// (add-apt-repository, apt-get, pro) gets the proxies as http_proxy, https_proxy and
// no_proxy.
package ubuntuadvantage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Machine paths the charm uses.
const (
	// ConfPath is the Pro client's configuration.
	ConfPath = "/etc/ubuntu-advantage/uaclient.conf"
	// StateDir holds the charm's records on the unit.
	StateDir = "/var/lib/ubuntu-advantage-charm"
	// AttachConfigPath is the attach-config file, present only while pro attach runs.
	AttachConfigPath = StateDir + "/attach-config.yaml"
	statePath        = StateDir + "/state.json"
)

// Status messages.
const (
	MessageNoToken     = "No token configured"
	MessageAttachError = "Error attaching, possibly an invalid token or contract_url?"
)

// proPackage provides the pro command on every supported Ubuntu release.
const proPackage = "ubuntu-advantage-tools"

// Config is the charm configuration (config.yaml).
type Config struct {
	Token              string `json:"token"`
	ContractURL        string `json:"contract_url"`
	PPA                string `json:"ppa"`
	TokenSecret        string `json:"token_secret"`
	OverrideHTTPProxy  string `json:"override-http-proxy"`
	OverrideHTTPSProxy string `json:"override-https-proxy"`
}

// proxy returns the proxies of the programs the charm runs: the model's (juju-http-proxy,
// juju-https-proxy, juju-no-proxy), each of http and https replaced by its override-*
// option when that is set.
func (cfg Config) proxy(c *hooks.Context) hooks.Proxy {
	p := c.ModelProxy()
	if cfg.OverrideHTTPProxy != "" {
		p.HTTP = cfg.OverrideHTTPProxy
	}
	if cfg.OverrideHTTPSProxy != "" {
		p.HTTPS = cfg.OverrideHTTPSProxy
	}
	return p
}

// state is what the charm did on the unit.
type state struct {
	// Attached reports whether the charm attached the machine, with the token of TokenSHA256
	// to ContractURL.
	Attached    bool   `json:"attached"`
	TokenSHA256 string `json:"token-sha256,omitempty"`
	ContractURL string `json:"contract-url,omitempty"`
	// PPA is the PPA added to the machine's sources.
	PPA string `json:"ppa,omitempty"`
	// ProxySHA256 is the SHA-256 of the http_proxy and https_proxy last given to the Pro
	// client (they may hold credentials); empty before the charm gave any.
	ProxySHA256 string `json:"proxy-sha256,omitempty"`
	// FailedTokenSHA256 and FailReason record the last failed attach, which update-status
	// does not retry.
	FailedTokenSHA256 string `json:"failed-token-sha256,omitempty"`
	FailReason        string `json:"fail-reason,omitempty"`
}

// Charm is the ubuntu-advantage charm, wired once, as its dispatch binary
// (cmd/ubuntu-advantage-charm) runs it and the tests drive it. It has no actions.
func Charm() hooks.Charm { return hooks.Charm{Reconcile: Reconcile, Hooks: Hooks()} }

// Hooks returns the hooks that do something other than Reconcile.
func Hooks() map[string]hooks.Handler {
	return map[string]hooks.Handler{
		"stop":   func(context.Context, *hooks.Context) (hooks.Status, error) { return hooks.Status{}, nil },
		"remove": Remove,
	}
}

// Reconcile attaches the machine as configured and returns the unit status.
func Reconcile(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	var cfg Config
	if err := c.ConfigGet(ctx, &cfg); err != nil {
		return hooks.Status{}, err
	}
	if cfg.TokenSecret != "" {
		token, st, err := c.SecretOption(ctx, "token_secret", cfg.TokenSecret, "token")
		if err != nil || !st.IsZero() {
			return st, err
		}
		cfg.Token = token
	}
	st, err := readState(c)
	if err != nil {
		return hooks.Status{}, err
	}
	m := machine{c: c, proxy: cfg.proxy(c)}
	if err := m.ensurePro(ctx, cfg, &st); err != nil {
		return hooks.Status{}, err
	}
	if err := writeContractURL(c, cfg.ContractURL); err != nil {
		return hooks.Status{}, err
	}
	if blocked, err := m.configureProxy(ctx, &st); err != nil || !blocked.IsZero() {
		return blocked, err
	}
	tokenSum := ""
	if cfg.Token != "" {
		tokenSum = sha256Hex(cfg.Token)
	}
	if st.Attached && (st.TokenSHA256 != tokenSum || st.ContractURL != cfg.ContractURL) {
		if _, err := m.pro(ctx, "detach", "--assume-yes"); err != nil {
			return hooks.Status{}, fmt.Errorf("cannot detach from Ubuntu Pro: %w", err)
		}
		c.Logf(ctx, "Detached from Ubuntu Pro (token or contract_url changed)")
		st.Attached, st.TokenSHA256, st.ContractURL = false, "", ""
		if err := writeState(c, st); err != nil {
			return hooks.Status{}, err
		}
	}
	if cfg.Token == "" {
		// Without a token the machine stays detached, whoever attached it (a Pro cloud
		// image, or someone by hand), as the reference charm keeps it.
		_, attached, err := m.status(ctx)
		if err != nil {
			return hooks.Status{}, err
		}
		if attached {
			if _, err := m.pro(ctx, "detach", "--assume-yes"); err != nil {
				return hooks.Status{}, fmt.Errorf("cannot detach from Ubuntu Pro: %w", err)
			}
			c.Logf(ctx, "Detached from the Ubuntu Pro subscription the charm did not attach (no token configured)")
		}
		return hooks.Blocked(MessageNoToken), nil
	}
	if !st.Attached {
		if st.FailedTokenSHA256 == tokenSum && c.HookName() == "update-status" {
			return attachError(st.FailReason), nil
		}
		m.detachForeign(ctx)
		reason, err := m.attach(ctx, cfg.Token)
		if err != nil {
			return hooks.Status{}, err
		}
		if reason != "" {
			st.FailedTokenSHA256, st.FailReason = tokenSum, reason
			return attachError(reason), writeState(c, st)
		}
		st.Attached, st.TokenSHA256, st.ContractURL = true, tokenSum, cfg.ContractURL
		st.FailedTokenSHA256, st.FailReason = "", ""
		if err := writeState(c, st); err != nil {
			return hooks.Status{}, err
		}
		c.Logf(ctx, "Attached to Ubuntu Pro")
	}
	services, attached, err := m.status(ctx)
	if err != nil {
		return hooks.Status{}, err
	}
	if !attached {
		// Someone detached the machine by hand: attach again on the next hook.
		st.Attached = false
		return attachError("pro status reports the machine is not attached"), writeState(c, st)
	}
	return hooks.Active("Attached (" + strings.Join(services, ",") + ")"), nil
}

func attachError(reason string) hooks.Status {
	if reason == "" {
		return hooks.Blocked(MessageAttachError)
	}
	return hooks.Blocked(MessageAttachError + " (" + reason + ")")
}

// Remove detaches the machine when the charm attached it.
func Remove(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	var cfg Config
	if err := c.ConfigGet(ctx, &cfg); err != nil {
		return hooks.Status{}, err
	}
	st, err := readState(c)
	if err != nil {
		return hooks.Status{}, err
	}
	if st.Attached {
		m := machine{c: c, proxy: cfg.proxy(c)}
		if _, err := m.pro(ctx, "detach", "--assume-yes"); err != nil {
			_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Cannot detach from Ubuntu Pro: %v", err))
		}
	}
	return hooks.Status{}, c.RemoveFile(StateDir)
}

// machine runs the programs of the charm with the proxies.
type machine struct {
	c     *hooks.Context
	proxy hooks.Proxy
}

func (m machine) pro(ctx context.Context, args ...string) ([]byte, error) {
	return m.c.System.Run(ctx, hooks.Command{Name: "pro", Args: args, Env: m.proxy.Env()})
}

func (m machine) run(ctx context.Context, name string, args ...string) error {
	if _, err := m.c.System.Run(ctx, hooks.Command{Name: name, Args: args, Env: m.proxy.Env()}); err != nil {
		return fmt.Errorf("cannot run %s: %w", strings.Join(append([]string{name}, args...), " "), err)
	}
	return nil
}

// ensurePro follows ppa and installs the Pro client when it is missing or ppa changed.
func (m machine) ensurePro(ctx context.Context, cfg Config, st *state) error {
	c := m.c
	install := false
	if cfg.PPA != st.PPA {
		_ = c.StatusSet(ctx, hooks.Maintenance("Configuring the Ubuntu Pro client PPA"))
		if st.PPA != "" {
			if err := m.run(ctx, "add-apt-repository", "--remove", "--yes", st.PPA); err != nil {
				_ = c.JujuLog(ctx, hooks.LevelWarning, err.Error())
			}
		}
		if cfg.PPA != "" {
			if err := m.run(ctx, "add-apt-repository", "--yes", cfg.PPA); err != nil {
				return err
			}
			install = true
		}
		st.PPA = cfg.PPA
		if err := writeState(c, *st); err != nil {
			return err
		}
	}
	if _, err := m.pro(ctx, "--version"); errors.Is(err, exec.ErrNotFound) {
		install = true
	}
	if !install {
		return nil
	}
	_ = c.StatusSet(ctx, hooks.Maintenance("Installing the Ubuntu Pro client"))
	if err := m.run(ctx, "apt-get", "update"); err != nil {
		return err
	}
	return m.run(ctx, "apt-get", "install", "--yes", proPackage)
}

// configureProxy gives the Pro client the charm's http and https proxies (pro config set
// http_proxy=... https_proxy=...), or unsets each that is empty, as the reference charm does:
// the Pro client uses them for its own requests, its timers and snap. The Pro client checks a
// proxy works before it takes it; a refusal is a Blocked status, retried on every hook. A
// proxy's credentials are on pro's command line, the Pro client's only input for them; they
// never reach a status or the log.
func (m machine) configureProxy(ctx context.Context, st *state) (hooks.Status, error) {
	sum := sha256Hex("http_proxy=" + m.proxy.HTTP + "\nhttps_proxy=" + m.proxy.HTTPS)
	if st.ProxySHA256 == sum {
		return hooks.Status{}, nil
	}
	for _, p := range []struct{ key, value string }{{"http_proxy", m.proxy.HTTP}, {"https_proxy", m.proxy.HTTPS}} {
		args := []string{"config", "unset", p.key}
		if p.value != "" {
			args = []string{"config", "set", p.key + "=" + p.value}
		}
		_, err := m.pro(ctx, args...)
		if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
			reason := ee.Reason()
			if reason == "" {
				reason = fmt.Sprintf("exit status %d", ee.Code)
			}
			return hooks.Blocked(config.Redact(fmt.Sprintf("cannot %s the Pro client's %s: %s", args[1], p.key, reason))), nil
		}
		if err != nil {
			return hooks.Status{}, fmt.Errorf("cannot run pro config for %s: %s", p.key, config.Redact(err.Error()))
		}
	}
	m.c.Logf(ctx, "Pro client proxies: http_proxy %q, https_proxy %q", config.Redact(m.proxy.HTTP), config.Redact(m.proxy.HTTPS))
	st.ProxySHA256 = sum
	return hooks.Status{}, writeState(m.c, *st)
}

// detachForeign detaches the machine before the charm attaches it when it is attached
// already (a Pro cloud image attaches itself at first boot) or pro status cannot tell, as
// the reference charm does: the charm attaches with its own token, and pro attach refuses an
// attached machine. A failed detach is logged and left to pro attach to report.
func (m machine) detachForeign(ctx context.Context) {
	_, attached, err := m.status(ctx)
	if err == nil && !attached {
		return
	}
	if err != nil {
		_ = m.c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Cannot tell whether the machine is attached, detaching to be sure: %v", err))
	} else {
		m.c.Logf(ctx, "Detaching from the Ubuntu Pro subscription the machine is attached to, to attach with the configured token")
	}
	if _, err := m.pro(ctx, "detach", "--assume-yes"); err != nil {
		_ = m.c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Cannot detach before attaching: %v", err))
	}
}

// writeContractURL sets contract_url in uaclient.conf, keeping the file's other settings.
func writeContractURL(c *hooks.Context, contractURL string) error {
	var doc yaml.Node
	data, err := c.ReadFile(ConfPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot read %s: %w", ConfPath, err)
	}
	if len(data) > 0 {
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("cannot parse %s: %w", ConfPath, err)
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("cannot update %s: not a YAML mapping", ConfPath)
	}
	value := &yaml.Node{Kind: yaml.ScalarNode, Value: contractURL}
	found := false
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "contract_url" {
			m.Content[i+1] = value
			found = true
		}
	}
	if !found {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "contract_url"}, value)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("cannot render %s: %w", ConfPath, err)
	}
	_, err = c.WriteFile(ConfPath, out, 0o644)
	return err
}

// attach runs pro attach with the token in an attach-config file. It returns the reason of a
// failed attach ("" on success); the error is for what the charm itself could not do.
func (m machine) attach(ctx context.Context, token string) (reason string, err error) {
	c := m.c
	data, err := yaml.Marshal(map[string]string{"token": token})
	if err != nil {
		return "", fmt.Errorf("cannot render the attach config: %w", err)
	}
	if _, err := c.WriteFile(AttachConfigPath, data, 0o600); err != nil {
		return "", err
	}
	defer c.RemoveFile(AttachConfigPath)
	_ = c.StatusSet(ctx, hooks.Maintenance("Attaching to Ubuntu Pro"))
	_, err = m.pro(ctx, "attach", "--attach-config", c.Path(AttachConfigPath))
	if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
		reason := ee.Reason()
		if reason == "" {
			reason = fmt.Sprintf("pro attach exited with status %d", ee.Code)
		}
		// What pro says may quote a proxy URL: its credentials are masked.
		return config.Redact(strings.ReplaceAll(reason, token, "<token>")), nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot run pro attach: %w", err)
	}
	return "", nil
}

// status reads pro status --format json: whether the machine is attached, and the services
// enabled (or in warning) in its attachment.
func (m machine) status(ctx context.Context) (services []string, attached bool, err error) {
	out, err := m.pro(ctx, "status", "--format", "json")
	if err != nil {
		return nil, false, fmt.Errorf("cannot read pro status: %w", err)
	}
	var status struct {
		Attached bool `json:"attached"`
		Services []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &status); err != nil {
		return nil, false, fmt.Errorf("cannot decode pro status: %w", err)
	}
	for _, s := range status.Services {
		if s.Status == "enabled" || s.Status == "warning" {
			services = append(services, s.Name)
		}
	}
	slices.Sort(services)
	return services, status.Attached, nil
}

func readState(c *hooks.Context) (state, error) {
	var st state
	if _, err := c.ReadJSON(statePath, &st); err != nil {
		return state{}, fmt.Errorf("cannot read charm state: %w", err)
	}
	return st, nil
}

func writeState(c *hooks.Context, st state) error {
	return c.WriteJSON(statePath, st, 0o600)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
