// Package haproxy is the stand-in for the legacy haproxy charm: a real charm (metadata in
// charm/, dispatch = this package's Main via the jujusim multi-call binary) that renders
// haproxy.cfg from its services option and the reverseproxy relation, and runs a real haproxy
// on its unit address, reloaded (master-worker, USR2: the old workers finish as with -sf) when
// backends change. Like the real charm it splits service_options between the frontend and
// the backend, and terminates TLS on a service with crts: "DEFAULT" is the certificate and
// key of the ssl_cert and ssl_key options (base64 PEM), any other entry a base64 PEM of its
// own.
package haproxy

import (
	"bytes"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/tests/standin/hookenv"
)

//go:embed charm
var files embed.FS

// Files holds metadata.yaml and config.yaml.
var Files, _ = fs.Sub(files, "charm")

// Binary is the haproxy executable.
var Binary = "/usr/sbin/haproxy"

const service = "haproxy.service"

func cfgPath() string { return hookenv.Path("etc/haproxy/haproxy.cfg") }

// libDir is where certificates go, as the real charm's /var/lib/haproxy.
func libDir() string { return hookenv.Path("var/lib/haproxy") }

// defaultPEM is the certificate of crts entry "DEFAULT".
func defaultPEM() string { return filepath.Join(libDir(), "default.pem") }

// crtPath is the certificate file of the i-th crts entry of a service.
func crtPath(service string, i int, crt string) string {
	if crt == "DEFAULT" {
		return defaultPEM()
	}
	return filepath.Join(libDir(), "service_"+service, strconv.Itoa(i)+".pem")
}

// Service is one entry of the services option.
type Service struct {
	Name          string   `yaml:"service_name"`
	Host          string   `yaml:"service_host"`
	Port          int      `yaml:"service_port"`
	Options       []string `yaml:"service_options"`
	ServerOptions string   `yaml:"server_options"`
	Servers       [][]any  `yaml:"servers"`
	// Crts turns on TLS on the frontend: "DEFAULT" or base64 PEM (certificate and key).
	Crts []string `yaml:"crts"`
}

// dupeOptions go to both the frontend and the backend; frontendOnly options to the
// frontend; every other option to the backend (the real charm's lists).
var (
	dupeOptions  = []string{"mode tcp", "option tcplog", "mode http", "option httplog"}
	frontendOnly = []string{"acl", "backlog", "bind", "capture cookie", "capture request header",
		"capture response header", "clitimeout", "default_backend", "http-request", "maxconn",
		"monitor fail", "monitor-net", "monitor-uri", "option accept-invalid-http-request",
		"option clitcpka", "option contstats", "option dontlog-normal", "option dontlognull",
		"option http-use-proxy-header", "option log-separate-errors", "option logasap",
		"option socket-stats", "option tcp-smart-accept", "rate-limit sessions", "redirect",
		"tcp-request content accept", "tcp-request content reject", "tcp-request inspect-delay",
		"timeout client", "timeout clitimeout", "use_backend"}
)

// splitOptions splits service options between the frontend and the backend.
func splitOptions(options []string) (fe, be []string) {
	hasPrefix := func(list []string, o string) bool {
		for _, p := range list {
			if strings.HasPrefix(strings.TrimSpace(o), p) {
				return true
			}
		}
		return false
	}
	for _, d := range dupeOptions {
		for _, o := range options {
			if strings.HasPrefix(strings.TrimSpace(o), d) {
				fe, be = append(fe, d), append(be, d)
				break
			}
		}
	}
	for _, o := range options {
		o = strings.TrimSpace(o)
		switch {
		case hasPrefix(frontendOnly, o):
			if !slices.Contains(fe, o) {
				fe = append(fe, o)
			}
		case !slices.Contains(be, o):
			be = append(be, o)
		}
	}
	return fe, be
}

