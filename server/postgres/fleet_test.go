package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// eventsOf returns the events without their ids, which only order and page them.
func eventsOf(events []server.MachineEvent) []server.MachineEvent {
	out := make([]server.MachineEvent, len(events))
	for i, e := range events {
		e.ID = 0
		out[i] = e
	}
	return out
}

func TestMachineHistory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "beta", nil, 0)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	if _, err := db.Enable(ctx, enrolment(tok, "m1"), t0); err != nil {
		t.Fatal(err)
	}
	// Five check-ins, three of which change the state, then a move and a check-in in the
	// new tier.
	reports := []struct {
		version, state string
	}{
		{"", server.StateNeedsCheck},
		{"107.1", server.StateApplied},
		{"107.1", server.StateApplied},
		{"107.2", server.StateApplied},
		{"107.2", server.StateApplied},
	}
	for i, r := range reports {
		c := checkIn("m1", r.version, r.state)
		c.Status.Hostname = "web-1"
		if _, err := db.CheckIn(ctx, c, t0.Add(time.Duration(i+1)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := db.MoveMachine(ctx, "m1", "stable", t0.Add(6*time.Hour))
	if err != nil || m.Tier != "stable" {
		t.Fatalf("MoveMachine() = %+v, %v; want tier stable", m, err)
	}
	tier, err := db.CheckIn(ctx, checkIn("m1", "107.2", server.StateApplied), t0.Add(7*time.Hour))
	if err != nil || tier != "stable" {
		t.Fatalf("CheckIn() after the move = %q, %v; want stable", tier, err)
	}

	const k = "5.15.0-107-generic"
	wantChanges := []server.MachineEvent{
		{Time: t0.Add(6 * time.Hour), Cause: server.CauseMove, Tier: "stable", Kernel: k, PatchState: "applied", PatchVersion: "107.2"},
		{Time: t0.Add(4 * time.Hour), Cause: server.CauseCheckIn, Tier: "beta", Kernel: k, PatchState: "applied", PatchVersion: "107.2"},
		{Time: t0.Add(2 * time.Hour), Cause: server.CauseCheckIn, Tier: "beta", Kernel: k, PatchState: "applied", PatchVersion: "107.1"},
		{Time: t0.Add(1 * time.Hour), Cause: server.CauseCheckIn, Tier: "beta", Kernel: k, PatchState: "needs-check"},
		{Time: t0, Cause: server.CauseEnable, Tier: "beta"},
	}
	d, err := db.Machine(ctx, "m1", 100)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantChanges, eventsOf(d.History)); diff != "" {
		t.Errorf("Machine().History (-want +got):\n%s", diff)
	}
	if d.Tier != "stable" || d.TokenID != "web" || d.Hostname != "web-1" && d.Hostname != "" ||
		!d.FirstSeen.Equal(t0) || !d.LastSeen.Equal(t0.Add(7*time.Hour)) || !d.StateSince.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("Machine() = %+v", d.Machine)
	}

	// Paged: two at a time, by the id cursor.
	var paged []server.MachineEvent
	f := server.HistoryFilter{Limit: 2}
	for range 10 {
		page := must[[]server.MachineEvent](t)(db.MachineHistory(ctx, "m1", f))
		paged = append(paged, page...)
		if len(page) < f.Limit {
			break
		}
		f.Before = page[len(page)-1].ID
	}
	if diff := cmp.Diff(wantChanges, eventsOf(paged)); diff != "" {
		t.Errorf("paged MachineHistory() (-want +got):\n%s", diff)
	}

	// Every check-in.
	all := must[[]server.MachineEvent](t)(db.MachineHistory(ctx, "m1", server.HistoryFilter{All: true, Limit: 100}))
	if len(all) != 6 || !all[0].Time.Equal(t0.Add(7*time.Hour)) || all[0].Cause != server.CauseCheckIn || all[5].PatchState != "needs-check" {
		t.Errorf("MachineHistory(All) = %+v; want 6 check-ins, newest first", all)
	}

	// Unknown machine, tier.
	_, err = db.Machine(ctx, "nope", 10)
	wantCode(t, err, server.CodeNotFound)
	_, err = db.MachineHistory(ctx, "nope", server.HistoryFilter{Limit: 10})
	wantCode(t, err, server.CodeNotFound)
	_, err = db.MoveMachine(ctx, "nope", "stable", t0)
	wantCode(t, err, server.CodeNotFound)
	_, err = db.MoveMachine(ctx, "m1", "nope", t0)
	wantCode(t, err, server.CodeNotFound)

	// A removed machine's changes go with it; enrolled again, its history starts anew.
	if err := db.RemoveMachine(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.RemoveMachine(ctx, "m1"), server.CodeNotFound)
	t1 := t0.Add(24 * time.Hour)
	if _, err := db.Enable(ctx, enrolment(tok, "m1"), t1); err != nil {
		t.Fatal(err)
	}
	d = must[server.MachineDetail](t)(db.Machine(ctx, "m1", 100))
	if diff := cmp.Diff([]server.MachineEvent{{Time: t1, Cause: server.CauseEnable, Tier: "beta"}}, eventsOf(d.History)); diff != "" {
		t.Errorf("history after re-enrolment (-want +got):\n%s", diff)
	}
}

