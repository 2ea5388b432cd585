package pro

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ConfigurableKeys are the keys `pro config show|set|unset` accept (the real client's
// UA_CONFIGURABLE_KEYS), in its order.
var ConfigurableKeys = []string{
	"http_proxy", "https_proxy", "apt_http_proxy", "apt_https_proxy", "ua_apt_http_proxy",
	"ua_apt_https_proxy", "global_apt_http_proxy", "global_apt_https_proxy",
	"update_messaging_timer", "metering_timer", "apt_news", "apt_news_url",
	"vulnerability_data_url_prefix", "lxd_guest_attach",
}

// userConfigKeys are the fields of user-config.json (the real client's UserConfigData).
var userConfigKeys = []string{
	"apt_http_proxy", "apt_https_proxy", "global_apt_http_proxy", "global_apt_https_proxy",
	"ua_apt_http_proxy", "ua_apt_https_proxy", "http_proxy", "https_proxy", "apt_news",
	"apt_news_url", "poll_for_pro_license", "polling_error_retry_delay", "metering_timer",
	"update_messaging_timer", "vulnerability_data_url_prefix", "lxd_guest_attach",
}

// proxyKeys are the user-config fields holding proxy URLs (redacted in the public copy).
var proxyKeys = []string{
	"apt_http_proxy", "apt_https_proxy", "global_apt_http_proxy", "global_apt_https_proxy",
	"ua_apt_http_proxy", "ua_apt_https_proxy", "http_proxy", "https_proxy",
}

// defaults are the values `pro config show` and `pro status` report for unset keys.
var defaults = map[string]any{
	"update_messaging_timer":        21600,
	"metering_timer":                14400,
	"apt_news":                      true,
	"apt_news_url":                  "https://motd.ubuntu.com/aptnews.json",
	"vulnerability_data_url_prefix": "https://security-metadata.canonical.com/oval/",
	"lxd_guest_attach":              "off",
}

// The URLs the real client reaches through a proxy before it sets it.
const (
	validateSnapHTTP  = "http://api.snapcraft.io"
	validateSnapHTTPS = "https://api.snapcraft.io"
	validateAptHTTP   = "http://archive.ubuntu.com"
	validateAptHTTPS  = "https://esm.ubuntu.com"
)

// metadataNoProxy are the addresses the real client never proxies (UA_NO_PROXY_URLS).
var metadataNoProxy = []string{"169.254.169.254", "metadata", "[fd00:ec2::254]"}

func privateUserConfigPath() string {
	return filepath.Join(root(), "var/lib/ubuntu-advantage/private/user-config.json")
}
func publicUserConfigPath() string {
	return filepath.Join(root(), "var/lib/ubuntu-advantage/user-config.json")
}

// readUserConfig returns the settings made with `pro config set`: the private file as root,
// else the public, redacted one.
func readUserConfig() map[string]any {
	cfg := map[string]any{}
	p := publicUserConfigPath()
	if os.Geteuid() == 0 {
		p = privateUserConfigPath()
	}
	if b, err := os.ReadFile(p); err == nil {
		json.Unmarshal(b, &cfg)
	}
	return cfg
}

func writeUserConfig(cfg map[string]any) error {
	full := map[string]any{}
	for _, k := range userConfigKeys {
		full[k] = cfg[k]
	}
	public := map[string]any{}
	for k, v := range full {
		if s, ok := v.(string); ok && slices.Contains(proxyKeys, k) {
			if u, err := url.Parse(s); err == nil && u.User != nil {
				v = "<REDACTED>"
			}
		}
		public[k] = v
	}
	if err := os.MkdirAll(filepath.Dir(privateUserConfigPath()), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(full)
	if err := os.WriteFile(privateUserConfigPath(), b, 0o600); err != nil {
		return err
	}
	b, _ = json.Marshal(public)
	return os.WriteFile(publicUserConfigPath(), b, 0o644)
}

// publicUserConfig is the ua_config of `pro status`: the public settings, with the current
// value of every configurable key that is not set there.
func publicUserConfig() map[string]any {
	cfg := map[string]any{}
	if b, err := os.ReadFile(publicUserConfigPath()); err == nil {
		json.Unmarshal(b, &cfg)
	}
	out := map[string]any{}
	for _, k := range userConfigKeys {
		out[k] = cfg[k]
	}
	for _, k := range ConfigurableKeys {
		if out[k] == nil {
			out[k] = configValue(readUserConfig(), k)
		}
	}
	return out
}

// configValue is the value of key: the setting, else its default, else nil.
func configValue(cfg map[string]any, key string) any {
	if v, ok := cfg[key]; ok && v != nil {
		return v
	}
	return defaults[key]
}

// pyString prints a value as the real client (Python) does.
func pyString(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		if v {
			return "True"
		}
		return "False"
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func invalidKey(arg string) error {
	return fmt.Errorf("\n%s must be one of: %s", arg, strings.Join(ConfigurableKeys, ", "))
}

func (c *cli) config(args []string) (int, error) {
	if len(args) == 0 {
		fmt.Fprintln(c.out, "usage: pro config <command> [flags]\n\nAvailable Commands:\n  show\n  set\n  unset")
		return 0, nil
	}
	switch args[0] {
	case "show":
		return c.configShow(args[1:])
	case "set":
		if len(args) != 2 {
			return 2, errors.New("usage: pro config set <key>=<value> [flags]\npro config set: error: the following arguments are required: key_value_pair")
		}
		return c.configSet(args[1])
	case "unset":
		if len(args) != 2 {
			return 2, errors.New("usage: pro config unset key [flags]\npro config unset: error: the following arguments are required: key")
		}
		return c.configUnset(args[1])
	}
	return 2, fmt.Errorf("pro config: error: argument command: invalid choice: %q (choose from 'show', 'set', 'unset')", args[0])
}

func (c *cli) configShow(args []string) (int, error) {
	cfg := readUserConfig()
	if len(args) > 1 {
		return 2, fmt.Errorf("pro: error: unrecognized arguments: %s", strings.Join(args[1:], " "))
	}
	if len(args) == 1 {
		if !slices.Contains(ConfigurableKeys, args[0]) {
			return 1, invalidKey("'" + args[0] + "'")
		}
		fmt.Fprintf(c.out, "%s %s\n", args[0], pyString(configValue(cfg, args[0])))
		return 0, nil
	}
	width := 0
	for _, k := range ConfigurableKeys {
		width = max(width, len(k)+1)
	}
	for _, k := range ConfigurableKeys {
		fmt.Fprintf(c.out, "%-*s %s\n", width, k, pyString(configValue(cfg, k)))
	}
	return 0, nil
}

func (c *cli) configSet(pair string) (int, error) {
	parts := strings.Split(pair, "=")
	if len(parts) != 2 {
		return 1, fmt.Errorf("\nExpected <key>=<value> but found: %s", pair)
	}
	key, value := parts[0], parts[1]
	if !slices.Contains(ConfigurableKeys, key) {
		return 1, invalidKey("<key>")
	}
	if strings.TrimSpace(value) == "" {
		return 1, fmt.Errorf("Empty value provided for %s.", key)
	}
	cfg := readUserConfig()
	var v any = value
	switch key {
	case "http_proxy", "https_proxy":
		target := validateSnapHTTP
		if key == "https_proxy" {
			target = validateSnapHTTPS
		}
		if err := validateProxy(value, target); err != nil {
			return 1, err
		}
	case "apt_http_proxy", "apt_https_proxy", "global_apt_http_proxy", "global_apt_https_proxy",
		"ua_apt_http_proxy", "ua_apt_https_proxy":
		target := validateAptHTTP
		if strings.Contains(key, "https") {
			target = validateAptHTTPS
		}
		if err := validateProxy(value, target); err != nil {
			return 1, err
		}
		if strings.HasPrefix(key, "apt_") {
			fmt.Fprintf(c.out, "Warning: %s has been renamed to global_%s.\n", key, key)
			key = "global_" + key
		}
		if strings.HasPrefix(key, "global_") {
			cfg["ua_apt_http_proxy"], cfg["ua_apt_https_proxy"] = nil, nil
		} else {
			cfg["global_apt_http_proxy"], cfg["global_apt_https_proxy"] = nil, nil
		}
	case "update_messaging_timer", "metering_timer":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return 1, fmt.Errorf("Cannot set %s to %s: <value> for interval must be a positive integer.", key, value)
		}
		v = n
	case "apt_news":
		switch strings.ToLower(value) {
		case "true":
			v = true
		case "false":
			v = false
		default:
			return 1, errors.New("\n<value> must be one of: true, false")
		}
	case "lxd_guest_attach":
		if _, err := readToken(); err != nil {
			return 1, errors.New("This machine is not attached to an Ubuntu Pro subscription.\nSee https://ubuntu.com/pro")
		}
		v = strings.ToLower(value)
		if !slices.Contains([]string{"on", "off", "available"}, v.(string)) {
			return 1, fmt.Errorf("Value provided was not found in LXDGuestAttachEnum's allowed: value: %s", value)
		}
	}
	cfg[key] = v
	return 0, writeUserConfig(cfg)
}

func (c *cli) configUnset(key string) (int, error) {
	if !slices.Contains(ConfigurableKeys, key) {
		return 1, invalidKey("<key>")
	}
	cfg := readUserConfig()
	if strings.HasPrefix(key, "apt_") {
		key = "global_" + key
	}
	cfg[key] = nil
	return 0, writeUserConfig(cfg)
}

// serviceURL reports whether v is a URL the real client accepts as a proxy (is_service_url):
// http or https, with a valid port if any.
func serviceURL(v string) (*url.URL, bool) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return nil, false
		}
	}
	return u, true
}

