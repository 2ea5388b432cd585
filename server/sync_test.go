package server_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestSignedSyncList(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	list := server.SyncList{Tier: "stable", GeneratedAt: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), Patches: []server.SyncPatch{{
		Filename: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", Version: "107.1", Kernel: "5.15.0-107.117",
		Flavour: "generic", Architecture: "amd64", SHA256: strings.Repeat("a", 64), Size: 10, Module: "lkp", URL: "/v1/patches/x",
	}}}
	signed, err := server.SignSyncList(list, key)
	if err != nil {
		t.Fatal(err)
	}
	if signed.KeyID != server.KeyID(pub) || len(signed.KeyID) != 16 {
		t.Errorf("key id %q, want %q (16 hex digits)", signed.KeyID, server.KeyID(pub))
	}
	got, err := signed.Verify(pub)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(list, got); diff != "" {
		t.Errorf("verified list (-want +got):\n%s", diff)
	}
	if _, err := signed.Verify(nil); err != nil {
		t.Errorf("Verify without a key: %v", err)
	}
	_, err = signed.Verify(otherPub)
	if !errors.Is(err, server.ErrBadSignature) || !strings.Contains(err.Error(), "signed by key "+server.KeyID(pub)+", not by the trusted key "+server.KeyID(otherPub)) {
		t.Errorf("Verify with another key: %v", err)
	}
	tampered := signed
	tampered.Payload = bytes.Replace(signed.Payload, []byte(`"size":10`), []byte(`"size":11`), 1)
	if _, err := tampered.Verify(pub); !errors.Is(err, server.ErrBadSignature) || !strings.Contains(err.Error(), "does not verify with the trusted key") {
		t.Errorf("Verify of a changed payload: %v", err)
	}
}

