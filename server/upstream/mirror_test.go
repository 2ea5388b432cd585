package upstream_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

// mirror returns the patch-sync config of a server that mirrors the tiers of up from tier
// onward, with token.
func mirror(up *node, token, tier string) config.PatchSync {
	cfg := follow(up, token, tier)
	cfg.SyncTiers = true
	return cfg
}

// tierNames returns n's tiers in promotion order.
func (n *node) tierNames() []string {
	n.t.Helper()
	tiers, err := n.db.Tiers(n.t.Context())
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for i, t := range tiers {
		if t.Position != i+1 {
			n.t.Errorf("%s: tier %s at position %d, want %d", n.name, t.Name, t.Position, i+1)
		}
		out = append(out, t.Name)
	}
	return out
}

// placement returns the tier of each of n's patches, by version.
func (n *node) placement() map[string]string {
	n.t.Helper()
	out := map[string]string{}
	for _, p := range n.patches() {
		out[p.Version] = p.Tier
	}
	return out
}

// wantNoop runs a sync of n that has nothing to do: it succeeds, adds nothing and
// changes nothing, not even n's catalog version.
func wantNoop(t *testing.T, n *node, s *upstream.Syncer) {
	t.Helper()
	before, err := n.db.CatalogVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(t.Context()), server.SyncSuccess, 0, "")
	if after, err := n.db.CatalogVersion(t.Context()); err != nil || after != before {
		t.Errorf("a sync of %s with nothing to do moved its catalog version from %d to %d (%v)", n.name, before, after, err)
	}
}

// wantMirror checks n's tiers, in order, and the tier of each of its patches, by version.
func wantMirror(t *testing.T, n *node, tiers []string, placement map[string]string) {
	t.Helper()
	if diff := cmp.Diff(tiers, n.tierNames()); diff != "" {
		t.Errorf("%s's tiers (-want +got):\n%s", n.name, diff)
	}
	if diff := cmp.Diff(placement, n.placement()); diff != "" {
		t.Errorf("%s's patches by tier (-want +got):\n%s", n.name, diff)
	}
}

// TestSyncTiers follows a's tiers from beta onward: b creates, deletes and reorders its
// tiers to match, places each patch in its upstream tier, follows promotions and
// demotions, and a run with nothing new changes nothing.
func TestSyncTiers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	// a: edge, beta, qa, stable (candidate deleted).
	if _, err := a.db.AddTier(ctx, "qa", server.TierPlacement{After: "beta"}); err != nil {
		t.Fatal(err)
	}
	if err := a.db.DeleteTier(ctx, "candidate"); err != nil {
		t.Fatal(err)
	}
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "edge") // before beta: not listed
	a.upload("5.15.0-108.118", "generic", "108.1", "amd64", "beta")
	a.upload("5.15.0-109.119", "generic", "109.1", "amd64", "qa")
	a.upload("5.15.0-110.120", "generic", "110.1", "amd64", "stable")
	// b has qa already, but first; and a patch of its own in candidate, which a lacks.
	if _, err := b.db.AddTier(ctx, "qa", server.TierPlacement{First: true}); err != nil {
		t.Fatal(err)
	}
	own := b.upload("6.8.0-31.31", "generic", "31.1", "amd64", "candidate")

	s := b.syncer(mirror(a, a.syncToken("b", "beta", nil), "beta"))
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 3, "")
	// b's own patch moved to the tier before its deleted one (beta), as DeleteTier does.
	wantMirror(t, b, []string{"beta", "qa", "stable"}, map[string]string{"108.1": "beta", "109.1": "qa", "110.1": "stable", "31.1": "beta"})
	if p := b.patches()[own.Filename]; p.Blocked || p.Source != server.SourceUpload {
		t.Errorf("b's own patch became %+v", p)
	}
	if !strings.Contains(b.log.String(), `"msg":"Mirrored the upstream's tiers"`) {
		t.Errorf("b's log does not say what mirroring changed:\n%s", b.log)
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.SyncTiers || st.Tier != "" || st.UpstreamTier != "beta" {
		t.Errorf("status = %+v, want sync-tiers and no landing tier", st)
	}

	wantNoop(t, b, s)

	// a promotes 108.1 to stable; a deletes qa, which demotes 109.1 to beta; a adds a
	// tier rc after beta, and a patch lands there.
	if _, err := a.db.PromotePatch(ctx, "108.1", "stable"); err != nil {
		t.Fatal(err)
	}
	if err := a.db.DeleteTier(ctx, "qa"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.AddTier(ctx, "rc", server.TierPlacement{After: "beta"}); err != nil {
		t.Fatal(err)
	}
	a.upload("5.15.0-111.121", "generic", "111.1", "amd64", "rc")
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 1, "")
	wantMirror(t, b, []string{"beta", "rc", "stable"}, map[string]string{"108.1": "stable", "109.1": "beta", "110.1": "stable", "111.1": "rc", "31.1": "beta"})
	wantNoop(t, b, s)
}

