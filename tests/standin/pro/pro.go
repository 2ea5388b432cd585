// Package pro is a stand-in for the `pro` (ubuntu-advantage) CLI: attach, detach, status and
// config show/set/unset, against the contract_url of <root>/etc/ubuntu-advantage/uaclient.conf,
// keeping the machine token in <root>/var/lib/ubuntu-advantage/private/machine-token.json and
// the `pro config` settings in <root>/var/lib/ubuntu-advantage/private/user-config.json (with
// a copy whose proxy credentials are redacted in user-config.json), where <root> is
// JUJU_SIM_ROOT (or /). A machine that has a machine token before anything ran is attached,
// as a Pro cloud image is (Preattach).
//
// It checks what the real client (canonical/ubuntu-pro-client) checks: the keys `pro config`
// accepts, `key=value` with exactly one "=", proxy URLs (http or https, a valid port) and that
// a proxy works before setting it, which the real client tests by reaching api.snapcraft.io
// (archive.ubuntu.com and esm.ubuntu.com for the apt proxies) through it: the stand-in sends
// the same request to the proxy and, for https, stops once the proxy opened the tunnel (there
// is no network to finish the TLS handshake with). Its requests use the configured proxies,
// else the environment's http_proxy/https_proxy, and honour no_proxy the way Python's urllib
// does (names and their subdomains, no CIDR), with the client's own metadata addresses added.
// Unlike the real client it does not insist on running as root.
package pro

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Version is the reported client version.
const Version = "31.2.3"

func root() string {
	if r := os.Getenv("JUJU_SIM_ROOT"); r != "" {
		return r
	}
	return "/"
}

// Paths under a machine root.
const (
	machineTokenFile = "var/lib/ubuntu-advantage/private/machine-token.json"
	enabledFile      = "var/lib/ubuntu-advantage/private/jujusim-services.json"
)

func confPath() string    { return filepath.Join(root(), "etc/ubuntu-advantage/uaclient.conf") }
func tokenPath() string   { return filepath.Join(root(), machineTokenFile) }
func enabledPath() string { return filepath.Join(root(), enabledFile) }

// Preattach attaches the machine under root before anything runs, as a Pro cloud image is
// (it attaches itself at first boot): a machine token of the given account, not known to any
// contracts stand-in, with esm-apps and esm-infra enabled.
func Preattach(root, account string) error {
	var ents []any
	for _, name := range []string{"esm-apps", "esm-infra"} {
		ents = append(ents, map[string]any{"type": name, "entitled": true, "obligations": map[string]any{"enableByDefault": true}})
	}
	mt := MachineToken{
		MachineToken: "cloud-image-machine-token",
		MachineTokenInfo: map[string]any{
			"machineId":   "cloud-image",
			"accountInfo": map[string]any{"id": "aCloud", "name": account, "createdAt": "2024-01-01T00:00:00Z"},
			"contractInfo": map[string]any{
				"id": "cCloud", "name": "Ubuntu Pro (cloud)", "createdAt": "2024-01-01T00:00:00Z",
				"effectiveFrom": "2024-01-01T00:00:00Z", "effectiveTo": "2099-01-01T00:00:00Z",
				"products": []string{"uaia-essential"}, "resourceEntitlements": ents,
			},
		},
	}
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(machineTokenFile)), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(mt)
	if err := os.WriteFile(filepath.Join(root, machineTokenFile), b, 0o600); err != nil {
		return err
	}
	b, _ = json.Marshal([]string{"esm-apps", "esm-infra"})
	return os.WriteFile(filepath.Join(root, enabledFile), b, 0o600)
}
func machineIDPath() string { return filepath.Join(root(), "etc/machine-id") }

// MachineToken is the machine-token.json document (the contracts server's response).
type MachineToken struct {
	MachineToken     string         `json:"machineToken"`
	MachineTokenInfo map[string]any `json:"machineTokenInfo"`
	ResourceTokens   []any          `json:"resourceTokens,omitempty"`
}

