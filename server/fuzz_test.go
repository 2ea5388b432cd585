package server_test

import (
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