// TestMoveMachines moves machines by filter in batches smaller than the selection.
func TestMoveMachines(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "beta", nil, 0)
	now := time.Now().UTC()
	for i := range 23 {
		id := fmt.Sprintf("m%02d", i)
		enable(t, db, tok, id)
		state := server.StateApplied
		if i%3 == 0 {
			state = server.StateApplyFailed
		}
		if _, err := db.CheckIn(ctx, checkIn(id, "107.1", state), now); err != nil {
			t.Fatal(err)
		}
	}
	n, err := db.MoveMachines(ctx, server.MachineMove{
		Filter: server.MachineFilter{Tier: "beta", PatchState: server.StateApplied}, Tier: "stable", Batch: 4,
	}, now)
	if err != nil || n != 15 {
		t.Fatalf("MoveMachines() = %d, %v; want 15", n, err)
	}
	stable := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{Tier: "stable"}))
	beta := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{Tier: "beta"}))
	if len(stable) != 15 || len(beta) != 8 {
		t.Errorf("after the move: %d in stable, %d in beta; want 15, 8", len(stable), len(beta))
	}
	for _, m := range beta {
		if m.PatchState != server.StateApplyFailed {
			t.Errorf("machine %s in state %s stayed in beta", m.ID, m.PatchState)
		}
	}
	// Again: nothing left to move.
	if n, err := db.MoveMachines(ctx, server.MachineMove{Filter: server.MachineFilter{PatchState: server.StateApplied}, Tier: "stable", Batch: 4}, now); err != nil || n != 0 {
		t.Errorf("second MoveMachines() = %d, %v; want 0", n, err)
	}
	_, err = db.MoveMachines(ctx, server.MachineMove{Tier: "nope", Batch: 4}, now)
	wantCode(t, err, server.CodeNotFound)
	_, err = db.MoveMachines(ctx, server.MachineMove{Filter: server.MachineFilter{Tier: "nope"}, Tier: "stable", Batch: 4}, now)
	wantCode(t, err, server.CodeNotFound)
}