// TestSyncTiersBlocking: a synced patch the upstream blocks is blocked here with a reason
// naming the upstream, and unblocked when the upstream unblocks it; an administrator's
// block is never lifted, and patches uploaded here are never blocked by sync.
func TestSyncTiersBlocking(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	p1 := a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	p2 := a.upload("5.15.0-108.118", "generic", "108.1", "amd64", "stable")
	own := b.upload("6.8.0-31.31", "generic", "31.1", "amd64", "")
	s := b.syncer(mirror(a, a.syncToken("b", "stable", nil), "stable"))
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 2, "")

	if _, err := a.db.SetBlocked(ctx, "107.1", true, "regression on a"); err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	got := b.patches()
	wantReason := `the upstream at ` + a.srv.URL + ` no longer lists it in tier "stable" or later (blocked, removed or demoted there; patch-sync.sync-tiers)`
	if p := got[p1.Filename]; !p.Blocked || p.BlockReason != wantReason {
		t.Errorf("b's %s = blocked %v %q, want blocked with %q", p1.Filename, p.Blocked, p.BlockReason, wantReason)
	}
	if got[p2.Filename].Blocked || got[own.Filename].Blocked {
		t.Errorf("b blocked more than %s: %+v", p1.Filename, got)
	}
	wantNoop(t, b, s)

	if _, err := a.db.SetBlocked(ctx, "107.1", false, ""); err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	if p := b.patches()[p1.Filename]; p.Blocked || p.BlockReason != "" {
		t.Errorf("b's %s stays blocked after a unblocked it: %+v", p1.Filename, p)
	}

	// b's administrator blocks 108.1 and it disappears upstream, then comes back: the
	// block and its reason stay.
	if _, err := b.db.SetBlocked(ctx, "108.1", true, "crashes our fleet"); err != nil {
		t.Fatal(err)
	}
	for _, blocked := range []bool{true, false} {
		if _, err := a.db.SetBlocked(ctx, "108.1", blocked, "x"); err != nil {
			t.Fatal(err)
		}
		wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
		if p := b.patches()[p2.Filename]; !p.Blocked || p.BlockReason != "crashes our fleet" {
			t.Errorf("a blocked %v: b's %s = blocked %v %q, want b's administrator's block", blocked, p2.Filename, p.Blocked, p.BlockReason)
		}
	}
	// An administrator's unblock of a patch the upstream no longer lists lasts until the
	// next sync: the upstream decides.
	if _, err := a.db.SetBlocked(ctx, "107.1", true, "again"); err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	if _, err := b.db.SetBlocked(ctx, "107.1", false, ""); err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	if p := b.patches()[p1.Filename]; !p.Blocked || p.BlockReason != wantReason {
		t.Errorf("b's %s = %+v, want blocked again by sync", p1.Filename, p)
	}
	if p := b.patches()[own.Filename]; p.Blocked {
		t.Errorf("sync blocked b's own upload: %+v", p)
	}
}

// TestSyncTiersInUse: a local tier the upstream does not have but that machines or
// tokens use is kept, and the report says what to do; everything else is mirrored. Once
// freed, the next sync deletes it.
func TestSyncTiersInUse(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "beta")
	a.upload("5.15.0-108.118", "generic", "108.1", "amd64", "stable")
	// b's fleet uses its edge tier: a machine enrolled with an auth token, and a
	// downstream of b syncs it.
	authToken := server.NewUUID()
	if _, err := b.db.CreateAuthToken(ctx, server.NewAuthToken{ID: "fleet", Tier: "edge", Hash: server.HashToken(authToken)}); err != nil {
		t.Fatal(err)
	}
	machineToken := server.HashToken(server.NewToken())
	if _, err := b.db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken(authToken), MachineID: "m1", MachineTokenHash: machineToken}, time.Now()); err != nil {
		t.Fatal(err)
	}
	b.syncToken("c", "edge", nil)

	s := b.syncer(mirror(a, a.syncToken("b", "beta", nil), "beta"))
	wantReport(t, s.SyncOnce(ctx), server.SyncFailed, 2,
		`tier "edge" is not on the upstream but was kept: it is used by 1 machine, 1 auth token, 1 sync token; move them to a tier of the upstream (beta, candidate, stable) and the next sync deletes it`)
	// edge stays where it was: before the upstream's tiers.
	wantMirror(t, b, []string{"edge", "beta", "candidate", "stable"}, map[string]string{"107.1": "beta", "108.1": "stable"})
	wantReport(t, s.SyncOnce(ctx), server.SyncFailed, 0, `tier "edge" is not on the upstream but was kept`)

	// The operator frees edge.
	if err := b.db.Disable(ctx, "m1", machineToken); err != nil {
		t.Fatal(err)
	}
	if err := b.db.RevokeAuthToken(ctx, "fleet"); err != nil {
		t.Fatal(err)
	}
	if err := b.db.RevokeSyncToken(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	wantReport(t, s.SyncOnce(ctx), server.SyncSuccess, 0, "")
	wantMirror(t, b, []string{"beta", "candidate", "stable"}, map[string]string{"107.1": "beta", "108.1": "stable"})
}

