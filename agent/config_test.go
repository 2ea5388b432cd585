package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testCert returns a deterministic self-signed CA certificate in PEM.
func testCert(t *testing.T, cn string) string {
	t.Helper()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2034, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestConfigSet(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	pubB64 := base64.StdEncoding.EncodeToString(pub)
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}))
	// A second key, for an origin rotating its signing key.
	pub2 := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	pub2B64 := base64.StdEncoding.EncodeToString(pub2)
	pkix2, err := x509.MarshalPKIXPublicKey(pub2)
	if err != nil {
		t.Fatal(err)
	}
	pub2PEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix2}))
	interval := func(n int) *int { return &n }
	tests := []struct {
		key, value string
		want       Config
		err        string
	}{
		{key: "remote-server", value: "http://livepatch.example.com/", want: Config{RemoteServer: "http://livepatch.example.com"}},
		{key: "remote-server", value: "https://10.0.0.1:8443", want: Config{RemoteServer: "https://10.0.0.1:8443"}},
		{key: "remote-server", value: "livepatch.example.com", err: `invalid remote-server "livepatch.example.com": want http://host[:port] or https://host[:port]`},
		{key: "remote-server", value: "ftp://x", err: `invalid remote-server "ftp://x": want http://host[:port] or https://host[:port]`},
		{key: "check-interval", value: "30", want: Config{CheckInterval: interval(30)}},
		{key: "check-interval", value: "0", want: Config{CheckInterval: interval(0)}},
		{key: "check-interval", value: "-1", err: `invalid check-interval "-1": want a number of minutes from 0 to 10080`},
		{key: "check-interval", value: "hourly", err: `invalid check-interval "hourly": want a number of minutes from 0 to 10080`},
		{key: "dial-timeout", value: "5", want: Config{DialTimeout: "5s"}},
		{key: "dial-timeout", value: "1m30s", want: Config{DialTimeout: "1m30s"}},
		{key: "dial-timeout", value: "1h", err: `invalid dial-timeout "1h": want a duration such as 30s or 2m (or a number of seconds), from 1s to 10m0s`},
		{key: "request-timeout", value: "500ms", err: `invalid request-timeout "500ms": want a duration such as 30s or 2m (or a number of seconds), from 1s to 24h0m0s`},
		{key: "request-timeout", value: "soon", err: `invalid request-timeout "soon": want a duration such as 30s or 2m (or a number of seconds), from 1s to 24h0m0s`},
		{key: "request-timeout", value: "5m", want: Config{RequestTimeout: "5m0s"}},
		{key: "http-proxy", value: "http://user:secret@squid:3128", want: Config{HTTPProxy: "http://user:secret@squid:3128"}},
		{key: "https-proxy", value: "10.0.0.2:3128", want: Config{HTTPSProxy: "10.0.0.2:3128"}},
		{key: "http-proxy", value: "gopher://x", err: `invalid http-proxy "gopher://x": want a URL such as http://proxy.example.com:3128`},
		{key: "https-proxy", value: "gopher://bob:pw-s3cret@x", err: `invalid https-proxy "gopher://bob:xxxxx@x": want a URL such as http://proxy.example.com:3128`},
		{key: "no-proxy", value: "localhost,.internal,10.0.0.0/8", want: Config{NoProxy: "localhost,.internal,10.0.0.0/8"}},
		{key: "no-proxy", value: "a, b", err: `invalid no-proxy "a, b": want a comma-separated list without spaces`},
		{key: "trusted-key", value: pubB64, want: Config{TrustedKey: pubB64}},
		{key: "trusted-key", value: hex.EncodeToString(pub), want: Config{TrustedKey: pubB64}},
		{key: "trusted-key", value: pubPEM, want: Config{TrustedKey: pubB64}},
		{key: "trusted-key", value: pubB64 + ", " + hex.EncodeToString(pub2), want: Config{TrustedKey: pubB64 + "," + pub2B64}},
		{key: "trusted-key", value: pubPEM + pub2PEM, want: Config{TrustedKey: pubB64 + "," + pub2B64}},
		{key: "trusted-key", value: pubB64 + "," + pubB64, want: Config{TrustedKey: pubB64}},
		{key: "trusted-key", value: pubPEM + "junk", err: "invalid trusted-key: not an ed25519 public key: want the base64 or hex of its 32 bytes, or a PEM PUBLIC KEY block"},
		{key: "trusted-key", value: pubB64 + ",c2hvcnQ=", err: "invalid trusted-key: not an ed25519 public key: want the base64 or hex of its 32 bytes, or a PEM PUBLIC KEY block"},
		{key: "trusted-key", value: "c2hvcnQ=", err: "invalid trusted-key: not an ed25519 public key: want the base64 or hex of its 32 bytes, or a PEM PUBLIC KEY block"},
		{key: "mode", value: "no-apply", want: Config{Mode: ModeNoApply}},
		{key: "mode", value: "off", err: `invalid mode "off": want one of normal, no-apply, no-refresh, stop`},
		{key: "machine-id", value: "0123456789abcdef0123456789abcdef", want: Config{MachineID: "0123456789abcdef0123456789abcdef"}},
		{key: "machine-id", value: "a b", err: `invalid machine id "a b": use 1-128 letters, digits, dashes and underscores`},
		{key: "kernel", value: "6.8.0-31-lowlatency-64k", want: Config{Kernel: "6.8.0-31-lowlatency-64k"}},
		{key: "kernel", value: "6.8.0", err: `kernel release "6.8.0" is not of the form x.y.z-abi-flavour`},
		{key: "ca-certs", value: "not pem", err: "invalid ca-certs: not PEM certificates (want -----BEGIN CERTIFICATE----- blocks)"},
		{key: "ca-certs", value: pubPEM, err: `invalid ca-certs: found a "PUBLIC KEY" PEM block, want only CERTIFICATE blocks`},
		{key: "colour", value: "blue", err: `unknown config key "colour"`},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			var c Config
			err := c.Set(tt.key, tt.value)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("Set error = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Set: %v", err)
			}
			if diff := cmp.Diff(tt.want, c); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			// Setting the key empty clears it.
			if err := c.Set(tt.key, ""); err != nil {
				t.Fatalf("clear: %v", err)
			}
			if diff := cmp.Diff(Config{}, c); diff != "" {
				t.Errorf("after clearing (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigCACerts(t *testing.T) {
	var c Config
	pemText := testCert(t, "Example Root CA") + testCert(t, "Example Intermediate")
	if err := c.Set("ca-certs", pemText); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got := certSummary(c.CACerts)
	if !strings.HasPrefix(got, "2 certificates: Example Root CA (sha256 ") || !strings.Contains(got, "), Example Intermediate (sha256 ") {
		t.Errorf("summary = %q", got)
	}
}

func TestConfigShow(t *testing.T) {
	c := Config{}
	want := `
remote-server: ""
ca-certs: ""
check-interval: 60 # minutes (default)
dial-timeout: 12s # default
request-timeout: 1m0s # default
http-proxy: ""
https-proxy: ""
no-proxy: ""
trusted-key: ""
mode: normal # default
machine-id: 0123abcd # default: from /etc/machine-id
kernel: 5.15.0-107-generic # default: the running kernel
report-hostname: true # default
cutoff-date: ""
patch-delay: ""
`[1:]
	defaults := ConfigDefaults{MachineID: "0123abcd", Kernel: "5.15.0-107-generic"}
	if got := c.Show(defaults); got != want {
		t.Errorf("Show of an empty config:\n%s\nwant:\n%s", got, want)
	}

	for _, kv := range [][2]string{
		{"remote-server", "http://10.0.0.1:8080"},
		{"ca-certs", testCert(t, "Example Root CA")},
		{"check-interval", "30"},
		{"dial-timeout", "5"},
		{"request-timeout", "2m"},
		{"http-proxy", "http://proxy-user:hunter2@squid.internal:3128"},
		{"no-proxy", "10.0.0.0/8,.internal"},
		{"trusted-key", "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="},
		{"mode", "no-apply"},
		{"machine-id", "test-machine"},
		{"kernel", "5.15.0-108-generic"},
		{"cutoff-date", "2026-01-31"},
		{"patch-delay", "3d"},
	} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set %s: %v", kv[0], err)
		}
	}
	sum := certSummary(c.CACerts)
	want = (`
remote-server: http://10.0.0.1:8080
ca-certs: '` + sum + `'
check-interval: 30 # minutes
dial-timeout: 5s
request-timeout: 2m0s
http-proxy: http://proxy-user:xxxxx@squid.internal:3128
https-proxy: ""
no-proxy: 10.0.0.0/8,.internal
trusted-key: O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=
mode: no-apply
machine-id: test-machine
kernel: 5.15.0-108-generic
report-hostname: true # default
cutoff-date: "2026-01-31T00:00:00Z"
patch-delay: 3d
`)[1:]
	if got := c.Show(defaults); got != want {
		t.Errorf("Show:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasPrefix(sum, "1 certificate: Example Root CA (sha256 ") || !strings.HasSuffix(sum, ", expires 2034-01-01)") {
		t.Errorf("certificate summary = %q", sum)
	}
}

func TestConfigSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig of a missing file: %v", err)
	}
	if diff := cmp.Diff(&Config{}, c); diff != "" {
		t.Errorf("missing file (-want +got):\n%s", diff)
	}
	for _, kv := range [][2]string{{"remote-server", "http://h"}, {"check-interval", "0"}, {"ca-certs", testCert(t, "CA")}, {"mode", "stop"}} {
		if err := c.Set(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if m, explicit := got.IntervalMinutes(); m != 0 || !explicit {
		t.Errorf("IntervalMinutes = %d, %v; want 0, true", m, explicit)
	}

	// Unknown keys and bad values in the file are errors.
	for _, text := range []string{"colour: blue\n", "mode: sometimes\n", "check-interval: -5\n"} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err == nil {
			t.Errorf("LoadConfig of %q: no error", text)
		}
	}
}
