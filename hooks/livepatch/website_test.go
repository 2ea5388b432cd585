package livepatch_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
)

// TestTrustedProxiesFollowWebsite checks that the server trusts X-Forwarded-For from the
// haproxy units on the website relation, and from nothing else.
func TestTrustedProxiesFollowWebsite(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	e.Install(t, st)
	rel := &st.Relations[len(st.Relations)-1]
	if rel.Endpoint != livepatch.WebsiteEndpoint {
		t.Fatalf("last relation of Ready is %s, want website", rel.Endpoint)
	}
	rel.RemoteUnits["haproxy/1"] = map[string]string{"egress-subnets": "10.0.1.0/24, 10.0.2.7/32", "private-address": "10.0.1.5"}
	rel.RemoteUnits["haproxy/2"] = map[string]string{"ingress-address": "fd00::7", "private-address": "10.9.9.9"}
	rel.RemoteUnits["haproxy/3"] = map[string]string{"egress-subnets": "anywhere", "private-address": "not-an-address"}
	res := e.H.Run(t, "website-relation-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	want := []string{"10.0.0.2/32", "10.0.1.0/24", "10.0.2.7/32", "fd00::7/128"}
	if diff := cmp.Diff(want, loadRendered(t, e).Server.TrustedProxies); diff != "" {
		t.Errorf("trusted proxies (-want +got):\n%s", diff)
	}
	st = res.State
	st.Relations = without(st.Relations, livepatch.WebsiteEndpoint)
	if res := e.H.Run(t, "config-changed", st); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := loadRendered(t, e).Server.TrustedProxies; len(got) != 0 {
		t.Errorf("without haproxy the server trusts %v", got)
	}
}
