package server_test

import (
	"crypto/ed25519"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

// FuzzParsePatchFilename checks the filename parser never panics, accepts only names that
// round-trip, and never yields a name with a path separator.
func FuzzParsePatchFilename(f *testing.F) {
	for _, s := range []string{
		"livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2",
		"livepatch-6.8.0-31-lowlatency-64k-31.2-arm64.tar.bz2",
		"livepatch-5.15.0-107.117-107.1-amd64.tar.bz2",
		"livepatch-../../etc-x-1-a.tar.bz2",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := server.ParsePatchFilename(name)
		if err != nil {
			if server.ErrorCode(err) != server.CodeInvalid {
				t.Fatalf("error code %v", server.ErrorCode(err))
			}
			return
		}
		if p.Filename() != name {
			t.Fatalf("%q parsed to %+v which prints as %q", name, p, p.Filename())
		}
		for _, r := range name {
			if r == '/' || r == '\\' || r == 0 {
				t.Fatalf("accepted %q", name)
			}
		}
	})
}

// FuzzSplitKernelRelease checks kernel releases from machines never panic the selector.
func FuzzSplitKernelRelease(f *testing.F) {
	for _, s := range []string{"5.15.0-107-generic", "6.8.0-31-lowlatency-64k", "garbage", "1.2.3-4", "-"} {
		f.Add(s, "107.1")
	}
	c := server.NewCatalog([]server.Tier{{Name: "edge", Position: 1}}, []server.Patch{{
		Filename: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", Version: "107.1",
		Kernel: "5.15.0-107.117", Flavour: "generic", Architecture: "amd64", Tier: "edge",
	}})
	f.Fuzz(func(t *testing.T, release, version string) {
		abi, flavour, err := server.SplitKernelRelease(release)
		if err == nil && (abi == "" || flavour == "") {
			t.Fatalf("%q split into %q %q", release, abi, flavour)
		}
		c.Select("edge", release, "amd64")
		server.CompareVersions(version, "107.1")
		server.KernelAtLeast(release, "5.15.0")
	})
}

// FuzzSyncListPayload checks the checks a downstream runs on an upstream's patch list
// (after its signature verifies, so a compromised or buggy upstream) never panic, and that
// a list passing CheckTiers places every patch in one of its tiers.
func FuzzSyncListPayload(f *testing.F) {
	for _, s := range []string{
		`{"tier":"beta","tiers":["beta","stable"],"patches":[{"filename":"livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2","tier":"stable","sha256":"` + strings.Repeat("a", 64) + `","size":10,"signature":{"key-id":"0123456789abcdef","signature":"` + strings.Repeat("A", 88) + `"}}]}`,
		`{"tier":"stable","tiers":[],"patches":[{"tier":"x"}]}`,
		`{"tier":"a","tiers":["a","a"],"patches":null}`,
		`{"patches":[{"signature":{}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var l server.SyncList
		if json.Unmarshal(data, &l) != nil {
			return
		}
		for _, p := range l.Patches {
			if p.Signature != nil {
				p.Signature.Check()
			}
		}
		if l.CheckTiers() != nil {
			return
		}
		for _, p := range l.Patches {
			if !slices.Contains(l.Tiers, p.Tier) {
				t.Fatalf("CheckTiers accepted patch %q in tier %q, not one of %q", p.Filename, p.Tier, l.Tiers)
			}
		}
	})
}

// FuzzParsePublicKeys checks trusted-key values never panic the parser and every key it
// returns is an ed25519 public key that survives a round trip.
func FuzzParsePublicKeys(f *testing.F) {
	for _, s := range []string{
		"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=,O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=",
		"/etc/livepatch/signing.pub", ",", "",
		"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n",
		"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := server.ParsePublicKeys(s)
		if err != nil {
			return
		}
		for _, k := range keys {
			if len(k) != ed25519.PublicKeySize {
				t.Fatalf("%q gave a key of %d bytes", s, len(k))
			}
			again, err := server.ParsePublicKey(server.MarshalPublicKey(k))
			if err != nil || !again.Equal(k) {
				t.Fatalf("key %x does not round-trip: %v", k, err)
			}
			if server.KeyFor(keys, server.KeyID(k)) == nil {
				t.Fatalf("KeyFor does not find %s", server.KeyID(k))
			}
		}
	})
}
