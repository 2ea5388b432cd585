package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
	"github.com/livepatch-onprem/livepatch/internal/proxy"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Modes, as the real client has them.
const (
	// ModeNormal checks in, downloads, verifies and applies patches.
	ModeNormal = "normal"
	// ModeNoApply checks in, downloads and verifies patches but never loads them: the patch
	// state is then unapplied and status shows the verified version waiting.
	ModeNoApply = "no-apply"
	// ModeNoRefresh makes no check-ins; the daemon still applies a patch it verified before.
	ModeNoRefresh = "no-refresh"
	// ModeStop does nothing at all.
	ModeStop = "stop"
)

// Modes lists every valid mode.
var Modes = []string{ModeNormal, ModeNoApply, ModeNoRefresh, ModeStop}

// DefaultCheckInterval is the check interval in minutes when check-interval is not set.
const DefaultCheckInterval = 60

// Config is the client configuration file, config.yaml in the state directory. Empty
// fields take their defaults; Set and Load validate every value.
type Config struct {
	RemoteServer  string `yaml:"remote-server,omitempty"`
	CACerts       string `yaml:"ca-certs,omitempty"`
	CheckInterval *int   `yaml:"check-interval,omitempty"` // minutes; 0 disables periodic checks
	HTTPProxy     string `yaml:"http-proxy,omitempty"`
	HTTPSProxy    string `yaml:"https-proxy,omitempty"`
	NoProxy       string `yaml:"no-proxy,omitempty"`
	TrustedKey    string `yaml:"trusted-key,omitempty"` // base64 ed25519 public keys, comma-separated
	Mode          string `yaml:"mode,omitempty"`
	MachineID     string `yaml:"machine-id,omitempty"`
	Kernel        string `yaml:"kernel,omitempty"`
	// DialTimeout and RequestTimeout are durations ("12s"); empty: the defaults.
	DialTimeout    string `yaml:"dial-timeout,omitempty"`
	RequestTimeout string `yaml:"request-timeout,omitempty"`
	// ReportHostname is "false" to keep the hostname private; empty or "true" reports it.
	ReportHostname string `yaml:"report-hostname,omitempty"`
	// CutoffDate and PatchDelay hold patches back (delay.go).
	CutoffDate string `yaml:"cutoff-date,omitempty"`
	PatchDelay string `yaml:"patch-delay,omitempty"`
}

// Bounds of dial-timeout and request-timeout.
const (
	maxDialTimeout    = 10 * time.Minute
	maxRequestTimeout = 24 * time.Hour
)

// configKey describes one settable key.
type configKey struct {
	name string
	help string
	// set stores a non-empty value after validating it.
	set func(c *Config, value string) error
	// clear resets the key to its default.
	clear func(c *Config)
}