// validateProxy checks that proxy works by reaching target through it, as the real client
// does before it sets a proxy.
func validateProxy(proxy, target string) error {
	u, ok := serviceURL(proxy)
	if !ok {
		return fmt.Errorf("%q is not a valid url. Not setting as proxy.", proxy)
	}
	notWorking := fmt.Errorf("%q is not working. Not setting as proxy.", proxy)
	t, _ := url.Parse(target)
	if bypass(noProxy(), t.Host) {
		// Reached directly, which the machine cannot do.
		return notWorking
	}
	var err error
	if t.Scheme == "https" {
		err = connect(u, t.Hostname()+":443")
	} else {
		err = head(u, target)
	}
	if err != nil {
		return notWorking
	}
	return nil
}

// head sends HEAD target through the http proxy u and wants a 2xx answer (urllib follows
// redirects, without the proxy for https: on a proxied network that fails).
func head(u *url.URL, target string) error {
	client := &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{Proxy: http.ProxyURL(u)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Head(target)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("proxy answered %s", resp.Status)
	}
	return nil
}

// connect opens a tunnel to hostport through the proxy u (CONNECT) and wants 200.
func connect(u *url.URL, hostport string) error {
	d := &net.Dialer{Timeout: 30 * time.Second}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	var conn net.Conn
	var err error
	if u.Scheme == "https" {
		conn, err = tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: u.Hostname()})
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := "CONNECT " + hostport + " HTTP/1.1\r\nHost: " + hostport + "\r\n"
	if u.User != nil {
		pw, _ := u.User.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)) + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy answered %s", resp.Status)
	}
	return nil
}

