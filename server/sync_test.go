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
