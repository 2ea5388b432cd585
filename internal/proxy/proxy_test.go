package proxy_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/proxy"
)

const (
	httpProxy  = "http://squid.internal:3128"
	httpsProxy = "http://secure-squid.internal:3129"
)

func choose(t *testing.T, f func(*http.Request) (*url.URL, error), target string) string {
	t.Helper()
	req, err := http.NewRequest("GET", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := f(req)
	if err != nil {
		return "error: " + err.Error()
	}
	if u == nil {
		return ""
	}
	return u.String()
}

// TestNoProxy checks the no_proxy forms as golang.org/x/net/http/httpproxy defines them.
func TestNoProxy(t *testing.T) {
	tests := []struct {
		noProxy string
		target  string
		want    string
	}{
		// No entry: the scheme's proxy.
		{"", "http://livepatch.canonical.com/v1", httpProxy},
		{"", "https://livepatch.canonical.com/v1", httpsProxy},
		// A domain name matches itself and its subdomains, not a longer name.
		{"example.com", "https://example.com/", ""},
		{"example.com", "https://a.b.example.com/", ""},
		{"example.com", "https://notexample.com/", httpsProxy},
		// A leading dot matches subdomains only.
		{".example.com", "https://a.example.com/", ""},
		{".example.com", "https://example.com/", httpsProxy},
		// "*." is a leading dot.
		{"*.example.com", "https://a.example.com/", ""},
		{"*.example.com", "https://example.com/", httpsProxy},
		// "*" alone: nothing is proxied.
		{"*", "https://livepatch.canonical.com/", ""},
		{"other.example, *", "http://10.1.2.3/", ""},
		// Ports: an entry with a port matches that port only (the scheme's default counts).
		{"mirror.example:8443", "https://mirror.example:8443/", ""},
		{"mirror.example:8443", "https://mirror.example/", httpsProxy},
		{"mirror.example:443", "https://mirror.example/", ""},
		{"10.0.0.5:8080", "http://10.0.0.5:8080/", ""},
		{"10.0.0.5:8080", "http://10.0.0.5/", httpProxy},
		{"[2001:db8::1]:8080", "http://[2001:db8::1]:8080/", ""},
		// IP addresses and CIDR networks match addresses, never names.
		{"192.168.1.1", "http://192.168.1.1/", ""},
		{"192.168.1.1", "http://192.168.1.2/", httpProxy},
		{"10.0.0.0/8", "http://10.200.3.4:8080/", ""},
		{"10.0.0.0/8", "http://11.0.0.1/", httpProxy},
		{"2001:db8::/32", "http://[2001:db8:1::5]/", ""},
		{"10.0.0.0/8", "http://ten.example/", httpProxy},
		// Case and spaces do not matter; empty entries are skipped.
		{" , EXAMPLE.com ,", "https://www.Example.COM/", ""},
		// localhost and loopback are never proxied.
		{"", "http://localhost:8080/", ""},
		{"", "http://127.0.0.1:8080/", ""},
		{"", "http://[::1]/", ""},
	}
	for _, tt := range tests {
		f := proxy.Func(httpProxy, httpsProxy, tt.noProxy)
		if got := choose(t, f, tt.target); got != tt.want {
			t.Errorf("no_proxy %q: proxy for %s = %q, want %q", tt.noProxy, tt.target, got, tt.want)
		}
	}
}

func TestProxySettings(t *testing.T) {
	// A bare host:port is an http proxy; an https request without an https proxy goes direct.
	f := proxy.Func("squid.internal:3128", "", "")
	if got := choose(t, f, "http://archive.ubuntu.com/"); got != "http://squid.internal:3128" {
		t.Errorf("bare host:port: %q", got)
	}
	if got := choose(t, f, "https://archive.ubuntu.com/"); got != "" {
		t.Errorf("https without https proxy: %q", got)
	}
	// A request that would use an invalid setting fails, password masked; others do not.
	f = proxy.Func("ftp://user:s3cret@squid:21", httpsProxy, "internal.example")
	got := choose(t, f, "http://archive.ubuntu.com/")
	if !strings.HasPrefix(got, "error: ") || strings.Contains(got, "s3cret") {
		t.Errorf("invalid http proxy: %q", got)
	}
	if got := choose(t, f, "http://a.internal.example/"); got != "" {
		t.Errorf("bypassed host with invalid proxy: %q", got)
	}
	if got := choose(t, f, "https://archive.ubuntu.com/"); got != httpsProxy {
		t.Errorf("https next to an invalid http proxy: %q", got)
	}
}

func TestParseURL(t *testing.T) {
	for v, want := range map[string]string{
		"":                           "",
		"squid:3128":                 "http://squid:3128",
		"http://squid:3128":          "http://squid:3128",
		"https://u:p@squid:3129":     "https://u:p@squid:3129",
		"socks5://10.0.0.1:1080":     "socks5://10.0.0.1:1080",
		"http://[::1":                "error",
		"ftp://squid:21":             "error",
		"http://:3128":               "error",
		"http://user:s3cret@[::1":    "error",
		"https://user:s3cret@host:x": "error",
	} {
		u, err := proxy.ParseURL(v)
		got := ""
		switch {
		case err != nil:
			got = "error"
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("ParseURL(%q) error shows the password: %v", v, err)
			}
		case u != nil:
			got = u.String()
		}
		if got != want {
			t.Errorf("ParseURL(%q) = %q, want %q", v, got, want)
		}
	}
}

// FuzzFunc checks that no proxy setting or no_proxy list panics the choice and that a host
// listed as such in no_proxy is never proxied.
func FuzzFunc(f *testing.F) {
	f.Add("http://squid:3128", "localhost,.internal,10.0.0.1", "http://db.internal:80/x")
	f.Add("squid:3128", "*", "https://contracts.canonical.com/v1")
	f.Add("::", ",,", "http://[::1]:80/")
	f.Fuzz(func(t *testing.T, setting, noProxy, target string) {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return
		}
		got, err := proxy.Func(setting, setting, noProxy)(&http.Request{URL: u})
		if err != nil || got == nil {
			return
		}
		host := strings.ToLower(u.Hostname())
		for entry := range strings.SplitSeq(noProxy, ",") {
			entry = strings.ToLower(strings.TrimSpace(entry))
			if entry == "*" || (entry != "" && entry == host) {
				t.Fatalf("%q proxied through %q despite no_proxy %q", target, got, noProxy)
			}
		}
	})
}