// TestSyncTiersChain mirrors tiers down a chain a -> b -> c: b mirrors a from beta, c
// mirrors b from candidate.
func TestSyncTiersChain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a").start()
	b := newNode(t, "b").start()
	c := newNode(t, "c").start()
	if _, err := a.db.AddTier(ctx, "lts", server.TierPlacement{}); err != nil {
		t.Fatal(err)
	}
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "beta")
	a.upload("5.15.0-108.118", "generic", "108.1", "amd64", "candidate")
	a.upload("5.15.0-109.119", "generic", "109.1", "amd64", "lts")
	sb := b.syncer(mirror(a, a.syncToken("b", "beta", nil), "beta"))
	sc := c.syncer(mirror(b, b.syncToken("c", "candidate", nil), "candidate"))
	syncBoth := func(addedB, addedC int) {
		t.Helper()
		wantReport(t, sb.SyncOnce(ctx), server.SyncSuccess, addedB, "")
		wantReport(t, sc.SyncOnce(ctx), server.SyncSuccess, addedC, "")
	}
	syncBoth(3, 2)
	wantMirror(t, b, []string{"beta", "candidate", "stable", "lts"}, map[string]string{"107.1": "beta", "108.1": "candidate", "109.1": "lts"})
	wantMirror(t, c, []string{"candidate", "stable", "lts"}, map[string]string{"108.1": "candidate", "109.1": "lts"})

	// a promotes 107.1 to stable and blocks 108.1: both travel down the chain.
	if _, err := a.db.PromotePatch(ctx, "107.1", "stable"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.SetBlocked(ctx, "108.1", true, "regression"); err != nil {
		t.Fatal(err)
	}
	syncBoth(0, 1)
	placement := map[string]string{"107.1": "stable", "108.1": "candidate", "109.1": "lts"}
	wantMirror(t, b, []string{"beta", "candidate", "stable", "lts"}, placement)
	wantMirror(t, c, []string{"candidate", "stable", "lts"}, placement)
	for _, n := range []*node{b, c} {
		for _, p := range n.patches() {
			if p.Blocked != (p.Version == "108.1") {
				t.Errorf("%s's %s: blocked %v", n.name, p.Filename, p.Blocked)
			}
		}
	}
	wantNoop(t, b, sb)
	wantNoop(t, c, sc)
}

// TestSyncTiersOlderUpstream: an upstream whose lists do not name their tiers cannot be
// mirrored; the run fails before anything changes.
func TestSyncTiersOlderUpstream(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newNode(t, "a")
	// a answers as a server without tier mirroring did: no tiers in its lists.
	a.relist(func(list *server.SyncList) {
		list.Tiers = nil
		for i := range list.Patches {
			list.Patches[i].Tier = ""
		}
	})
	a.start()
	b := newNode(t, "b").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")
	wantReport(t, b.syncer(mirror(a, a.syncToken("b", "stable", nil), "stable")).SyncOnce(ctx), server.SyncFailed, 0,
		"the upstream's tiers cannot be mirrored: the upstream at "+a.srv.URL+" does not list its tiers (a server without tier mirroring?): upgrade it, or turn patch-sync.sync-tiers off")
	wantMirror(t, b, server.DefaultTiers, map[string]string{})
	// Without sync-tiers the same upstream is fine.
	wantReport(t, b.syncer(follow(a, a.syncToken("b2", "stable", nil), "stable")).SyncOnce(ctx), server.SyncSuccess, 1, "")
}