// writeCerts writes default.pem from ssl_cert and ssl_key and the services' own crts, as
// the real charm does (a missing ssl_key leaves no default certificate).
func writeCerts(cfg map[string]any, services []Service) error {
	write := func(path, b64 string, more ...string) error {
		var pem []byte
		for _, v := range append([]string{b64}, more...) {
			data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("certificate for %s is not base64: %w", filepath.Base(path), err)
			}
			pem = append(pem, data...)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		return os.WriteFile(path, pem, 0o600)
	}
	cert, _ := cfg["ssl_cert"].(string)
	key, _ := cfg["ssl_key"].(string)
	if cert != "" && key != "" {
		if err := write(defaultPEM(), cert, key); err != nil {
			return err
		}
	}
	for _, s := range services {
		for i, crt := range s.Crts {
			if crt != "DEFAULT" {
				if err := write(crtPath(s.Name, i, crt), crt); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

type server struct {
	name, addr, port, options string
}

// Main is the charm's dispatch.
func Main() int { return hookenv.Main("haproxy", run) }

func run(hook string) error {
	switch hook {
	case "install":
		return install()
	case "stop":
		return hookenv.Systemctl("disable", "--now", service)
	case "remove":
		return nil
	}
	return reconcile()
}

func install() error {
	if err := os.MkdirAll(filepath.Dir(cfgPath()), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(hookenv.Path("run"), 0o755); err != nil {
		return err
	}
	unit := fmt.Sprintf(`[Unit]
Description=HAProxy Load Balancer (jujusim stand-in)

[Service]
ExecStart=%s -W -f %s -p %s
ExecReload=/bin/kill -USR2 $MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
`, Binary, cfgPath(), hookenv.Path("run/haproxy.pid"))
	if err := os.WriteFile(hookenv.Path("etc/systemd/system/"+service), []byte(unit), 0o644); err != nil {
		return err
	}
	return hookenv.Systemctl("daemon-reload")
}

func reconcile() error {
	cfg, err := hookenv.Config()
	if err != nil {
		return err
	}
	addr, err := hookenv.Address()
	if err != nil {
		return err
	}
	var services []Service
	if s, _ := cfg["services"].(string); s != "" {
		if err := yaml.Unmarshal([]byte(s), &services); err != nil {
			return hookenv.Status("blocked", "invalid services option: "+err.Error())
		}
	}
	if err := writeCerts(cfg, services); err != nil {
		return hookenv.Status("blocked", err.Error())
	}
	backends, err := collectBackends(services, addr)
	if err != nil {
		return err
	}
	rendered := Render(cfg, services, backends, addr, unitNumber())
	old, _ := os.ReadFile(cfgPath())
	changed := !bytes.Equal(old, []byte(rendered))
	if changed {
		tmp := cfgPath() + ".new"
		if err := os.WriteFile(tmp, []byte(rendered), 0o644); err != nil {
			return err
		}
		if out, err := exec.Command(Binary, "-c", "-q", "-f", tmp).CombinedOutput(); err != nil {
			return hookenv.Status("blocked", "invalid haproxy configuration: "+strings.TrimSpace(string(out)))
		}
		if err := os.Rename(tmp, cfgPath()); err != nil {
			return err
		}
	}
	active := exec.Command("systemctl", "is-active", "--quiet", service).Run() == nil
	switch {
	case !active:
		err = hookenv.Systemctl("enable", "--now", service)
	case changed:
		err = hookenv.Systemctl("reload", service)
	}
	if err != nil {
		return err
	}
	for _, s := range services {
		hookenv.Run("open-port", strconv.Itoa(s.Port)+"/tcp")
	}
	if err := publish(services, addr); err != nil {
		return err
	}
	return hookenv.Status("active", "Unit is ready")
}

func unitNumber() string {
	u := os.Getenv("JUJU_UNIT_NAME")
	return u[strings.LastIndex(u, "/")+1:]
}

// collectBackends reads the reverseproxy units: those with port and private-address, attached
// to their service_name's service, or to the first service.
func collectBackends(services []Service, ownAddr string) (map[string][]server, error) {
	out := map[string][]server{}
	ids, err := hookenv.RelationIDs("reverseproxy")
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, s := range services {
		known[s.Name] = true
	}
	for _, id := range ids {
		units, err := hookenv.Units(id)
		if err != nil {
			return nil, err
		}
		app, _ := hookenv.RemoteApp(id)
		for _, u := range units {
			data, err := hookenv.UnitData(id, u)
			if err != nil {
				return nil, err
			}
			port, addr := data["port"], data["private-address"]
			if port == "" || addr == "" {
				continue
			}
			name := data["service_name"]
			switch {
			case name != "" && !known[name]:
				continue
			case name == "" && known[app]:
				name = app
			case name == "" && known[app+"_service"]:
				name = app + "_service"
			case name == "" && len(services) > 0:
				name = services[0].Name
			}
			out[name] = append(out[name], server{name: strings.ReplaceAll(u, "/", "-") + "-" + port, addr: addr, port: port})
		}
		// haproxy tells its backends where it is.
		if err := hookenv.Set(id, false, map[string]string{"public-address": ownAddr}); err != nil {
			return nil, err
		}
	}
	for _, s := range out {
		sort.Slice(s, func(i, j int) bool { return s[i].name < s[j].name })
	}
	return out, nil
}

// Render produces haproxy.cfg. A service_host of 0.0.0.0 binds the unit's address, since all
// emulated machines share the host's loopback.
func Render(cfg map[string]any, services []Service, backends map[string][]server, addr, unit string) string {
	var b strings.Builder
	num := func(k string) int {
		f, _ := cfg[k].(float64)
		return int(f)
	}
	str := func(k string) string { s, _ := cfg[k].(string); return s }
	fmt.Fprintf(&b, "global\n    maxconn %d\n    spread-checks %d\n", num("global_maxconn"), num("global_spread_checks"))
	if dh := num("global_default_dh_param"); dh > 0 {
		fmt.Fprintf(&b, "    tune.ssl.default-dh-param %d\n", dh)
	}
	fmt.Fprintf(&b, "\ndefaults\n    mode %s\n    retries %d\n", str("default_mode"), num("default_retries"))
	for _, o := range strings.Split(str("default_options"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			fmt.Fprintf(&b, "    option %s\n", o)
		}
	}
	for _, t := range strings.Split(str("default_timeouts"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			fmt.Fprintf(&b, "    timeout %s\n", t)
		}
	}
	for _, s := range services {
		host := s.Host
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = addr
		}
		bind := fmt.Sprintf("%s:%d", host, s.Port)
		if len(s.Crts) > 0 {
			bind += " ssl"
			for i, crt := range s.Crts {
				bind += " crt " + crtPath(s.Name, i, crt) + " no-sslv3"
			}
		}
		fe, be := splitOptions(s.Options)
		fmt.Fprintf(&b, "\nfrontend haproxy-%s-%d\n    bind %s\n    default_backend %s\n", unit, s.Port, bind, s.Name)
		for _, o := range fe {
			fmt.Fprintf(&b, "    %s\n", o)
		}
		fmt.Fprintf(&b, "\nbackend %s\n", s.Name)
		for _, o := range be {
			fmt.Fprintf(&b, "    %s\n", o)
		}
		servers := backends[s.Name]
		for _, sv := range s.Servers {
			if len(sv) >= 3 {
				opts := ""
				if len(sv) > 3 {
					opts = fmt.Sprint(sv[3])
				}
				servers = append(servers, server{name: fmt.Sprint(sv[0]), addr: fmt.Sprint(sv[1]), port: fmt.Sprint(sv[2]), options: opts})
			}
		}
		for i, sv := range servers {
			opts := sv.options
			if opts == "" {
				opts = s.ServerOptions
			}
			opts = strings.ReplaceAll(opts, "{i}", strconv.Itoa(i))
			fmt.Fprintf(&b, "    server %s %s:%s %s\n", sv.name, sv.addr, sv.port, opts)
		}
	}
	return b.String()
}

// publish answers the website relation (haproxy as a backend of frontends such as apache2).
func publish(services []Service, addr string) error {
	ids, err := hookenv.RelationIDs("website")
	if err != nil || len(services) == 0 {
		return err
	}
	all, _ := yaml.Marshal(services)
	for _, id := range ids {
		if err := hookenv.Set(id, false, map[string]string{
			"port": strconv.Itoa(services[0].Port), "hostname": addr, "all_services": string(all),
		}); err != nil {
			return err
		}
	}
	return nil
}
