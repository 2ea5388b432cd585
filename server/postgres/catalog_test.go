package postgres_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// tierNames returns the tier names in order, checking that positions are 1..n.
func tierNames(t *testing.T, db *postgres.DB) []string {
	t.Helper()
	var names []string
	for i, tier := range must[[]server.Tier](t)(db.Tiers(t.Context())) {
		if tier.Position != i+1 {
			t.Fatalf("tier %q has position %d, want %d", tier.Name, tier.Position, i+1)
		}
		names = append(names, tier.Name)
	}
	return names
}

func TestAddTier(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)

	tests := []struct {
		name string
		at   server.TierPlacement
		want server.Tier
		code server.Code // "" for success
		then []string
	}{
		{name: "last", want: server.Tier{Name: "last", Position: 5},
			then: []string{"edge", "beta", "candidate", "stable", "last"}},
		{name: "zero", at: server.TierPlacement{First: true}, want: server.Tier{Name: "zero", Position: 1},
			then: []string{"zero", "edge", "beta", "candidate", "stable", "last"}},
		{name: "qa", at: server.TierPlacement{After: "beta"}, want: server.Tier{Name: "qa", Position: 4},
			then: []string{"zero", "edge", "beta", "qa", "candidate", "stable", "last"}},
		{name: "final", at: server.TierPlacement{After: "last"}, want: server.Tier{Name: "final", Position: 8},
			then: []string{"zero", "edge", "beta", "qa", "candidate", "stable", "last", "final"}},
		{name: "beta", code: server.CodeConflict},
		{name: "beta", at: server.TierPlacement{First: true}, code: server.CodeConflict},
		{name: "x", at: server.TierPlacement{After: "missing"}, code: server.CodeNotFound},
		{name: "y", at: server.TierPlacement{After: "beta", First: true}, code: server.CodeInvalid},
		{name: "Bad Name", code: server.CodeInvalid},
	}
	for _, test := range tests {
		got, err := db.AddTier(ctx, test.name, test.at)
		if test.code != "" {
			wantCode(t, err, test.code)
			continue
		}
		if err != nil {
			t.Fatalf("AddTier(%q, %+v): %v", test.name, test.at, err)
		}
		if got != test.want {
			t.Errorf("AddTier(%q, %+v) = %+v, want %+v", test.name, test.at, got, test.want)
		}
		if diff := cmp.Diff(test.then, tierNames(t, db)); diff != "" {
			t.Errorf("tiers after AddTier(%q, %+v) (-want +got):\n%s", test.name, test.at, diff)
		}
	}
	// Failures left the order alone.
	want := []string{"zero", "edge", "beta", "qa", "candidate", "stable", "last", "final"}
	if diff := cmp.Diff(want, tierNames(t, db)); diff != "" {
		t.Errorf("tiers after failed AddTier calls (-want +got):\n%s", diff)
	}
}