func TestPatchSignature(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, otherKey, _ := ed25519.GenerateKey(nil)
	const name = "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2"
	sum := strings.Repeat("ab", 32)
	sig := server.SignPatch(key, name, sum, 4096)
	if err := sig.Check(); err != nil || sig.KeyID != server.KeyID(pub) {
		t.Fatalf("signature %+v: Check %v", sig, err)
	}
	if err := server.VerifyPatch(pub, sig, name, sum, 4096); err != nil {
		t.Fatalf("VerifyPatch: %v", err)
	}
	// The signature is of the message, which says what it is: a list payload (JSON) signed
	// by the same key can never pass for it.
	if msg := string(server.PatchSignedMessage(name, sum, 4096)); msg != "livepatch patch signature v1\n"+name+"\n"+sum+"\n4096\n" {
		t.Errorf("signed message %q", msg)
	}
	forged := &server.PatchSignature{KeyID: sig.KeyID, Signature: server.SignPatch(otherKey, name, sum, 4096).Signature}
	for _, tt := range []struct {
		name      string
		sig       *server.PatchSignature
		file, sum string
		size      int64
		want      string
		trusted   ed25519.PublicKey
	}{
		{name: "unsigned", file: name, sum: sum, size: 4096, trusted: pub,
			want: "bad signature: the patch is not signed, and the trusted key " + server.KeyID(pub) + " requires a signature"},
		{name: "other key", sig: sig, file: name, sum: sum, size: 4096, trusted: otherPub,
			want: "bad signature: the patch is signed by key " + server.KeyID(pub) + ", not by the trusted key " + server.KeyID(otherPub)},
		{name: "forged under the key id", sig: forged, file: name, sum: sum, size: 4096, trusted: pub,
			want: "bad signature: the patch signature does not verify with the trusted key " + server.KeyID(pub)},
		{name: "other file name", sig: sig, file: strings.Replace(name, "107.1", "107.2", 1), sum: sum, size: 4096, trusted: pub,
			want: "bad signature: the patch signature does not verify with the trusted key " + server.KeyID(pub)},
		{name: "other contents", sig: sig, file: name, sum: strings.Repeat("cd", 32), size: 4096, trusted: pub,
			want: "bad signature: the patch signature does not verify with the trusted key " + server.KeyID(pub)},
		{name: "other size", sig: sig, file: name, sum: sum, size: 4097, trusted: pub,
			want: "bad signature: the patch signature does not verify with the trusted key " + server.KeyID(pub)},
	} {
		err := server.VerifyPatch(tt.trusted, tt.sig, tt.file, tt.sum, tt.size)
		if !errors.Is(err, server.ErrBadSignature) || err.Error() != tt.want {
			t.Errorf("%s: VerifyPatch = %v\nwant %s", tt.name, err, tt.want)
		}
	}
	for _, bad := range []server.PatchSignature{
		{KeyID: "xyz", Signature: sig.Signature},
		{KeyID: strings.ToUpper(sig.KeyID) + "Z", Signature: sig.Signature},
		{KeyID: sig.KeyID, Signature: sig.Signature[:63]},
		{KeyID: sig.KeyID},
	} {
		if err := bad.Check(); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("Check(%+v) = %v, want invalid", bad, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	for _, s := range []string{
		server.MarshalPublicKey(pub), base64.RawStdEncoding.EncodeToString(pub),
		base64.URLEncoding.EncodeToString(pub), " " + server.MarshalPublicKey(pub) + "\n",
	} {
		if got, err := server.ParsePublicKey(s); err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(key)} {
		if _, err := server.ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", s)
		}
	}
	pemKey, err := server.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{pemKey, []byte(base64.StdEncoding.EncodeToString(key))} {
		if got, err := server.ParsePrivateKey(data); err != nil || !got.Equal(key) {
			t.Errorf("ParsePrivateKey(%.30q) = %v", data, err)
		}
	}
	inconsistent := append(append([]byte(nil), key.Seed()...), make([]byte, 32)...)
	for name, data := range map[string][]byte{
		"seed":         []byte(base64.StdEncoding.EncodeToString(key.Seed())),
		"public key":   []byte(server.MarshalPublicKey(pub)),
		"inconsistent": []byte(base64.StdEncoding.EncodeToString(inconsistent)),
		"bad PEM":      []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
	} {
		if _, err := server.ParsePrivateKey(data); err == nil {
			t.Errorf("ParsePrivateKey(%s) succeeded", name)
		}
	}
}

func TestSyncMachineCheck(t *testing.T) {
	st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied}
	good := server.SyncMachine{ID: strings.Repeat("0f", 32), Tier: "stable", Status: st}
	if err := good.Check(); err != nil {
		t.Errorf("Check(good) = %v", err)
	}
	for name, m := range map[string]server.SyncMachine{
		"raw id":    {ID: "4c4c4544003957108052b4c04f384e32", Status: st},
		"upper hex": {ID: strings.Repeat("0F", 32), Status: st},
		"bad tier":  {ID: good.ID, Tier: "Bad Tier", Status: st},
		"bad state": {ID: good.ID, Status: server.Status{Kernel: st.Kernel, Architecture: "amd64", PatchState: "great"}},
	} {
		if err := m.Check(); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("Check(%s) = %v, want invalid", name, err)
		}
	}
	if server.CheckDeploymentID("0f1e2d3c-aaaa-bbbb-cccc-000000000000") != nil || server.CheckDeploymentID("") == nil || server.CheckDeploymentID("a b") == nil {
		t.Errorf("CheckDeploymentID accepts or refuses the wrong ids")
	}
}

func TestSyncListCheckTiers(t *testing.T) {
	patch := func(tier string) server.SyncPatch {
		return server.SyncPatch{Filename: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", Tier: tier}
	}
	for _, tt := range []struct {
		name string
		list server.SyncList
		want string // "" = valid
	}{
		{"valid", server.SyncList{Tier: "beta", Tiers: []string{"beta", "stable"}, Patches: []server.SyncPatch{patch("beta"), patch("stable")}}, ""},
		{"no tiers: an older upstream", server.SyncList{Tier: "beta", Patches: []server.SyncPatch{patch("")}}, "the list does not name the upstream's tiers"},
		{"another tier first", server.SyncList{Tier: "beta", Tiers: []string{"edge", "beta"}}, `the list of tier "beta" names tier "edge" first`},
		{"twice", server.SyncList{Tier: "beta", Tiers: []string{"beta", "stable", "beta"}}, `the list names tier "beta" twice`},
		{"bad name", server.SyncList{Tier: "beta", Tiers: []string{"beta", "Stable"}}, `invalid tier name "Stable"`},
		{"patch elsewhere", server.SyncList{Tier: "beta", Tiers: []string{"beta"}, Patches: []server.SyncPatch{patch("edge")}},
			`the list puts livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2 in tier "edge", which is not one of its tiers`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.list.CheckTiers()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("CheckTiers() = %v, want %q", err, tt.want)
			}
		})
	}
}
