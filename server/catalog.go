package server

import (
	"slices"
	"strings"
)

// Catalog is the in-memory view of tiers and patches that the check-in path selects from,
// so that choosing a patch costs no database round trip.
type Catalog struct {
	positions map[string]int
	// byKey indexes non-blocked patches by kernel ABI, flavour and architecture, newest first.
	byKey map[catalogKey][]catalogEntry
	// newest holds, per flavour and architecture, the newest kernel ABI with a patch.
	newest map[[2]string]string
}

type catalogKey struct{ abi, flavour, arch string }

type catalogEntry struct {
	patch    Patch
	position int
}

// NewCatalog builds a catalog from the tiers and every patch.
func NewCatalog(tiers []Tier, patches []Patch) *Catalog {
	c := &Catalog{positions: make(map[string]int, len(tiers)), byKey: make(map[catalogKey][]catalogEntry), newest: map[[2]string]string{}}
	for _, t := range tiers {
		c.positions[t.Name] = t.Position
	}
	for _, p := range patches {
		pos, ok := c.positions[p.Tier]
		if p.Blocked || !ok {
			continue
		}
		k := catalogKey{KernelABI(p.Kernel), p.Flavour, p.Architecture}
		c.byKey[k] = append(c.byKey[k], catalogEntry{p, pos})
		fa := [2]string{p.Flavour, p.Architecture}
		if n, ok := c.newest[fa]; !ok || compareKernels(k.abi, n) > 0 {
			c.newest[fa] = k.abi
		}
	}
	for _, entries := range c.byKey {
		slices.SortFunc(entries, func(a, b catalogEntry) int {
			return CompareVersions(b.patch.Version, a.patch.Version) // newest first
		})
	}
	return c
}

// TierPosition returns a tier's position, or 0 when there is no such tier.
func (c *Catalog) TierPosition(tier string) int { return c.positions[tier] }

// Select returns the patch a machine in tier running kernel release (uname -r) on arch
// should have: the newest non-blocked patch for its kernel ABI, flavour and architecture
// that has been promoted at least as far as the machine's tier. ok is false when there is
// none.
func (c *Catalog) Select(tier, release, arch string) (p Patch, ok bool) {
	pos := c.positions[tier]
	if pos == 0 {
		return Patch{}, false
	}
	abi, flavour, err := SplitKernelRelease(release)
	if err != nil {
		return Patch{}, false
	}
	for _, e := range c.byKey[catalogKey{abi, flavour, strings.ToLower(arch)}] {
		if e.position >= pos {
			return e.patch, true
		}
	}
	return Patch{}, false
}

// TierVersions returns the versions Select answers for some kernel in tier, sorted: the
// patches its machines are offered now (what a rollout in the tier may still be about).
func (c *Catalog) TierVersions(tier string) []string {
	pos := c.positions[tier]
	if pos == 0 {
		return nil
	}
	var out []string
	for _, entries := range c.byKey {
		for _, e := range entries {
			if e.position >= pos {
				out = append(out, e.patch.Version)
				break
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// KernelState says whether a kernel release on arch is covered by the patches held, in
// any tier (see KernelSupported and the other states).
func (c *Catalog) KernelState(release, arch string) string {
	abi, flavour, err := SplitKernelRelease(release)
	if err != nil {
		return KernelUnknown
	}
	arch = strings.ToLower(arch)
	if len(c.byKey[catalogKey{abi, flavour, arch}]) > 0 {
		return KernelSupported
	}
	if n, ok := c.newest[[2]string{flavour, arch}]; ok && compareKernels(n, abi) > 0 {
		return KernelUpgradeRequired
	}
	return KernelUnknown
}

// compareKernels orders kernel ABIs such as "5.15.0-107" numerically.
func compareKernels(a, b string) int {
	return CompareVersions(strings.Replace(a, "-", ".", 1), strings.Replace(b, "-", ".", 1))
}

// Offer turns a patch into the offer a client receives, with its download URL.
func Offer(p Patch, urlTemplate string) *PatchOffer {
	return &PatchOffer{
		Version:   p.Version,
		Filename:  p.Filename,
		URL:       strings.ReplaceAll(urlTemplate, "{filename}", p.Filename),
		SHA256:    p.SHA256,
		Size:      p.Size,
		Module:    p.Module,
		Fixes:     p.Fixes,
		Signature: p.Signature,
		Published: p.CreatedAt,
	}
}