func TestDeleteTier(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)

	// Unknown.
	wantCode(t, db.DeleteTier(ctx, "missing"), server.CodeNotFound)

	// A tier in the middle: its patches move to the previous tier, later tiers move up.
	p := must[server.Patch](t)(db.AddPatch(ctx, withTier(testPatch("107.1", "amd64"), "candidate")))
	if err := db.DeleteTier(ctx, "candidate"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"edge", "beta", "stable"}, tierNames(t, db)); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}
	if got := patchTier(t, db, p.Filename); got != "beta" {
		t.Errorf("patch of deleted tier is in %q, want beta", got)
	}

	// The first tier cannot go while it holds patches; once empty, it can.
	must[server.Patch](t)(db.AddPatch(ctx, testPatch("108.1", "amd64")))
	err := db.DeleteTier(ctx, "edge")
	wantCode(t, err, server.CodeConflict)
	must[int](t)(db.PromoteAll(ctx, "edge", "beta"))
	if err := db.DeleteTier(ctx, "edge"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"beta", "stable"}, tierNames(t, db)); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}

	// In use by an auth token, then by a machine: refused, saying what uses it.
	tok := createToken(t, db, "web", "stable", nil, 0)
	err = db.DeleteTier(ctx, "stable")
	wantCode(t, err, server.CodeConflict)
	if got, want := server.ErrorMessage(err), `cannot delete tier "stable": it is used by 1 auth token`; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	enable(t, db, tok, "m1")
	enable(t, db, tok, "m2")
	if err := db.RevokeAuthToken(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	err = db.DeleteTier(ctx, "stable")
	wantCode(t, err, server.CodeConflict)
	if got, want := server.ErrorMessage(err), `cannot delete tier "stable": it is used by 2 machines`; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	for _, id := range []string{"m1", "m2"} {
		if err := db.Disable(ctx, id, server.HashToken(machineToken(id))); err != nil {
			t.Fatal(err)
		}
	}

	// In use by a sync token.
	if _, err := db.SQL().ExecContext(ctx, `
		INSERT INTO sync_tokens (name, tier_id, token_hash) SELECT 'down', id, 'x' FROM tiers WHERE name = 'stable'`); err != nil {
		t.Fatal(err)
	}
	err = db.DeleteTier(ctx, "stable")
	wantCode(t, err, server.CodeConflict)
	if got, want := server.ErrorMessage(err), `cannot delete tier "stable": it is used by 1 sync token`; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	if _, err := db.SQL().ExecContext(ctx, `UPDATE sync_tokens SET revoked_at = now()`); err != nil {
		t.Fatal(err)
	}

	// Only revoked tokens left: the tier goes; the revoked token stays, without a tier.
	if err := db.DeleteTier(ctx, "stable"); err != nil {
		t.Fatal(err)
	}
	tokens := must[[]server.AuthToken](t)(db.AuthTokens(ctx))
	if len(tokens) != 1 || tokens[0].Tier != "" || !tokens[0].Revoked {
		t.Errorf("tokens after deleting their tier = %+v, want one revoked token without tier", tokens)
	}

	// The last tier stays.
	err = db.DeleteTier(ctx, "beta")
	wantCode(t, err, server.CodeConflict)
	if diff := cmp.Diff([]string{"beta"}, tierNames(t, db)); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}
}

// testPatch returns a patch of version for arch, for kernel 5.15.0-107.
func testPatch(version, arch string) server.Patch {
	name := server.PatchName{Kernel: "5.15.0-107.117", Flavour: "generic", Version: version, Architecture: arch}
	return server.Patch{
		Filename:     name.Filename(),
		Version:      version,
		Kernel:       name.Kernel,
		Flavour:      name.Flavour,
		Architecture: arch,
		SHA256:       fmt.Sprintf("%064x", len(version)+len(arch)),
		Size:         1234,
		Module:       "lkp_Ubuntu_5_15_0_107",
		Description:  "fixes " + version,
		Fixes:        []server.Fix{{Name: "CVE-2024-0001", Description: "a bug", Bug: "LP: #1"}},
		Source:       server.SourceSync,
		CreatedAt:    time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
	}
}

func withTier(p server.Patch, tier string) server.Patch {
	p.Tier = tier
	return p
}

// patchTier returns the tier of the patch file filename.
func patchTier(t *testing.T, db *postgres.DB, filename string) string {
	t.Helper()
	for _, p := range must[[]server.Patch](t)(db.Patches(t.Context(), server.PatchFilter{})) {
		if p.Filename == filename {
			return p.Tier
		}
	}
	t.Fatalf("patch %q not found", filename)
	return ""
}

func TestAddPatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)

	p := testPatch("107.1", "amd64")
	got := must[server.Patch](t)(db.AddPatch(ctx, p))
	want := withTier(p, "edge") // the first tier
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddPatch() (-want +got):\n%s", diff)
	}

	// The same file again: the recorded patch, unchanged.
	again := must[server.Patch](t)(db.AddPatch(ctx, withTier(p, "stable")))
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("AddPatch() of the same file (-want +got):\n%s", diff)
	}

	// Another file under that name: conflict.
	other := p
	other.SHA256 = fmt.Sprintf("%064x", 99)
	_, err := db.AddPatch(ctx, other)
	wantCode(t, err, server.CodeConflict)

	// Into a named tier, without fixes, source defaulting to upload.
	q := testPatch("107.2", "arm64")
	q.Tier, q.Fixes, q.Source = "beta", nil, ""
	got = must[server.Patch](t)(db.AddPatch(ctx, q))
	q.Source = server.SourceUpload
	if diff := cmp.Diff(q, got); diff != "" {
		t.Errorf("AddPatch() (-want +got):\n%s", diff)
	}

	_, err = db.AddPatch(ctx, withTier(testPatch("107.3", "amd64"), "missing"))
	wantCode(t, err, server.CodeNotFound)
}

func TestPatches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	add := func(p server.Patch) server.Patch { return must[server.Patch](t)(db.AddPatch(ctx, p)) }
	p9 := add(withTier(testPatch("107.9", "amd64"), "stable"))
	p10 := add(withTier(testPatch("107.10", "amd64"), "beta"))
	p10arm := add(withTier(testPatch("107.10", "arm64"), "edge"))
	other := testPatch("120.1", "amd64")
	other.Kernel = "5.15.0-1070.80"
	other.Filename = "livepatch-5.15.0-1070.80-generic-120.1-amd64.tar.bz2"
	p120 := add(other)

	filenames := func(ps []server.Patch) []string {
		var names []string
		for _, p := range ps {
			names = append(names, p.Filename)
		}
		return names
	}
	tests := []struct {
		filter server.PatchFilter
		want   []server.Patch
	}{
		{server.PatchFilter{}, []server.Patch{p120, p10, p10arm, p9}}, // newest first, then filename
		{server.PatchFilter{Tier: "edge"}, []server.Patch{p120, p10, p10arm, p9}},
		{server.PatchFilter{Tier: "beta"}, []server.Patch{p10, p9}},
		{server.PatchFilter{Tier: "stable"}, []server.Patch{p9}},
		{server.PatchFilter{Version: "107.10"}, []server.Patch{p10, p10arm}},
		{server.PatchFilter{Kernel: "5.15.0-107"}, []server.Patch{p10, p10arm, p9}},
		{server.PatchFilter{Kernel: "5.15.0-107.117"}, []server.Patch{p10, p10arm, p9}},
		{server.PatchFilter{Kernel: "5.15.0"}, []server.Patch{p120, p10, p10arm, p9}},
		{server.PatchFilter{Kernel: "5.15.0-10"}, nil},
		{server.PatchFilter{Kernel: "5.15.0-10_"}, nil}, // a LIKE wildcard is a plain character
		{server.PatchFilter{Tier: "beta", Kernel: "5.15.0-107", Version: "107.9"}, []server.Patch{p9}},
	}
	for _, test := range tests {
		got := must[[]server.Patch](t)(db.Patches(ctx, test.filter))
		if diff := cmp.Diff(filenames(test.want), filenames(got)); diff != "" {
			t.Errorf("Patches(%+v) (-want +got):\n%s", test.filter, diff)
		}
	}
	_, err := db.Patches(ctx, server.PatchFilter{Tier: "missing"})
	wantCode(t, err, server.CodeNotFound)
}

func TestPromotePatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	amd := must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "amd64")))
	arm := must[server.Patch](t)(db.AddPatch(ctx, withTier(testPatch("107.1", "arm64"), "stable")))

	// Only the file behind moves: promote never demotes.
	if n := must[int](t)(db.PromotePatch(ctx, "107.1", "candidate")); n != 1 {
		t.Errorf("PromotePatch() = %d, want 1", n)
	}
	if got := patchTier(t, db, amd.Filename); got != "candidate" {
		t.Errorf("amd64 file is in %q, want candidate", got)
	}
	if got := patchTier(t, db, arm.Filename); got != "stable" {
		t.Errorf("arm64 file is in %q, want stable", got)
	}
	if n := must[int](t)(db.PromotePatch(ctx, "107.1", "edge")); n != 0 {
		t.Errorf("PromotePatch() to an earlier tier = %d, want 0", n)
	}
	if got := patchTier(t, db, amd.Filename); got != "candidate" {
		t.Errorf("amd64 file is in %q after promoting to edge, want candidate", got)
	}

	_, err := db.PromotePatch(ctx, "999.1", "stable")
	wantCode(t, err, server.CodeNotFound)
	_, err = db.PromotePatch(ctx, "107.1", "missing")
	wantCode(t, err, server.CodeNotFound)
}

func TestPromoteAll(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	a := must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "amd64")))
	b := must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.2", "amd64")))
	c := must[server.Patch](t)(db.AddPatch(ctx, withTier(testPatch("107.3", "amd64"), "beta")))

	if n := must[int](t)(db.PromoteAll(ctx, "edge", "candidate")); n != 2 {
		t.Errorf("PromoteAll() = %d, want 2", n)
	}
	for p, want := range map[string]string{a.Filename: "candidate", b.Filename: "candidate", c.Filename: "beta"} {
		if got := patchTier(t, db, p); got != want {
			t.Errorf("%s is in %q, want %q", p, got, want)
		}
	}
	_, err := db.PromoteAll(ctx, "stable", "edge")
	wantCode(t, err, server.CodeInvalid)
	_, err = db.PromoteAll(ctx, "beta", "beta")
	wantCode(t, err, server.CodeInvalid)
	_, err = db.PromoteAll(ctx, "missing", "stable")
	wantCode(t, err, server.CodeNotFound)
	_, err = db.PromoteAll(ctx, "edge", "missing")
	wantCode(t, err, server.CodeNotFound)
}

func TestSetBlocked(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "amd64")))
	must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "arm64")))
	must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.2", "amd64")))

	state := func() map[string]string {
		got := make(map[string]string)
		for _, p := range must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{})) {
			if p.Blocked {
				got[p.Filename] = p.BlockReason
			}
		}
		return got
	}
	if n := must[int](t)(db.SetBlocked(ctx, "107.1", true, "breaks boot")); n != 2 {
		t.Errorf("SetBlocked(true) = %d, want 2", n)
	}
	want := map[string]string{
		testPatch("107.1", "amd64").Filename: "breaks boot",
		testPatch("107.1", "arm64").Filename: "breaks boot",
	}
	if diff := cmp.Diff(want, state()); diff != "" {
		t.Errorf("blocked files (-want +got):\n%s", diff)
	}
	if n := must[int](t)(db.SetBlocked(ctx, "107.1", false, "ignored")); n != 2 {
		t.Errorf("SetBlocked(false) = %d, want 2", n)
	}
	if diff := cmp.Diff(map[string]string{}, state()); diff != "" {
		t.Errorf("blocked files after unblock (-want +got):\n%s", diff)
	}
	for _, p := range must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{})) {
		if p.BlockReason != "" {
			t.Errorf("%s keeps block reason %q after unblock", p.Filename, p.BlockReason)
		}
	}
	_, err := db.SetBlocked(ctx, "999.1", true, "")
	wantCode(t, err, server.CodeNotFound)
}

func TestDeletePatchRecord(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	p := must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "amd64")))
	if err := db.DeletePatchRecord(ctx, p.Filename); err != nil {
		t.Fatal(err)
	}
	if got := must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{})); len(got) != 0 {
		t.Errorf("patches after delete = %v, want none", got)
	}
	wantCode(t, db.DeletePatchRecord(ctx, p.Filename), server.CodeNotFound)
}

