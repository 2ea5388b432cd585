// Package ubuntuadvantage holds the hooks of the ubuntu-advantage subordinate charm. Every
// hook runs Reconcile: install the Pro client if it is missing (from ppa when set), write
// contract_url to uaclient.conf, detach when the token was removed or changed, attach with
// the token (passed in a root-only attach-config file, never on a command line) and report
// the enabled services.
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
	Token       string `json:"token"`
	ContractURL string `json:"contract_url"`
	PPA         string `json:"ppa"`
	TokenSecret string `json:"token_secret"`
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
	// FailedTokenSHA256 and FailReason record the last failed attach, which update-status
	// does not retry.
	FailedTokenSHA256 string `json:"failed-token-sha256,omitempty"`
	FailReason        string `json:"fail-reason,omitempty"`
}

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
	if err := ensurePro(ctx, c, cfg, &st); err != nil {
		return hooks.Status{}, err
	}
	if err := writeContractURL(c, cfg.ContractURL); err != nil {
		return hooks.Status{}, err
	}
	tokenSum := ""
	if cfg.Token != "" {
		tokenSum = sha256Hex(cfg.Token)
	}
	if st.Attached && (st.TokenSHA256 != tokenSum || st.ContractURL != cfg.ContractURL) {
		if _, err := pro(ctx, c, "detach", "--assume-yes"); err != nil {
			return hooks.Status{}, fmt.Errorf("cannot detach from Ubuntu Pro: %w", err)
		}
		c.Logf(ctx, "Detached from Ubuntu Pro (token or contract_url changed)")
		st.Attached, st.TokenSHA256, st.ContractURL = false, "", ""
		if err := writeState(c, st); err != nil {
			return hooks.Status{}, err
		}
	}
	if cfg.Token == "" {
		return hooks.Blocked(MessageNoToken), nil
	}
	if !st.Attached {
		if st.FailedTokenSHA256 == tokenSum && c.HookName() == "update-status" {
			return attachError(st.FailReason), nil
		}
		reason, err := attach(ctx, c, cfg.Token)
		if err != nil {
			return hooks.Status{}, err
		}
		if reason != "" {
			st.FailedTokenSHA256, st.FailReason = tokenSum, reason
			return attachError(reason), writeState(c, st)
		}
		st = state{Attached: true, TokenSHA256: tokenSum, ContractURL: cfg.ContractURL, PPA: st.PPA}
		if err := writeState(c, st); err != nil {
			return hooks.Status{}, err
		}
		c.Logf(ctx, "Attached to Ubuntu Pro")
	}
	services, attached, err := enabledServices(ctx, c)
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
	st, err := readState(c)
	if err != nil {
		return hooks.Status{}, err
	}
	if st.Attached {
		if _, err := pro(ctx, c, "detach", "--assume-yes"); err != nil {
			_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Cannot detach from Ubuntu Pro: %v", err))
		}
	}
	return hooks.Status{}, c.RemoveFile(StateDir)
}

func pro(ctx context.Context, c *hooks.Context, args ...string) ([]byte, error) {
	return c.System.Run(ctx, hooks.Command{Name: "pro", Args: args})
}

func run(ctx context.Context, c *hooks.Context, name string, args ...string) error {
	if _, err := c.System.Run(ctx, hooks.Command{Name: name, Args: args}); err != nil {
		return fmt.Errorf("cannot run %s: %w", strings.Join(append([]string{name}, args...), " "), err)
	}
	return nil
}

// ensurePro follows ppa and installs the Pro client when it is missing or ppa changed.
func ensurePro(ctx context.Context, c *hooks.Context, cfg Config, st *state) error {
	install := false
	if cfg.PPA != st.PPA {
		_ = c.StatusSet(ctx, hooks.Maintenance("Configuring the Ubuntu Pro client PPA"))
		if st.PPA != "" {
			if err := run(ctx, c, "add-apt-repository", "--remove", "--yes", st.PPA); err != nil {
				_ = c.JujuLog(ctx, hooks.LevelWarning, err.Error())
			}
		}
		if cfg.PPA != "" {
			if err := run(ctx, c, "add-apt-repository", "--yes", cfg.PPA); err != nil {
				return err
			}
			install = true
		}
		st.PPA = cfg.PPA
		if err := writeState(c, *st); err != nil {
			return err
		}
	}
	if _, err := pro(ctx, c, "--version"); errors.Is(err, exec.ErrNotFound) {
		install = true
	}
	if !install {
		return nil
	}
	_ = c.StatusSet(ctx, hooks.Maintenance("Installing the Ubuntu Pro client"))
	if err := run(ctx, c, "apt-get", "update"); err != nil {
		return err
	}
	return run(ctx, c, "apt-get", "install", "--yes", proPackage)
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
func attach(ctx context.Context, c *hooks.Context, token string) (reason string, err error) {
	data, err := yaml.Marshal(map[string]string{"token": token})
	if err != nil {
		return "", fmt.Errorf("cannot render the attach config: %w", err)
	}
	if _, err := c.WriteFile(AttachConfigPath, data, 0o600); err != nil {
		return "", err
	}
	defer c.RemoveFile(AttachConfigPath)
	_ = c.StatusSet(ctx, hooks.Maintenance("Attaching to Ubuntu Pro"))
	_, err = pro(ctx, c, "attach", "--attach-config", c.Path(AttachConfigPath))
	if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
		reason := ee.Reason()
		if reason == "" {
			reason = fmt.Sprintf("pro attach exited with status %d", ee.Code)
		}
		return strings.ReplaceAll(reason, token, "<token>"), nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot run pro attach: %w", err)
	}
	return "", nil
}

// enabledServices returns the enabled services of the attachment (pro status --format json).
func enabledServices(ctx context.Context, c *hooks.Context) (services []string, attached bool, err error) {
	out, err := pro(ctx, c, "status", "--format", "json")
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