// envAny returns the first non-empty environment variable of names.
func envAny(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// noProxy is the no_proxy the real client runs with: the environment's plus its own.
func noProxy() string {
	entries := slices.Clone(metadataNoProxy)
	if v := envAny("no_proxy", "NO_PROXY"); v != "" {
		entries = append(entries, strings.Split(v, ",")...)
	}
	slices.Sort(entries)
	return strings.Join(slices.Compact(entries), ",")
}

// bypass reports whether urllib reaches hostport ("host" or "host:port") directly under
// no_proxy (proxy_bypass_environment): "*" alone, or an entry equal to the host or a
// parent domain of it; leading dots are ignored and there are no CIDR networks.
func bypass(noProxy, hostport string) bool {
	if noProxy == "" {
		return false
	}
	if noProxy == "*" {
		return true
	}
	host := strings.ToLower(hostport)
	hostOnly := host
	if i := strings.LastIndex(host, ":"); i >= 0 && strings.Trim(host[i+1:], "0123456789") == "" {
		hostOnly = host[:i]
	}
	for name := range strings.SplitSeq(noProxy, ",") {
		name = strings.ToLower(strings.TrimLeft(strings.TrimSpace(name), "."))
		if name == "" {
			continue
		}
		if hostOnly == name || host == name {
			return true
		}
		if strings.HasSuffix(hostOnly, "."+name) || strings.HasSuffix(host, "."+name) {
			return true
		}
	}
	return false
}

// parseEnvProxy reads an environment proxy as urllib does: a bare host:port is http.
func parseEnvProxy(v string) *url.URL {
	if v == "" {
		return nil
	}
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return nil
	}
	return u
}

// httpClient is the client of the real client's requests (the contracts server): the
// proxies of `pro config`, else those of the environment, bypassed under no_proxy.
func httpClient() *http.Client {
	cfg := readUserConfig()
	proxies := map[string]*url.URL{}
	for _, scheme := range []string{"http", "https"} {
		if s, ok := cfg[scheme+"_proxy"].(string); ok && s != "" {
			proxies[scheme], _ = url.Parse(s)
		}
	}
	if len(proxies) == 0 {
		proxies["http"] = parseEnvProxy(envAny("http_proxy", "HTTP_PROXY"))
		proxies["https"] = parseEnvProxy(envAny("https_proxy", "HTTPS_PROXY"))
	}
	skip := noProxy()
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{Proxy: func(r *http.Request) (*url.URL, error) {
			p := proxies[r.URL.Scheme]
			if p == nil || bypass(skip, r.URL.Host) {
				return nil, nil
			}
			return p, nil
		}},
	}
}