// Main runs the CLI and returns its exit code.
func Main(args []string) int { return RunWithInput(args, os.Stdin, os.Stdout, os.Stderr) }

// Run runs the CLI with the given output streams and no input, and returns its exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	return RunWithInput(args, strings.NewReader(""), stdout, stderr)
}

// RunWithInput runs the CLI with the given input and output streams and returns its exit
// code.
func RunWithInput(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: pro <command> [options]")
		return 2
	}
	c := &cli{in: stdin, out: stdout}
	var err error
	code := 1
	switch args[0] {
	case "attach":
		code, err = c.attach(args[1:])
	case "detach":
		code, err = c.detach(args[1:])
	case "status":
		code, err = c.status(args[1:])
	case "config":
		code, err = c.config(args[1:])
	case "version", "--version":
		fmt.Fprintln(stdout, Version)
		return 0
	case "refresh", "enable", "disable":
		return 0
	default:
		fmt.Fprintf(stderr, "pro: invalid choice: %q\n", args[0])
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	return code
}

// cli is one run of the CLI.
type cli struct {
	in  io.Reader
	out io.Writer
}

func contractURL() string {
	conf := map[string]any{}
	if b, err := os.ReadFile(confPath()); err == nil {
		yaml.Unmarshal(b, &conf)
	}
	if u, ok := conf["contract_url"].(string); ok && u != "" {
		return strings.TrimRight(u, "/")
	}
	return "https://contracts.canonical.com"
}

func machineID() string {
	b, err := os.ReadFile(machineIDPath())
	if err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b))
	}
	id := fmt.Sprintf("%x", time.Now().UnixNano())
	os.MkdirAll(filepath.Dir(machineIDPath()), 0o755)
	os.WriteFile(machineIDPath(), []byte(id+"\n"), 0o444)
	return id
}

func readToken() (*MachineToken, error) {
	b, err := os.ReadFile(tokenPath())
	if err != nil {
		return nil, err
	}
	var mt MachineToken
	return &mt, json.Unmarshal(b, &mt)
}

func accountName(mt *MachineToken) string {
	ai, _ := mt.MachineTokenInfo["accountInfo"].(map[string]any)
	name, _ := ai["name"].(string)
	return name
}

func contractName(mt *MachineToken) string {
	ci, _ := mt.MachineTokenInfo["contractInfo"].(map[string]any)
	name, _ := ci["name"].(string)
	return name
}