func TestMachineFilters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "beta", nil, 0)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	ages := []time.Duration{time.Hour, 2 * 24 * time.Hour, 10 * 24 * time.Hour}
	for i, age := range ages {
		id := fmt.Sprintf("m%d", i)
		enable(t, db, tok, id)
		c := checkIn(id, "107.1", server.StateApplied)
		c.Status.Hostname = fmt.Sprintf("host-%d", i)
		c.Status.Cloud = server.Cloud{Name: "aws", Region: "eu-west-1", Zone: "eu-west-1a"}
		if i == 2 {
			c.Status.Kernel = "6.8.0-40-generic"
		}
		if _, err := db.CheckIn(ctx, c, now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	enable(t, db, tok, "never")
	if _, err := db.TagMachine(ctx, "m1", map[string]string{"role": "web", "site": "par"}, nil); err != nil {
		t.Fatal(err)
	}
	m := must[server.Machine](t)(db.TagMachine(ctx, "m0", map[string]string{"role": "web", "x": "y"}, []string{"x"}))
	if diff := cmp.Diff(map[string]string{"role": "web"}, m.Tags); diff != "" {
		t.Errorf("TagMachine() tags (-want +got):\n%s", diff)
	}
	_, err := db.TagMachine(ctx, "nope", map[string]string{"a": "b"}, nil)
	wantCode(t, err, server.CodeNotFound)

	ids := func(f server.MachineFilter) []string {
		t.Helper()
		var out []string
		for _, m := range must[[]server.Machine](t)(db.Machines(ctx, f)) {
			out = append(out, m.ID)
		}
		return out
	}
	tests := []struct {
		name string
		f    server.MachineFilter
		want []string
	}{
		{"hostname", server.MachineFilter{Hostname: "host-1"}, []string{"m1"}},
		{"kernel", server.MachineFilter{Kernel: "6.8.0-40-generic"}, []string{"m2"}},
		{"tag", server.MachineFilter{Tags: map[string]string{"role": "web"}}, []string{"m0", "m1"}},
		{"tags", server.MachineFilter{Tags: map[string]string{"role": "web", "site": "par"}}, []string{"m1"}},
		{"seen before 7d", server.MachineFilter{SeenBefore: now.Add(-7 * 24 * time.Hour)}, []string{"m2", "never"}},
		{"seen after 1d", server.MachineFilter{SeenAfter: now.Add(-24 * time.Hour)}, []string{"m0"}},
		{"seen between", server.MachineFilter{SeenAfter: now.Add(-7 * 24 * time.Hour), SeenBefore: now.Add(-24 * time.Hour)}, []string{"m1"}},
		{"state and tier", server.MachineFilter{Tier: "beta", PatchState: server.StateApplied}, []string{"m0", "m1", "m2"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, ids(tc.f), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	got := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{Hostname: "host-0"}))
	if len(got) != 1 || got[0].Cloud != (server.Cloud{Name: "aws", Region: "eu-west-1", Zone: "eu-west-1a"}) {
		t.Errorf("machine host-0 = %+v; want its cloud placement", got)
	}
}

// TestRemoveStaleMachines removes machines not seen for long in bounded batches, and
// frees their places in their token's machine limit.
func TestRemoveStaleMachines(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "beta", nil, 5)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for i := range 5 {
		id := fmt.Sprintf("m%d", i)
		if _, err := db.Enable(ctx, enrolment(tok, id), now.AddDate(0, 0, -60)); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			continue // never seen
		}
		if _, err := db.CheckIn(ctx, checkIn(id, "", server.StateNothingToApply), now.AddDate(0, 0, -10*i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := db.Enable(ctx, enrolment(tok, "new"), now)
	wantCode(t, err, server.CodeForbidden)

	// Not seen for 15 days: m2 (20 days), m3 (30) and m4 (never, enabled 60 days ago).
	before := now.AddDate(0, 0, -15)
	n, next, err := db.RemoveStaleMachines(ctx, before, "", 2)
	if err != nil || n != 2 || next == "" {
		t.Fatalf("first batch = %d, %q, %v; want 2 and a cursor", n, next, err)
	}
	n, next, err = db.RemoveStaleMachines(ctx, before, next, 2)
	if err != nil || n != 1 || next != "" {
		t.Errorf("second batch = %d, %q, %v; want 1 and the end of the pass", n, next, err)
	}
	var ids []string
	for _, m := range must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{})) {
		ids = append(ids, m.ID)
	}
	if diff := cmp.Diff([]string{"m0", "m1"}, ids); diff != "" {
		t.Errorf("machines left (-want +got):\n%s", diff)
	}
	var changes int
	if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM machine_changes WHERE machine_id IN ('m2', 'm3', 'm4')`).Scan(&changes); err != nil || changes != 0 {
		t.Errorf("removed machines keep %d changes (%v), want none", changes, err)
	}
	for _, id := range []string{"new", "m3", "m4"} {
		enable(t, db, tok, id)
	}
	_, _, err = db.RemoveStaleMachines(ctx, before, "", 0)
	wantCode(t, err, server.CodeInvalid)
	_, _, err = db.RemoveStaleMachines(ctx, before, "x", 2)
	wantCode(t, err, server.CodeInvalid)
}

// TestRemoveStaleMachinesPass removes the stale machines of a table of many windows in one
// pass of bounded batches, each window read until it has no more than a batch of them.
func TestRemoveStaleMachinesPass(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	postgres.SetStaleWindow(t, 4)
	tok := createToken(t, db, "web", "beta", nil, 0)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	// 600 machines, one in three last seen 20 days ago, over some 20 blocks.
	if _, err := db.SQL().ExecContext(ctx, `
		INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, last_seen, kernel, architecture)
		SELECT format('m%s', lpad(i::text, 4, '0')), t.id, a.id, sha256(i::text::bytea), $1::timestamptz - interval '60 days',
			$1::timestamptz - CASE WHEN i % 3 = 0 THEN interval '20 days' ELSE interval '1 hour' END,
			'5.15.0-107-generic', 'amd64'
		FROM generate_series(1, 600) i, tiers t, auth_tokens a
		WHERE t.name = 'beta' AND a.label = $2`, now, "web"); err != nil {
		t.Fatal(err)
	}
	enable(t, db, tok, "never-seen") // enabled now: not stale
	before := now.AddDate(0, 0, -15)
	removed, batches, cursor := 0, 0, ""
	for {
		n, next, err := db.RemoveStaleMachines(ctx, before, cursor, 30)
		if err != nil {
			t.Fatal(err)
		}
		if n > 30 {
			t.Fatalf("a batch of at most 30 removed %d", n)
		}
		removed += n
		batches++
		if next == "" {
			break
		}
		if batches > 100 {
			t.Fatalf("no end of the pass after %d batches (cursor %q)", batches, next)
		}
		cursor = next
	}
	if removed != 200 || batches < 7 {
		t.Errorf("the pass removed %d machines in %d batches, want 200 in at least 7", removed, batches)
	}
	var left, stale int
	if err := db.SQL().QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE last_seen < $1) FROM machines`, before).Scan(&left, &stale); err != nil {
		t.Fatal(err)
	}
	if left != 401 || stale != 0 {
		t.Errorf("%d machines left, %d of them stale; want 401, 0", left, stale)
	}
}

