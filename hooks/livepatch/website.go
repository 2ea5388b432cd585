package livepatch

import (
	"context"
	"net/netip"
	"slices"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// websiteProxies returns the addresses the reverse proxies on the website relations
// connect from, for the server's trusted-proxies: each remote unit's egress-subnets (Juju
// sets them in every unit's relation data), else its ingress-address or private-address.
// Entries that are not addresses or CIDRs are left out: the server trusts nothing it
// cannot parse.
func websiteProxies(ctx context.Context, c *hooks.Context) ([]string, error) {
	ids, err := liveRelationIDs(ctx, c, WebsiteEndpoint)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		units, err := c.RelationList(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, unit := range units {
			data, err := c.RelationGet(ctx, id, unit)
			if err != nil {
				return nil, err
			}
			out = append(out, unitSources(data)...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// unitSources returns the source prefixes one remote unit's relation data names.
func unitSources(data map[string]string) []string {
	var out []string
	for _, s := range splitList(data["egress-subnets"]) {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked().String())
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, key := range []string{"ingress-address", "private-address"} {
		if a, err := netip.ParseAddr(data[key]); err == nil {
			a = a.Unmap()
			return []string{netip.PrefixFrom(a, a.BitLen()).String()}
		}
	}
	return nil
}
