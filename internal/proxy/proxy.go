// Package proxy chooses the proxy of an outgoing HTTP request for every client of the project
// (the charms' hooks, the server's patch sync, the machine agent), with the rules of the
// usual http_proxy, https_proxy and no_proxy variables as golang.org/x/net/http/httpproxy
// defines them:
//
//   - http requests use the HTTP proxy, https requests the HTTPS proxy; a proxy given as a
//     bare host[:port] means http://host[:port];
//   - no_proxy is a comma-separated list of "*" (nothing is proxied), IP addresses, CIDR
//     networks and domain names, each but "*" and CIDR optionally with ":port";
//   - a domain name matches itself and its subdomains; with a leading "." (or "*.") it
//     matches its subdomains only;
//   - localhost and loopback addresses are never proxied.
package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpproxy"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// Func returns the proxy function of an http.Transport for the given settings. A request
// that would go through a proxy setting that is not a proxy URL fails with an error that
// names the setting (its password masked) instead of going out directly.
func Func(httpProxy, httpsProxy, noProxy string) func(*http.Request) (*url.URL, error) {
	cfg := httpproxy.Config{HTTPProxy: httpProxy, HTTPSProxy: httpsProxy, NoProxy: noProxy}
	// An invalid setting is replaced by a placeholder so that the matcher still tells
	// which requests it applies to; those requests fail.
	const placeholder = "http://invalid.proxy.setting"
	invalid := map[string]string{}
	if _, err := ParseURL(httpProxy); err != nil {
		cfg.HTTPProxy, invalid["http"] = placeholder, httpProxy
	}
	if _, err := ParseURL(httpsProxy); err != nil {
		cfg.HTTPSProxy, invalid["https"] = placeholder, httpsProxy
	}
	choose := cfg.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) {
		u, err := choose(r.URL)
		if err != nil || u == nil {
			return nil, err
		}
		if bad, ok := invalid[r.URL.Scheme]; ok {
			return nil, fmt.Errorf("cannot use %s proxy %q: not a proxy URL", r.URL.Scheme, config.Redact(bad))
		}
		return u, nil
	}
}

// ParseURL parses a proxy setting: an http, https or socks5 URL with a host, or a bare
// host[:port] meaning http://host[:port]. An empty setting is no proxy (nil, nil).
func ParseURL(v string) (*url.URL, error) {
	if v == "" {
		return nil, nil
	}
	s := v
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q is not a proxy URL", config.Redact(v))
	}
	switch u.Scheme {
	case "http", "https", "socks5":
		return u, nil
	}
	return nil, fmt.Errorf("%q is not a proxy URL: want http, https or socks5", config.Redact(v))
}