var configKeys = []configKey{{
	name: "remote-server",
	help: "URL of the livepatch server, e.g. http://livepatch.example.com",
	set: func(c *Config, v string) error {
		u, err := checkServerURL(v)
		c.RemoteServer = u
		return err
	},
	clear: func(c *Config) { c.RemoteServer = "" },
}, {
	name: "ca-certs",
	help: "PEM certificates of the server's certificate authority; @stdin reads them from standard input",
	set: func(c *Config, v string) error {
		if _, err := parseCerts(v); err != nil {
			return err
		}
		c.CACerts = strings.TrimSpace(v) + "\n"
		return nil
	},
	clear: func(c *Config) { c.CACerts = "" },
}, {
	name: "check-interval",
	help: "minutes between checks (default 60; 0 disables periodic checks)",
	set: func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSuffix(v, "m"))
		if err != nil || n < 0 || n > 7*24*60 {
			return fmt.Errorf("invalid check-interval %q: want a number of minutes from 0 to %d", v, 7*24*60)
		}
		c.CheckInterval = &n
		return nil
	},
	clear: func(c *Config) { c.CheckInterval = nil },
}, {
	name: "dial-timeout",
	help: "longest wait to connect to the server, and for the TLS handshake (default " + client.DefaultConnectTimeout.String() + ")",
	set: func(c *Config, v string) error {
		d, err := parseTimeout("dial-timeout", v, maxDialTimeout)
		c.DialTimeout = d
		return err
	},
	clear: func(c *Config) { c.DialTimeout = "" },
}, {
	name: "request-timeout",
	help: "longest wait for the server's answer; a download fails when no data moves for that long (default " + client.DefaultRequestTimeout.String() + ")",
	set: func(c *Config, v string) error {
		d, err := parseTimeout("request-timeout", v, maxRequestTimeout)
		c.RequestTimeout = d
		return err
	},
	clear: func(c *Config) { c.RequestTimeout = "" },
}, {
	name: "http-proxy",
	help: "proxy for http requests, e.g. http://squid.internal:3128",
	set: func(c *Config, v string) error {
		c.HTTPProxy = v
		return checkProxyURL("http-proxy", v)
	},
	clear: func(c *Config) { c.HTTPProxy = "" },
}, {
	name: "https-proxy",
	help: "proxy for https requests",
	set: func(c *Config, v string) error {
		c.HTTPSProxy = v
		return checkProxyURL("https-proxy", v)
	},
	clear: func(c *Config) { c.HTTPSProxy = "" },
}, {
	name: "no-proxy",
	help: "comma-separated hosts, domains and networks to reach without a proxy",
	set: func(c *Config, v string) error {
		if strings.ContainsAny(v, " \t\n") {
			return fmt.Errorf("invalid no-proxy %q: want a comma-separated list without spaces", v)
		}
		c.NoProxy = v
		return nil
	},
	clear: func(c *Config) { c.NoProxy = "" },
}, {
	name: "trusted-key",
	help: "the patch origin's ed25519 public key (base64, hex or PEM; several, comma-separated, while it rotates keys) for patch signature checks",
	set: func(c *Config, v string) error {
		keys, err := parseTrustedKeys(v)
		if err != nil {
			return err
		}
		encoded := make([]string, len(keys))
		for i, key := range keys {
			encoded[i] = base64.StdEncoding.EncodeToString(key)
		}
		c.TrustedKey = strings.Join(encoded, ",")
		return nil
	},
	clear: func(c *Config) { c.TrustedKey = "" },
}, {
	name: "mode",
	help: "normal, no-apply, no-refresh or stop",
	set: func(c *Config, v string) error {
		if !slices.Contains(Modes, v) {
			return fmt.Errorf("invalid mode %q: want one of %s", v, strings.Join(Modes, ", "))
		}
		c.Mode = v
		return nil
	},
	clear: func(c *Config) { c.Mode = "" },
}, {
	name: "machine-id",
	help: "machine id to register with (default: the contents of /etc/machine-id)",
	set: func(c *Config, v string) error {
		if err := server.CheckMachineID(v); err != nil {
			return err
		}
		c.MachineID = v
		return nil
	},
	clear: func(c *Config) { c.MachineID = "" },
}, {
	name: "kernel",
	help: "kernel release to report, e.g. 5.15.0-107-generic (default: the running kernel)",
	set: func(c *Config, v string) error {
		if _, _, err := server.SplitKernelRelease(v); err != nil {
			return err
		}
		c.Kernel = v
		return nil
	},
	clear: func(c *Config) { c.Kernel = "" },
}, {
	name: "report-hostname",
	help: "true (default) reports the machine's hostname to the server; false keeps it private",
	set: func(c *Config, v string) error {
		if v != "true" && v != "false" {
			return fmt.Errorf("invalid report-hostname %q: want true or false", v)
		}
		c.ReportHostname = v
		return nil
	},
	clear: func(c *Config) { c.ReportHostname = "" },
}, {
	name: "cutoff-date",
	help: "never apply a patch published after this date (2026-01-31 or an RFC 3339 time)",
	set: func(c *Config, v string) error {
		t, err := parseCutoffDate(v)
		c.CutoffDate = t.Format(time.RFC3339)
		return err
	},
	clear: func(c *Config) { c.CutoffDate = "" },
}, {
	name: "patch-delay",
	help: "apply a patch only once it has been published this long (30m, 12h, 3d, 1w)",
	set: func(c *Config, v string) error {
		if _, err := parsePatchDelay(v); err != nil {
			return err
		}
		c.PatchDelay = v
		return nil
	},
	clear: func(c *Config) { c.PatchDelay = "" },
}}

// ConfigKeys returns the settable keys with a line of help for each, in display order.
func ConfigKeys() [][2]string {
	keys := make([][2]string, len(configKeys))
	for i, k := range configKeys {
		keys[i] = [2]string{k.name, k.help}
	}
	return keys
}