// TestKernelCounts keeps the kernels report equal to a count of the machines through
// every way machines come, change kernel and go, including statements of many rows.
func TestKernelCounts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "stable", nil, 0)
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	checkInKernel := func(id, kernel string) {
		t.Helper()
		c := checkIn(id, "107.1", server.StateApplied)
		c.Status.Kernel = kernel
		if _, err := db.CheckIn(ctx, c, now); err != nil {
			t.Fatal(err)
		}
	}
	counted := func(when string) {
		t.Helper()
		var want []server.KernelCount
		rows, err := db.SQL().QueryContext(ctx, `
			SELECT kernel, architecture, count(*) FROM machines WHERE kernel <> ''
			GROUP BY kernel, architecture ORDER BY count(*) DESC, kernel, architecture`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k server.KernelCount
			if err := rows.Scan(&k.Kernel, &k.Architecture, &k.Machines); err != nil {
				t.Fatal(err)
			}
			want = append(want, k)
		}
		got := must[[]server.KernelCount](t)(db.Kernels(ctx))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Kernels() %s (-counted +reported):\n%s", when, diff)
		}
	}
	for i := range 6 {
		enable(t, db, tok, fmt.Sprintf("m%d", i))
	}
	counted("after enabling machines that never checked in")
	for i := range 6 {
		checkInKernel(fmt.Sprintf("m%d", i), []string{"5.15.0-107-generic", "6.8.0-31-generic"}[i%2])
	}
	counted("after their first check-ins")
	checkInKernel("m0", "6.8.0-31-generic")
	checkInKernel("m1", "6.8.0-31-generic") // the same kernel: no change
	counted("after a kernel upgrade")
	enable(t, db, tok, "m2") // enabling again keeps the kernel
	must[server.Machine](t)(db.MoveMachine(ctx, "m3", "beta", now))
	if err := db.RemoveMachine(ctx, "m4"); err != nil {
		t.Fatal(err)
	}
	counted("after a re-enable, a move and a removal")
	if _, err := db.SQL().ExecContext(ctx, `
		INSERT INTO machines (id, tier_id, auth_token_id, machine_token_hash, enabled_at, last_seen, kernel, architecture)
		SELECT format('bulk-%s', i), 1, a.id, sha256(i::text::bytea), $1, $1, 'k' || i % 3, 'arm64'
		FROM generate_series(1, 30) i, auth_tokens a WHERE a.label = 'web'`, now.AddDate(0, 0, -30)); err != nil {
		t.Fatal(err)
	}
	counted("after a bulk insert")
	if _, _, err := db.RemoveStaleMachines(ctx, now.AddDate(0, 0, -1), "", 10); err != nil {
		t.Fatal(err)
	}
	counted("after a batch of stale removals")
	if _, err := db.SQL().ExecContext(ctx, `UPDATE machines SET kernel = 'k9' WHERE id LIKE 'bulk-%'`); err != nil {
		t.Fatal(err)
	}
	counted("after a bulk kernel change")
	counted("read twice")
}

var _ server.Store = (*postgres.DB)(nil)
