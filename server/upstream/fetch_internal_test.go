package upstream

import (
	"net/http"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/config"
)

func TestBucket(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 1, 49: 1, 50: 50, 99: 50, 100: 100, 499: 100, 500: 500,
		1999: 1000, 2000: 2000, 4999: 2000, 5000: 5000, 10000: 10000, 123456: 10000} {
		if got := bucket(n); got != want {
			t.Errorf("bucket(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestProxyFunc(t *testing.T) {
	proxy := proxyFunc(config.Proxy{
		HTTP:    "http://proxy.internal:3128",
		HTTPS:   "squid.internal:3129",
		NoProxy: "example.com, .corp.example, 10.0.0.0/8, 192.168.1.1, mirror.example:8443",
	})
	for target, want := range map[string]string{
		"http://livepatch.canonical.com/v1/sync/patches":  "http://proxy.internal:3128",
		"https://livepatch.canonical.com/v1/sync/patches": "http://squid.internal:3129",
		"https://example.com/x":                           "",
		"https://files.example.com/x":                     "", // subdomain of a listed name
		"https://corp.example/x":                          "http://squid.internal:3129",
		"https://a.corp.example/x":                        "",
		"http://10.1.2.3/x":                               "",
		"http://11.1.2.3/x":                               "http://proxy.internal:3128",
		"http://192.168.1.1/x":                            "",
		"https://mirror.example:8443/x":                   "",
		"https://mirror.example/x":                        "http://squid.internal:3129",
		"http://127.0.0.1:8080/x":                         "",
		"http://localhost/x":                              "",
	} {
		req, _ := http.NewRequest("GET", target, nil)
		u, err := proxy(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != want {
			t.Errorf("proxy for %s = %q, %v; want %q", target, got, err, want)
		}
	}
	star := proxyFunc(config.Proxy{HTTPS: "http://p:1", NoProxy: "*"})
	req, _ := http.NewRequest("GET", "https://livepatch.canonical.com/", nil)
	if u, _ := star(req); u != nil {
		t.Errorf("no-proxy * still proxies %s", u)
	}
	if err := checkProxy(config.Proxy{HTTP: "http://[::1"}); err == nil {
		t.Errorf("checkProxy accepted a malformed URL")
	}
}