// Set sets key to value after validating it; an empty value clears the key. Every error
// concerns the caller's input: an unknown key or a bad value.
func (c *Config) Set(key, value string) error {
	i := slices.IndexFunc(configKeys, func(k configKey) bool { return k.name == key })
	if i < 0 {
		return fmt.Errorf("unknown config key %q", key)
	}
	if value == "" {
		configKeys[i].clear(c)
		return nil
	}
	return configKeys[i].set(c, value)
}

// check validates every value of a loaded file.
func (c *Config) check() error {
	var errs []error
	values := map[string]string{
		"remote-server": c.RemoteServer, "ca-certs": c.CACerts, "http-proxy": c.HTTPProxy,
		"https-proxy": c.HTTPSProxy, "no-proxy": c.NoProxy, "trusted-key": c.TrustedKey,
		"mode": c.Mode, "machine-id": c.MachineID, "kernel": c.Kernel,
		"dial-timeout": c.DialTimeout, "request-timeout": c.RequestTimeout,
		"report-hostname": c.ReportHostname,
		"cutoff-date":     c.CutoffDate, "patch-delay": c.PatchDelay,
	}
	var scratch Config
	for _, k := range configKeys {
		if v := values[k.name]; v != "" {
			errs = append(errs, k.set(&scratch, v))
		}
	}
	if c.CheckInterval != nil {
		errs = append(errs, scratch.Set("check-interval", strconv.Itoa(*c.CheckInterval)))
	}
	return errors.Join(errs...)
}

// EffectiveMode returns the mode, normal when unset.
func (c *Config) EffectiveMode() string {
	if c.Mode == "" {
		return ModeNormal
	}
	return c.Mode
}

// Timeouts returns the API client's timeouts: dial-timeout and request-timeout, or their
// defaults.
func (c *Config) Timeouts() client.Timeouts {
	dial, _ := time.ParseDuration(c.DialTimeout)
	request, _ := time.ParseDuration(c.RequestTimeout)
	return client.Timeouts{Connect: dial, Request: request}.WithDefaults()
}

// parseTimeout parses the value of a timeout key: a duration such as 30s or 2m, or a
// number of seconds, from a second to max. It returns the duration as Go writes it.
func parseTimeout(key, v string, max time.Duration) (string, error) {
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.Atoi(v); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil || d < time.Second || d > max {
		return "", fmt.Errorf("invalid %s %q: want a duration such as 30s or 2m (or a number of seconds), from 1s to %s", key, v, max)
	}
	return d.String(), nil
}

// ReportsHostname says whether check-ins carry the hostname (report-hostname).
func (c *Config) ReportsHostname() bool { return c.ReportHostname != "false" }

// IntervalMinutes returns the check interval in minutes and whether it was set explicitly.
func (c *Config) IntervalMinutes() (minutes int, explicit bool) {
	if c.CheckInterval == nil {
		return DefaultCheckInterval, false
	}
	return *c.CheckInterval, true
}

// LoadConfig reads a config file; a missing file is an empty configuration.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot read config %s: %w", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("invalid config %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config file atomically, readable by root only: proxy URLs may carry
// credentials.
func (c *Config) Save(path string) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("cannot encode config: %w", err)
	}
	return writeFileAtomic(path, buf.Bytes(), 0o600)
}

// ConfigDefaults are the values shown for keys that default to something of the machine.
type ConfigDefaults struct {
	MachineID string // from /etc/machine-id
	Kernel    string // the running kernel release
}

