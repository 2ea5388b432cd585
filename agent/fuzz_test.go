package agent

import (
	"crypto/ed25519"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

// FuzzVerifySignature checks that trusted-key values and offers from a server never panic
// the signature check, and that an offer passes only with a signature by a trusted key.
func FuzzVerifySignature(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := server.MarshalPublicKey(key.Public().(ed25519.PublicKey))
	sig := server.SignPatch(key, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", "ab", 10)
	f.Add(pub, sig.KeyID, sig.Signature, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", "ab", int64(10))
	f.Add(pub+","+pub, sig.KeyID, sig.Signature[:10], "x", "ab", int64(-1))
	f.Add("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n", "", []byte(nil), "", "", int64(0))
	f.Fuzz(func(t *testing.T, trusted, keyID string, signature []byte, filename, sha string, size int64) {
		c := &Config{TrustedKey: trusted}
		offer := &server.PatchOffer{Version: "1", Filename: filename, SHA256: sha, Size: size,
			Signature: &server.PatchSignature{KeyID: keyID, Signature: signature}}
		if verifySignature(c, offer) != nil || trusted == "" {
			return
		}
		keys, err := parseTrustedKeys(trusted)
		if err != nil {
			t.Fatalf("accepted with a trusted-key that does not parse: %v", err)
		}
		k := server.KeyFor(keys, keyID)
		if k == nil || !ed25519.Verify(k, server.PatchSignedMessage(filename, sha, size), signature) {
			t.Fatalf("accepted an offer not signed by a trusted key (%q, key id %q)", trusted, keyID)
		}
	})
}
