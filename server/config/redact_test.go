package config_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/config"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://squid.internal:3128":                             "http://squid.internal:3128",
		"http://bob:hunter2@squid.internal:3128":                 "http://bob:xxxxx@squid.internal:3128",
		"https://ghp_T0KEN@upstream.example/":                    "https://xxxxx@upstream.example/",
		`patch-sync.proxy.https "http://u:p%40ss@p:3128" is bad`: `patch-sync.proxy.https "http://u:xxxxx@p:3128" is bad`,
		`parse "http://u:s3cret@h:port": invalid port`:           `parse "http://u:xxxxx@h:port": invalid port`,
		"proxy bob:hunter2@squid:3128 refused":                   "proxy bob:xxxxx@squid:3128 refused",
		"two http://a:1@x and socks5://b:2@y":                    "two http://a:xxxxx@x and socks5://b:xxxxx@y",
		"mail admin@example.com about it":                        "mail admin@example.com about it",
		"postgres://relation-4:pw@10.0.0.9:5432/livepatch":       "postgres://relation-4:xxxxx@10.0.0.9:5432/livepatch",
	} {
		if got := config.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	// It agrees with net/url for a URL with a password.
	u, _ := url.Parse("http://bob:hunter2@squid.internal:3128/x")
	if got := config.Redact(u.String()); got != u.Redacted() {
		t.Errorf("Redact = %q, url.Redacted = %q", got, u.Redacted())
	}
}

// TestValidateRedactsURLs checks that config errors quoting a URL hide its credentials.
func TestValidateRedactsURLs(t *testing.T) {
	in := `
server:
  address: 127.0.0.1:8080
  url-template: http://admin:tmpl-s3cret@10.0.0.1/patches/
database:
  connection-string: postgres://u:p@127.0.0.1/livepatch
contracts:
  url: "http://c:contracts-s3cret@:bad"
patch-sync:
  enabled: true
  upstream-url: "ftp://s:sync-s3cret@up"
`
	_, err := config.Parse([]byte(in))
	if err == nil {
		t.Fatal("no error")
	}
	for _, secret := range []string{"tmpl-s3cret", "contracts-s3cret", "sync-s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("config error shows %s:\n%v", secret, err)
		}
	}
}
