package agent

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// proxyFunc returns the proxy selector for the configured http-proxy, https-proxy and
// no-proxy, with the semantics of the usual environment variables: no-proxy holds "*",
// host names (matching the host and its subdomains; a leading dot is allowed), IP
// addresses and CIDR networks, each optionally with a port. Loopback is never proxied.
func proxyFunc(httpProxy, httpsProxy, noProxy string) func(*http.Request) (*url.URL, error) {
	parse := func(v string) *url.URL {
		if v == "" {
			return nil
		}
		if !strings.Contains(v, "://") {
			v = "http://" + v
		}
		u, err := url.Parse(v)
		if err != nil {
			return nil
		}
		return u
	}
	httpURL, httpsURL := parse(httpProxy), parse(httpsProxy)
	var skip []string
	for _, e := range strings.Split(noProxy, ",") {
		if e = strings.ToLower(strings.TrimSpace(e)); e != "" {
			skip = append(skip, e)
		}
	}
	return func(r *http.Request) (*url.URL, error) {
		proxy := httpURL
		if r.URL.Scheme == "https" {
			proxy = httpsURL
		}
		if proxy == nil || bypass(r.URL, skip) {
			return nil, nil
		}
		return proxy, nil
	}
}

// bypass reports whether u must be reached directly.
func bypass(u *url.URL, skip []string) bool {
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return true
	}
	for _, e := range skip {
		if e == "*" {
			return true
		}
		if _, network, err := net.ParseCIDR(e); err == nil {
			if ip != nil && network.Contains(ip) {
				return true
			}
			continue
		}
		name, p := e, ""
		if h, hp, err := net.SplitHostPort(e); err == nil {
			name, p = h, hp
		}
		if p != "" && p != port {
			continue
		}
		name = strings.TrimPrefix(name, "*")
		if strings.HasPrefix(name, ".") {
			if strings.HasSuffix(host, name) || host == name[1:] {
				return true
			}
			continue
		}
		if host == name || strings.HasSuffix(host, "."+name) {
			return true
		}
	}
	return false
}
