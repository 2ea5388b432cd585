package server_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func publicPEM(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// TestParsePublicKeys checks the forms every trusted-key setting accepts and refuses.
func TestParsePublicKeys(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	pub2, _, _ := ed25519.GenerateKey(nil)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64, b64two := base64.StdEncoding.EncodeToString(pub), base64.StdEncoding.EncodeToString(pub2)
	pem1, pem2 := publicPEM(t, pub), publicPEM(t, pub2)
	privPEM, err := server.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	const notKey = "not an ed25519 public key: want the base64 or hex of its 32 bytes, or a PEM PUBLIC KEY block"
	one, two := []ed25519.PublicKey{pub}, []ed25519.PublicKey{pub, pub2}
	tests := []struct {
		name, in string
		want     []ed25519.PublicKey
		err      string
	}{
		{name: "standard base64", in: b64, want: one},
		{name: "unpadded base64", in: base64.RawStdEncoding.EncodeToString(pub), want: one},
		{name: "URL base64", in: base64.URLEncoding.EncodeToString(pub), want: one},
		{name: "unpadded URL base64", in: base64.RawURLEncoding.EncodeToString(pub), want: one},
		{name: "hex", in: hex.EncodeToString(pub), want: one},
		{name: "PEM", in: pem1, want: one},
		{name: "signing.pub with its newline", in: b64 + "\n", want: one},
		{name: "comma-separated", in: b64 + "," + b64two, want: two},
		{name: "comma and space", in: b64 + ", " + hex.EncodeToString(pub2), want: two},
		{name: "one per line", in: b64 + "\n" + b64two + "\n", want: two},
		{name: "PEM blocks one after the other", in: pem1 + pem2, want: two},
		{name: "PEM then base64", in: pem1 + b64two, want: two},
		{name: "base64 then PEM", in: b64 + "\n" + pem2, want: two},
		{name: "twice counts once", in: b64 + "," + hex.EncodeToString(pub) + "," + pem1, want: one},
		{name: "empty", in: "", err: "no public key given"},
		{name: "separators only", in: " ,\n", err: "no public key given"},
		{name: "too short", in: "c2hvcnQ=", err: notKey},
		{name: "one bad of two", in: b64 + ",c2hvcnQ=", err: notKey},
		{name: "private key base64", in: base64.StdEncoding.EncodeToString(priv), err: notKey},
		{name: "private key PEM", in: string(privPEM), err: notKey},
		{name: "ECDSA PEM", in: publicPEM(t, &ec.PublicKey), err: "not an ed25519 public key: a *ecdsa.PublicKey"},
		{name: "text after PEM", in: pem1 + "junk", err: notKey},
		{name: "PEM without END", in: "-----BEGIN PUBLIC KEY-----\n" + b64 + "\n", err: "not an ed25519 public key: a PEM block without its END line"},
		{name: "a path", in: "/etc/livepatch/signing.pub", err: notKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := server.ParsePublicKeys(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("ParsePublicKeys error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParsePublicKeys (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadPublicKeys checks that a key setting holds keys or the path of a file of keys.
func TestLoadPublicKeys(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	pub2, _, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	keys := filepath.Join(dir, "signing.pub")
	if err := os.WriteFile(keys, []byte(server.MarshalPublicKey(pub)+"\n"+publicPEM(t, pub2)), 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pub")
	if err := os.WriteFile(junk, []byte("junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := server.LoadPublicKeys("trusted-key", server.MarshalPublicKey(pub))
	if err != nil || !got[0].Equal(pub) || len(got) != 1 {
		t.Errorf("LoadPublicKeys(key) = %v, %v", got, err)
	}
	got, err = server.LoadPublicKeys("trusted-key", keys)
	if diff := cmp.Diff([]ed25519.PublicKey{pub, pub2}, got); err != nil || diff != "" {
		t.Errorf("LoadPublicKeys(file) = %v (-want +got):\n%s", err, diff)
	}
	missing := filepath.Join(dir, "missing.pub")
	for in, want := range map[string]string{
		missing: "trusted-key is neither an ed25519 public key nor a readable file: open " + missing + ": no such file or directory",
		junk:    "trusted-key file " + junk + ": not an ed25519 public key",
	} {
		if _, err := server.LoadPublicKeys("trusted-key", in); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("LoadPublicKeys(%s) error %v, want %q", in, err, want)
		}
	}
}