func (c *cli) attach(args []string) (int, error) {
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	config := fs.String("attach-config", "", "YAML file with token and enable_services")
	noAuto := fs.Bool("no-auto-enable", false, "do not enable default services")
	format := fs.String("format", "cli", "cli or json")
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	_ = format
	if mt, err := readToken(); err == nil {
		return 2, fmt.Errorf("This machine is already attached to '%s'\nTo use a different subscription first run: sudo pro detach.", accountName(mt))
	}
	token := fs.Arg(0)
	if token != "" && *config != "" {
		return 1, errors.New("Do not pass the TOKEN arg if you are using --attach-config.\nInclude the token in the attach-config file instead.")
	}
	var enable []string
	explicit := false
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			// argparse opens the file (FileType) and fails as a usage error.
			return 2, fmt.Errorf("usage: pro attach <token> [flags]\npro attach: error: argument --attach-config: can't open '%s': %v", *config, err)
		}
		var ac struct {
			Token          string   `yaml:"token"`
			EnableServices []string `yaml:"enable_services"`
		}
		if err := yaml.Unmarshal(b, &ac); err != nil {
			return 1, fmt.Errorf("Error while reading %s: %v", *config, err)
		}
		token, enable, explicit = ac.Token, ac.EnableServices, ac.EnableServices != nil
	}
	if token == "" {
		return 2, errors.New("Attach requires a token: sudo pro attach <TOKEN>")
	}
	body, _ := json.Marshal(map[string]any{
		"machineId": machineID(), "architecture": "amd64", "hostType": "container",
		"os": map[string]any{"distribution": "Ubuntu", "kernel": "6.8.0-generic", "release": "22.04", "series": "jammy", "type": "Linux"},
	})
	req, _ := http.NewRequest("POST", contractURL()+"/v1/context/machines/token", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient().Do(req)
	if err != nil {
		return 1, fmt.Errorf("Failed to connect to %s\n%v", contractURL(), err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return 1, errors.New("Invalid token. See https://ubuntu.com/pro/dashboard")
	}
	if resp.StatusCode != http.StatusOK {
		return 1, fmt.Errorf("Failed to attach machine. See https://ubuntu.com/pro/dashboard (%s)", resp.Status)
	}
	var mt MachineToken
	if err := json.Unmarshal(data, &mt); err != nil {
		return 1, fmt.Errorf("invalid contracts response: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(tokenPath()), 0o700); err != nil {
		return 1, err
	}
	if err := os.WriteFile(tokenPath(), data, 0o600); err != nil {
		return 1, err
	}
	var enabled []string
	for _, e := range entitlements(&mt) {
		byDefault, _ := e["obligations"].(map[string]any)["enableByDefault"].(bool)
		name, _ := e["type"].(string)
		if explicit && slices.Contains(enable, name) || !explicit && !*noAuto && byDefault {
			enabled = append(enabled, name)
			fmt.Fprintf(c.out, "Enabling %s\n%s enabled\n", name, name)
		}
	}
	b, _ := json.Marshal(enabled)
	os.WriteFile(enabledPath(), b, 0o600)
	fmt.Fprintf(c.out, "This machine is now attached to '%s'\n", contractName(&mt))
	return 0, nil
}

func entitlements(mt *MachineToken) []map[string]any {
	ci, _ := mt.MachineTokenInfo["contractInfo"].(map[string]any)
	list, _ := ci["resourceEntitlements"].([]any)
	var out []map[string]any
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// detach removes the attachment as the real client does: an unattached machine is an error
// (exit 1) before anything else; the services to disable are listed; without --assume-yes
// it asks on stdin, where an end of input (no terminal) is an unexpected error (exit 1)
// and any answer but y/yes declines (exit 1).
func (c *cli) detach(args []string) (int, error) {
	if _, err := readToken(); err != nil {
		return 1, errors.New("This machine is not attached to an Ubuntu Pro subscription.\nSee https://ubuntu.com/pro")
	}
	var enabled []string
	if b, err := os.ReadFile(enabledPath()); err == nil {
		json.Unmarshal(b, &enabled)
	}
	slices.Sort(enabled)
	if len(enabled) > 0 {
		if len(enabled) == 1 {
			fmt.Fprintln(c.out, "Detach will disable the following service:")
		} else {
			fmt.Fprintln(c.out, "Detach will disable the following services:")
		}
		for _, name := range enabled {
			fmt.Fprintf(c.out, "    %s\n", name)
		}
	}
	if !slices.Contains(args, "--assume-yes") {
		fmt.Fprint(c.out, "Are you sure? (y/N) ")
		answer, err := bufio.NewReader(c.in).ReadString('\n')
		if err != nil && answer == "" {
			return 1, errors.New("An unexpected error occurred: EOF when reading a line\nFor more details, see the log: /var/log/ubuntu-advantage.log\nIf you think this is a bug, please run: ubuntu-bug ubuntu-advantage-tools")
		}
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return 1, nil
		}
	}
	os.Remove(tokenPath())
	os.Remove(enabledPath())
	fmt.Fprintln(c.out, "This machine is now detached.")
	return 0, nil
}

// Service is one entry of `pro status --format json` services.
type Service struct {
	Name                string  `json:"name" yaml:"name"`
	Description         string  `json:"description" yaml:"description"`
	Available           string  `json:"available" yaml:"available"`
	Entitled            string  `json:"entitled" yaml:"entitled"`
	Status              string  `json:"status" yaml:"status"`
	StatusDetails       string  `json:"status_details" yaml:"status_details"`
	DescriptionOverride *string `json:"description_override" yaml:"description_override"`
	BlockedBy           []any   `json:"blocked_by" yaml:"blocked_by"`
}

var descriptions = map[string]string{
	"esm-apps":         "Expanded Security Maintenance for Applications",
	"esm-infra":        "Expanded Security Maintenance for Infrastructure",
	"livepatch":        "Canonical Livepatch service",
	"livepatch-onprem": "Canonical Livepatch on-premises",
}

// Status builds the `pro status --format json` document.
func Status() map[string]any {
	out := map[string]any{
		"_doc":              "Content provided in json response is currently considered as Experimental and may change",
		"_schema_version":   "0.1",
		"version":           Version,
		"result":            "success",
		"errors":            []any{},
		"warnings":          []any{},
		"attached":          false,
		"machine_id":        nil,
		"effective":         nil,
		"expires":           nil,
		"execution_status":  "inactive",
		"execution_details": "No Ubuntu Pro operations are running",
		"simulated":         false,
		"notices":           []any{},
		"config_path":       confPath(),
		"environment_vars":  []any{},
		"contract":          map[string]any{"id": "", "name": "", "created_at": "", "products": []string{"free"}, "tech_support_level": "n/a"},
		"account":           map[string]any{"id": "", "name": "", "created_at": "", "external_account_ids": []any{}},
		"config": map[string]any{
			"contract_url": contractURL(),
			"security_url": "https://ubuntu.com/security",
			"data_dir":     filepath.Join(root(), "var/lib/ubuntu-advantage"),
			"log_level":    "debug",
			"log_file":     filepath.Join(root(), "var/log/ubuntu-advantage.log"),
			"ua_config":    publicUserConfig(),
		},
	}
	services := []Service{}
	mt, err := readToken()
	if err != nil {
		for _, name := range []string{"esm-apps", "esm-infra", "livepatch"} {
			services = append(services, Service{Name: name, Description: descriptions[name], Available: "yes", Entitled: "no", Status: "n/a", BlockedBy: []any{}})
		}
		out["services"] = services
		return out
	}
	var enabled []string
	if b, err := os.ReadFile(enabledPath()); err == nil {
		json.Unmarshal(b, &enabled)
	}
	for _, e := range entitlements(mt) {
		name, _ := e["type"].(string)
		st := "disabled"
		if slices.Contains(enabled, name) {
			st = "enabled"
		}
		services = append(services, Service{Name: name, Description: descriptions[name], Available: "yes", Entitled: "yes", Status: st, BlockedBy: []any{}})
	}
	ci, _ := mt.MachineTokenInfo["contractInfo"].(map[string]any)
	ai, _ := mt.MachineTokenInfo["accountInfo"].(map[string]any)
	out["attached"] = true
	out["machine_id"] = mt.MachineTokenInfo["machineId"]
	out["effective"] = ci["effectiveFrom"]
	out["expires"] = ci["effectiveTo"]
	out["services"] = services
	out["contract"] = map[string]any{"id": ci["id"], "name": ci["name"], "created_at": ci["createdAt"], "products": ci["products"], "tech_support_level": "essential"}
	out["account"] = map[string]any{"id": ai["id"], "name": ai["name"], "created_at": ai["createdAt"], "external_account_ids": []any{}}
	return out
}

func (c *cli) status(args []string) (int, error) {
	format := "tabular"
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--format="); ok {
			format = v
		} else if a == "--format" && i+1 < len(args) {
			format = args[i+1]
		}
	}
	st := Status()
	switch format {
	case "json":
		b, _ := json.Marshal(st)
		fmt.Fprintln(c.out, string(b))
	case "yaml":
		b, _ := yaml.Marshal(st)
		fmt.Fprint(c.out, string(b))
	default:
		fmt.Fprintln(c.out, "SERVICE          ENTITLED  STATUS    DESCRIPTION")
		for _, s := range st["services"].([]Service) {
			fmt.Fprintf(c.out, "%-16s %-9s %-9s %s\n", s.Name, s.Entitled, s.Status, s.Description)
		}
		if st["attached"] == false {
			fmt.Fprintln(c.out, "\nThis machine is not attached to an Ubuntu Pro subscription.")
		}
	}
	return 0, nil
}
