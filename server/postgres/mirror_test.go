package postgres_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func listed(p server.Patch, tier string) server.SyncPatch {
	return server.SyncPatch{Filename: p.Filename, Version: p.Version, SHA256: p.SHA256, Size: p.Size, Tier: tier}
}

func TestMirrorTiers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	add := func(p server.Patch) server.Patch { return must[server.Patch](t)(db.AddPatch(ctx, p)) }
	// Local: edge, beta, prod (used by an auth token), candidate, stable.
	must[server.Tier](t)(db.AddTier(ctx, "prod", server.TierPlacement{After: "beta"}))
	must[server.AuthToken](t)(db.CreateAuthToken(ctx, server.NewAuthToken{ID: "fleet", Tier: "prod", Hash: server.HashToken("t")}))
	moved := add(withTier(testPatch("107.1", "amd64"), "edge"))
	demoted := add(withTier(testPatch("107.2", "amd64"), "stable"))
	gone := add(withTier(testPatch("107.3", "amd64"), "beta")) // synced, no longer listed
	upload := withTier(testPatch("107.4", "amd64"), "candidate")
	upload.Source = server.SourceUpload
	upload = add(upload) // not listed: only moves out of its deleted tier
	same := withTier(testPatch("107.5", "amd64"), "edge")
	same.Source = server.SourceUpload
	same = add(same) // an upload of the file the upstream lists: placed like it
	other := add(withTier(testPatch("107.6", "amd64"), "edge"))
	otherListing := listed(other, "stable")
	otherListing.SHA256 = "ff" + other.SHA256[2:] // another file of that name: left alone

	m := server.TierMirror{
		Tiers: []string{"beta", "rc", "stable"},
		Patches: []server.SyncPatch{
			listed(moved, "rc"), listed(demoted, "beta"), listed(same, "stable"), otherListing,
		},
		BlockReason: "gone upstream",
	}
	res := must[server.TierMirrorResult](t)(db.MirrorTiers(ctx, m))
	want := server.TierMirrorResult{
		Created: []string{"rc"},
		Deleted: []string{"edge", "candidate"},
		Kept:    []server.KeptTier{{Name: "prod", UsedBy: "1 auth token"}},
		Moved:   []string{moved.Filename, demoted.Filename, upload.Filename, same.Filename, other.Filename},
		Blocked: []string{gone.Filename},
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("MirrorTiers() (-want +got):\n%s", diff)
	}
	// prod, in use, stays after beta, the upstream tier it followed.
	if diff := cmp.Diff([]string{"beta", "prod", "rc", "stable"}, tierNames(t, db)); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}
	got := map[string]server.Patch{}
	for _, p := range must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{})) {
		got[p.Version] = p
	}
	tiers := map[string]string{}
	for v, p := range got {
		tiers[v] = p.Tier
	}
	// The upload in candidate goes to prod, the tier before it that stays; 107.6 in edge
	// to the first tier.
	if diff := cmp.Diff(map[string]string{"107.1": "rc", "107.2": "beta", "107.3": "beta", "107.4": "prod", "107.5": "stable", "107.6": "beta"}, tiers); diff != "" {
		t.Errorf("patch tiers (-want +got):\n%s", diff)
	}
	for v, p := range got {
		if p.Blocked != (v == "107.3") || (v == "107.3" && p.BlockReason != "gone upstream") {
			t.Errorf("%s: blocked %v %q", v, p.Blocked, p.BlockReason)
		}
	}

	// Again: nothing to do, nothing written.
	version := must[int64](t)(db.CatalogVersion(ctx))
	res = must[server.TierMirrorResult](t)(db.MirrorTiers(ctx, m))
	if res.Changed() || len(res.Kept) != 1 {
		t.Errorf("second MirrorTiers() = %+v, want no change", res)
	}
	if v := must[int64](t)(db.CatalogVersion(ctx)); v != version {
		t.Errorf("a no-op mirror moved the catalog version from %d to %d", version, v)
	}

	// Listed again: sync lifts its own block. An administrator's block stays, listed or not.
	must[int](t)(db.SetBlocked(ctx, "107.1", true, "ours"))
	m.Patches = append(m.Patches, listed(gone, "beta"))
	res = must[server.TierMirrorResult](t)(db.MirrorTiers(ctx, m))
	if diff := cmp.Diff([]string{gone.Filename}, res.Unblocked); diff != "" || len(res.Blocked) != 0 {
		t.Errorf("unblocked (-want +got):\n%s\nblocked %v", diff, res.Blocked)
	}
	m.Patches = m.Patches[1:] // 107.1 no longer listed
	res = must[server.TierMirrorResult](t)(db.MirrorTiers(ctx, m))
	if res.Changed() {
		t.Errorf("MirrorTiers() of an administrator's block = %+v, want no change", res)
	}
	for _, p := range must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{Version: "107.1"})) {
		if !p.Blocked || p.BlockReason != "ours" {
			t.Errorf("107.1: blocked %v %q, want the administrator's block", p.Blocked, p.BlockReason)
		}
	}
	m.Patches = append(m.Patches, listed(moved, "rc"))
	if res = must[server.TierMirrorResult](t)(db.MirrorTiers(ctx, m)); res.Changed() {
		t.Errorf("MirrorTiers() of an administrator's block, listed again = %+v, want no change", res)
	}
}

func TestMirrorTiersInvalid(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	for _, m := range []server.TierMirror{
		{},
		{Tiers: []string{"beta", "beta"}},
		{Tiers: []string{"Bad Name"}},
		{Tiers: []string{"beta"}, Patches: []server.SyncPatch{listed(must[server.Patch](t)(db.AddPatch(t.Context(), testPatch("107.1", "amd64"))), "stable")}},
	} {
		_, err := db.MirrorTiers(t.Context(), m)
		wantCode(t, err, server.CodeInvalid)
	}
	if diff := cmp.Diff(server.DefaultTiers, tierNames(t, db)); diff != "" {
		t.Errorf("tiers changed (-want +got):\n%s", diff)
	}
}
