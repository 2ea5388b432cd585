package config_test

import (
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// FuzzParse checks the config parser never panics and that whatever it accepts validates
// and survives a render-and-parse round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "patch-sync:\n  enabled: true\n  interval: 5m\n"))
	f.Add([]byte("server: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(out); err != nil {
			t.Fatalf("rendered config does not parse: %v\n%s", err, out)
		}
	})
}

// FuzzParseBasicUser checks entries never panic the parser and errors never echo the hash.
func FuzzParseBasicUser(f *testing.F) {
	f.Add("admin:$2y$10$" + strings.Repeat("a", 53))
	f.Add("admin:secret-password")
	f.Add(":")
	f.Fuzz(func(t *testing.T, entry string) {
		user, hash, err := config.ParseBasicUser(entry)
		if err != nil {
			user, secret, ok := strings.Cut(entry, ":")
			// The message names the user, so only a secret that is not part of the user
			// name can be told apart.
			if ok && len(secret) >= 8 && !strings.Contains(user, secret) && strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q echoes the secret", err)
			}
			return
		}
		if user == "" || !strings.HasPrefix(hash, "$2") {
			t.Fatalf("accepted %q as %q %q", entry, user, hash)
		}
	})
}

// FuzzCheckURLTemplate checks url_template values never panic the checker and accepted
// ones hold {filename} and an http(s) host.
func FuzzCheckURLTemplate(f *testing.F) {
	f.Add("http://10.0.0.1/patches/{filename}")
	f.Add("https://[::1]:8443/v1/patches/{filename}?x=1")
	f.Add("{filename}")
	f.Fuzz(func(t *testing.T, tmpl string) {
		if config.CheckURLTemplate(tmpl) == nil && !strings.Contains(tmpl, "{filename}") {
			t.Fatalf("accepted %q", tmpl)
		}
	})
}
