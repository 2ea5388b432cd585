package server_test

import (
	"fmt"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestCatalogSelect(t *testing.T) {
	tiers := []server.Tier{{Name: "edge", Position: 1}, {Name: "beta", Position: 2}, {Name: "stable", Position: 3}}
	p := func(version, kernel, flavour, arch, tier string, blocked bool) server.Patch {
		name := server.PatchName{Kernel: kernel, Flavour: flavour, Version: version, Architecture: arch}
		return server.Patch{Filename: name.Filename(), Version: version, Kernel: kernel, Flavour: flavour, Architecture: arch, Tier: tier, Blocked: blocked}
	}
	patches := []server.Patch{
		p("107.1", "5.15.0-107.117", "generic", "amd64", "stable", false),
		p("107.2", "5.15.0-107.117", "generic", "amd64", "beta", false),
		p("107.10", "5.15.0-107.117", "generic", "amd64", "edge", false),
		p("107.3", "5.15.0-107.117", "generic", "amd64", "stable", true), // blocked
		p("107.1", "5.15.0-107.117", "lowlatency", "amd64", "edge", false),
		p("107.1", "5.15.0-107.117", "generic", "arm64", "stable", false),
		p("31.1", "6.8.0-31", "generic-64k", "arm64", "stable", false),
		p("9.1", "6.8.0-9", "generic", "amd64", "gone", false), // tier unknown: ignored
	}
	c := server.NewCatalog(tiers, patches)
	tests := []struct {
		tier, release, arch string
		want                string // version, "" for none
	}{
		{"edge", "5.15.0-107-generic", "amd64", "107.10"},
		{"beta", "5.15.0-107-generic", "amd64", "107.2"},
		{"stable", "5.15.0-107-generic", "amd64", "107.1"}, // 107.3 is blocked
		{"stable", "5.15.0-107-lowlatency", "amd64", ""},   // only in edge
		{"edge", "5.15.0-107-lowlatency", "amd64", "107.1"},
		{"stable", "5.15.0-107-generic", "arm64", "107.1"},
		{"stable", "5.15.0-107-generic", "s390x", ""},
		{"stable", "5.15.0-108-generic", "amd64", ""},
		{"stable", "6.8.0-31-generic-64k", "arm64", "31.1"},
		{"nosuch", "5.15.0-107-generic", "amd64", ""},
		{"edge", "garbage", "amd64", ""},
		{"edge", "6.8.0-9-generic", "amd64", ""},
	}
	for _, tt := range tests {
		got, ok := c.Select(tt.tier, tt.release, tt.arch)
		if (tt.want == "") == ok || got.Version != tt.want {
			t.Errorf("Select(%s, %s, %s) = %q, %v; want %q", tt.tier, tt.release, tt.arch, got.Version, ok, tt.want)
		}
	}
	// TierVersions: what Select answers for some kernel of the tier.
	for tier, want := range map[string]string{"edge": "[107.1 107.10 31.1]", "beta": "[107.1 107.2 31.1]", "stable": "[107.1 31.1]", "nosuch": "[]"} {
		if got := fmt.Sprint(c.TierVersions(tier)); got != want {
			t.Errorf("TierVersions(%s) = %s, want %s", tier, got, want)
		}
	}
}

func TestParsePatchFilename(t *testing.T) {
	tests := []struct {
		in   string
		want server.PatchName
		bad  bool
	}{
		{in: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", want: server.PatchName{Kernel: "5.15.0-107.117", Flavour: "generic", Version: "107.1", Architecture: "amd64"}},
		{in: "livepatch-6.8.0-31-lowlatency-64k-31.2-arm64.tar.bz2", want: server.PatchName{Kernel: "6.8.0-31", Flavour: "lowlatency-64k", Version: "31.2", Architecture: "arm64"}},
		{in: "livepatch-5.15.0-107.117-107.1-amd64.tar.bz2", bad: true},
		{in: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.gz", bad: true},
		{in: "livepatch-5.15-107-generic-107.1-amd64.tar.bz2", bad: true},
		{in: "livepatch-5.15.0-107-Gen/../x-107.1-amd64.tar.bz2", bad: true},
		{in: "../livepatch-5.15.0-107-generic-107.1-amd64.tar.bz2", bad: true},
	}
	for _, tt := range tests {
		got, err := server.ParsePatchFilename(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("ParsePatchFilename(%q) = %+v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want || got.Filename() != tt.in {
			t.Errorf("ParsePatchFilename(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"107.1", "107.1", 0}, {"107.1", "107.10", -1}, {"110.1", "107.9", 1}, {"107", "107.0", 0}, {"107.1", "107", 1},
	}
	for _, tt := range tests {
		if got := server.CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestCatalogKernelState(t *testing.T) {
	tiers := []server.Tier{{Name: "edge", Position: 1}, {Name: "stable", Position: 2}}
	patch := func(kernel, flavour, arch string, blocked bool) server.Patch {
		return server.Patch{Version: "1.1", Kernel: kernel, Flavour: flavour, Architecture: arch, Tier: "edge", Blocked: blocked}
	}
	c := server.NewCatalog(tiers, []server.Patch{
		patch("5.15.0-107.117", "generic", "amd64", false),
		patch("5.15.0-91.101", "generic", "amd64", false),
		patch("6.8.0-9", "generic", "amd64", true), // blocked: does not count
		patch("5.15.0-107.117", "aws", "arm64", false),
	})
	for _, tt := range []struct{ release, arch, want string }{
		{"5.15.0-107-generic", "amd64", server.KernelSupported},
		{"5.15.0-91-generic", "amd64", server.KernelSupported},
		{"5.15.0-88-generic", "amd64", server.KernelUpgradeRequired},
		{"5.4.0-200-generic", "amd64", server.KernelUpgradeRequired},
		{"5.15.0-110-generic", "amd64", server.KernelUnknown}, // newer than anything held
		{"6.8.0-9-generic", "amd64", server.KernelUnknown},
		{"5.15.0-88-aws", "arm64", server.KernelUpgradeRequired},
		{"5.15.0-88-lowlatency", "amd64", server.KernelUnknown},
		{"garbage", "amd64", server.KernelUnknown},
	} {
		if got := c.KernelState(tt.release, tt.arch); got != tt.want {
			t.Errorf("KernelState(%s, %s) = %s, want %s", tt.release, tt.arch, got, tt.want)
		}
	}
}