// Patches is used by the catalog loader on every unit: a canceled context is an error, not
// a hang.
func TestCanceledContext(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := db.Patches(ctx, server.PatchFilter{}); err == nil {
		t.Fatal("Patches() with a canceled context succeeded")
	}
}

func TestPatchSignatures(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	signed := testPatch("107.1", "amd64")
	signed.Source = server.SourceSync
	signed.Signature = server.SignPatch(key, signed.Filename, signed.SHA256, signed.Size)
	got := must[server.Patch](t)(db.AddPatch(ctx, signed))
	if diff := cmp.Diff(withTier(signed, "edge"), got); diff != "" {
		t.Errorf("AddPatch() of a signed patch (-want +got):\n%s", diff)
	}
	unsigned := testPatch("107.2", "amd64")
	must[server.Patch](t)(db.AddPatch(ctx, unsigned))

	sigOf := func(filename string) *server.PatchSignature {
		t.Helper()
		for _, p := range must[[]server.Patch](t)(db.Patches(ctx, server.PatchFilter{})) {
			if p.Filename == filename {
				return p.Signature
			}
		}
		t.Fatalf("patch %q not found", filename)
		return nil
	}
	if diff := cmp.Diff(signed.Signature, sigOf(signed.Filename)); diff != "" {
		t.Errorf("listed signature (-want +got):\n%s", diff)
	}
	if sig := sigOf(unsigned.Filename); sig != nil {
		t.Errorf("unsigned patch listed with signature %+v", sig)
	}

	// A signature arrives for the unsigned patch; again is no change; another SHA-256,
	// another file or no signature change nothing.
	sig := server.SignPatch(key, unsigned.Filename, unsigned.SHA256, unsigned.Size)
	v := must[int64](t)(db.CatalogVersion(ctx))
	if !must[bool](t)(db.SetPatchSignature(ctx, unsigned.Filename, unsigned.SHA256, sig)) {
		t.Error("SetPatchSignature of an unsigned patch changed nothing")
	}
	if nv := must[int64](t)(db.CatalogVersion(ctx)); nv == v {
		t.Error("the catalog version did not move: other units would not offer the signature")
	}
	if diff := cmp.Diff(sig, sigOf(unsigned.Filename)); diff != "" {
		t.Errorf("recorded signature (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		name, file, sum string
		sig             *server.PatchSignature
	}{
		{"same signature", unsigned.Filename, unsigned.SHA256, sig},
		{"other sha256", unsigned.Filename, fmt.Sprintf("%064x", 7), server.SignPatch(key, unsigned.Filename, fmt.Sprintf("%064x", 7), unsigned.Size)},
		{"unknown file", "livepatch-5.15.0-1.1-generic-1.1-amd64.tar.bz2", unsigned.SHA256, sig},
		{"no signature", unsigned.Filename, unsigned.SHA256, nil},
	} {
		if must[bool](t)(db.SetPatchSignature(ctx, tt.file, tt.sum, tt.sig)) {
			t.Errorf("%s: SetPatchSignature changed something", tt.name)
		}
	}
	if diff := cmp.Diff(sig, sigOf(unsigned.Filename)); diff != "" {
		t.Errorf("signature after no-op updates (-want +got):\n%s", diff)
	}
	// The origin rotates its key: the new signature replaces the old.
	rotated := server.SignPatch(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)), signed.Filename, signed.SHA256, signed.Size)
	if !must[bool](t)(db.SetPatchSignature(ctx, signed.Filename, signed.SHA256, rotated)) {
		t.Error("SetPatchSignature with a new key changed nothing")
	}
	if diff := cmp.Diff(rotated, sigOf(signed.Filename)); diff != "" {
		t.Errorf("signature after rotation (-want +got):\n%s", diff)
	}
}