// Show renders the configuration for people, one "key: value" line per key in YAML
// syntax: certificates abbreviated, proxy passwords masked, defaults in comments.
func (c *Config) Show(d ConfigDefaults) string {
	var b strings.Builder
	// line writes a key, its value as a YAML scalar and an optional comment.
	line := func(key, value, comment string) {
		fmt.Fprintf(&b, "%s: %s", key, yamlScalar(value))
		if comment != "" {
			fmt.Fprintf(&b, " # %s", comment)
		}
		b.WriteByte('\n')
	}
	line("remote-server", c.RemoteServer, "")
	line("ca-certs", certSummary(c.CACerts), "")
	minutes, explicit := c.IntervalMinutes()
	if explicit {
		fmt.Fprintf(&b, "check-interval: %d # minutes\n", minutes)
	} else {
		fmt.Fprintf(&b, "check-interval: %d # minutes (default)\n", minutes)
	}
	timeout := func(key, value string, def time.Duration) {
		if value == "" {
			line(key, def.String(), "default")
		} else {
			line(key, value, "")
		}
	}
	timeout("dial-timeout", c.DialTimeout, client.DefaultConnectTimeout)
	timeout("request-timeout", c.RequestTimeout, client.DefaultRequestTimeout)
	line("http-proxy", config.Redact(c.HTTPProxy), "")
	line("https-proxy", config.Redact(c.HTTPSProxy), "")
	line("no-proxy", c.NoProxy, "")
	line("trusted-key", c.TrustedKey, "")
	if c.Mode == "" {
		line("mode", ModeNormal, "default")
	} else {
		line("mode", c.Mode, "")
	}
	switch {
	case c.MachineID != "":
		line("machine-id", c.MachineID, "")
	case d.MachineID != "":
		line("machine-id", d.MachineID, "default: from /etc/machine-id")
	default:
		line("machine-id", "", "default: /etc/machine-id, which is missing")
	}
	if c.Kernel != "" {
		line("kernel", c.Kernel, "")
	} else {
		line("kernel", d.Kernel, "default: the running kernel")
	}
	if c.ReportHostname != "" {
		fmt.Fprintf(&b, "report-hostname: %s\n", c.ReportHostname)
	} else {
		b.WriteString("report-hostname: true # default\n")
	}
	line("cutoff-date", c.CutoffDate, "")
	line("patch-delay", c.PatchDelay, "")
	return b.String()
}

// yamlScalar renders s as a YAML scalar, quoted when YAML needs it.
func yamlScalar(s string) string {
	if s == "" {
		return `""`
	}
	data, err := yaml.Marshal(s)
	if err != nil {
		return strconv.Quote(s)
	}
	out := strings.TrimSuffix(string(data), "\n")
	if strings.Contains(out, "\n") {
		return strconv.Quote(s)
	}
	return out
}

// certSummary abbreviates PEM certificates: "2 certificates: CN=A (sha256 0a1b2c3d), ...".
func certSummary(pemText string) string {
	if pemText == "" {
		return ""
	}
	certs, err := parseCerts(pemText)
	if err != nil {
		return "invalid: " + err.Error()
	}
	parts := make([]string, len(certs))
	for i, cert := range certs {
		sum := sha256.Sum256(cert.Raw)
		name := cert.Subject.CommonName
		if name == "" {
			name = cert.Subject.String()
		}
		parts[i] = fmt.Sprintf("%s (sha256 %s, expires %s)", name, hex.EncodeToString(sum[:4]), cert.NotAfter.UTC().Format("2006-01-02"))
	}
	noun := "certificate"
	if len(certs) > 1 {
		noun = "certificates"
	}
	return fmt.Sprintf("%d %s: %s", len(certs), noun, strings.Join(parts, ", "))
}

// parseCerts parses one or more PEM certificates; anything else in the text is an error.
func parseCerts(text string) ([]*x509.Certificate, error) {
	rest := []byte(strings.TrimSpace(text))
	var certs []*x509.Certificate
	for len(bytes.TrimSpace(rest)) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("invalid ca-certs: not PEM certificates (want -----BEGIN CERTIFICATE----- blocks)")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("invalid ca-certs: found a %q PEM block, want only CERTIFICATE blocks", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid ca-certs: certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("invalid ca-certs: no PEM certificate found")
	}
	return certs, nil
}

// checkServerURL validates a server URL and returns it without a trailing slash.
func checkServerURL(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("invalid remote-server %q: want http://host[:port] or https://host[:port]", config.Redact(v))
	}
	return strings.TrimRight(v, "/"), nil
}

// checkProxyURL validates a proxy setting: a URL, or host[:port] meaning http://host[:port].
func checkProxyURL(key, v string) error {
	if _, err := proxy.ParseURL(v); err != nil || v == "" {
		return fmt.Errorf("invalid %s %q: want a URL such as http://proxy.example.com:3128", key, config.Redact(v))
	}
	return nil
}

// parseTrustedKeys parses trusted-key: one or more ed25519 public keys in the forms of
// server.ParsePublicKeys.
func parseTrustedKeys(v string) ([]ed25519.PublicKey, error) {
	keys, err := server.ParsePublicKeys(v)
	if err != nil {
		return nil, fmt.Errorf("invalid trusted-key: %w", err)
	}
	return keys, nil
}

// writeFileAtomic replaces path with data (internal/atomicfile): readers see the old or the
// new file, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := atomicfile.Write(path, data, perm); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}
