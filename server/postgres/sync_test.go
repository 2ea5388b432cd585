package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestSyncTokens(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	until := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := must[server.SyncToken](t)(db.CreateSyncToken(ctx, server.NewSyncToken{Name: "region-1", Tier: "stable", Hash: server.HashToken("t1"), ValidUntil: &until}))
	if tok.Name != "region-1" || tok.Tier != "stable" || tok.ValidUntil == nil || !tok.ValidUntil.Equal(until) || tok.CreatedAt.IsZero() || tok.Revoked {
		t.Fatalf("created token = %+v", tok)
	}
	must[server.SyncToken](t)(db.CreateSyncToken(ctx, server.NewSyncToken{Name: "lab", Tier: "edge", Hash: server.HashToken("t2")}))

	_, err := db.CreateSyncToken(ctx, server.NewSyncToken{Name: "region-1", Tier: "edge", Hash: server.HashToken("t3")})
	wantCode(t, err, server.CodeConflict)
	_, err = db.CreateSyncToken(ctx, server.NewSyncToken{Name: "other", Tier: "edge", Hash: server.HashToken("t1")})
	wantCode(t, err, server.CodeConflict)
	_, err = db.CreateSyncToken(ctx, server.NewSyncToken{Name: "x", Tier: "nosuch", Hash: server.HashToken("t4")})
	wantCode(t, err, server.CodeNotFound)
	_, err = db.CreateSyncToken(ctx, server.NewSyncToken{Name: "bad name", Tier: "edge", Hash: server.HashToken("t5")})
	wantCode(t, err, server.CodeInvalid)

	got := must[server.SyncToken](t)(db.SyncToken(ctx, server.HashToken("t1")))
	if diff := cmp.Diff(tok, got); diff != "" {
		t.Errorf("SyncToken (-created +read):\n%s", diff)
	}
	_, err = db.SyncToken(ctx, server.HashToken("nosuch"))
	wantCode(t, err, server.CodeNotFound)

	// A tier used by a sync token cannot be deleted.
	wantCode(t, db.DeleteTier(ctx, "stable"), server.CodeConflict)

	if err := db.RevokeSyncToken(ctx, "region-1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.RevokeSyncToken(ctx, "region-1"), server.CodeNotFound)
	if got := must[server.SyncToken](t)(db.SyncToken(ctx, server.HashToken("t1"))); !got.Revoked {
		t.Errorf("revoked token reads as %+v", got)
	}
	// The name is free again once revoked.
	must[server.SyncToken](t)(db.CreateSyncToken(ctx, server.NewSyncToken{Name: "region-1", Tier: "beta", Hash: server.HashToken("t6")}))

	list := must[[]server.SyncToken](t)(db.SyncTokens(ctx))
	var summary []string
	for _, s := range list {
		state := "active"
		if s.Revoked {
			state = "revoked"
		}
		summary = append(summary, s.Name+"/"+s.Tier+"/"+state)
	}
	if diff := cmp.Diff([]string{"lab/edge/active", "region-1/stable/revoked", "region-1/beta/active"}, summary); diff != "" {
		t.Errorf("SyncTokens (-want +got):\n%s", diff)
	}
}

func TestSyncReports(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	if reports := must[[]server.SyncReport](t)(db.SyncReports(ctx, server.SyncReportFilter{})); len(reports) != 0 {
		t.Fatalf("reports of a new database = %+v", reports)
	}
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	add := func(i int, outcome, msg string) server.SyncReport {
		t.Helper()
		return must[server.SyncReport](t)(db.AddSyncReport(ctx, server.SyncReport{
			StartedAt: t0.Add(time.Duration(i) * time.Hour), EndedAt: t0.Add(time.Duration(i)*time.Hour + time.Minute),
			Outcome: outcome, PatchesAdded: i, Bytes: int64(i) * 100, Error: msg, Unit: "lp-0",
		}))
	}
	r1 := add(1, server.SyncSuccess, "")
	r2 := add(2, server.SyncFailed, "cannot reach upstream")
	r3 := add(3, server.SyncSkipped, "another unit is syncing")
	if r1.ID == 0 || r2.ID <= r1.ID || r3.ID <= r2.ID {
		t.Fatalf("ids %d, %d, %d are not increasing", r1.ID, r2.ID, r3.ID)
	}
	all := must[[]server.SyncReport](t)(db.SyncReports(ctx, server.SyncReportFilter{}))
	if diff := cmp.Diff([]server.SyncReport{r3, r2, r1}, all); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	last := must[[]server.SyncReport](t)(db.SyncReports(ctx, server.SyncReportFilter{Outcome: server.SyncSuccess, Limit: 1}))
	if diff := cmp.Diff([]server.SyncReport{r1}, last); diff != "" {
		t.Errorf("last success (-want +got):\n%s", diff)
	}
	_, err := db.AddSyncReport(ctx, server.SyncReport{StartedAt: t0, EndedAt: t0, Outcome: "great"})
	wantCode(t, err, server.CodeInvalid)
}

func TestSyncReportsBounded(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	// Fill the history quickly with SQL, then one more report pushes the oldest out.
	if _, err := db.SQL().ExecContext(ctx, `
		INSERT INTO sync_reports (started_at, ended_at, outcome)
		SELECT now(), now(), 'success' FROM generate_series(1, 1005)`); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	must[server.SyncReport](t)(db.AddSyncReport(ctx, server.SyncReport{StartedAt: now, EndedAt: now, Outcome: server.SyncFailed}))
	reports := must[[]server.SyncReport](t)(db.SyncReports(ctx, server.SyncReportFilter{}))
	if len(reports) != 1000 || reports[0].Outcome != server.SyncFailed || reports[999].ID != 7 {
		t.Errorf("history holds %d reports, newest %+v, oldest id %d; want 1000, the failure first, oldest id 7",
			len(reports), reports[0], reports[len(reports)-1].ID)
	}
}

func TestRecordSyncMachines(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	id := func(c string) string { return strings.Repeat(c, 64) }
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied, PatchVersion: "107.1"}
	ms := []server.SyncMachine{
		{ID: id("a"), Tier: "stable", LastSeen: t0, Status: st},
		{ID: id("b"), Tier: "edge", Status: st},
		{ID: id("a"), Tier: "beta", LastSeen: t0, Status: st}, // the later report wins
	}
	if err := db.RecordSyncMachines(ctx, "dep-1", server.HashToken("1"), ms, t0); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSyncMachines(ctx, "dep-2", server.HashToken("2"), ms[:1], t0); err != nil {
		t.Fatal(err)
	}
	// A month later dep-1 reports only b: a is forgotten, dep-2 is left alone.
	if err := db.RecordSyncMachines(ctx, "dep-1", server.HashToken("1"), ms[1:2], t0.Add(31*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := db.SQL().QueryContext(ctx, `SELECT deployment_id, machine_id, tier, last_seen IS NOT NULL, status->>'patch-state' FROM sync_machines ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var dep, mid, tier, state string
		var seen bool
		if err := rows.Scan(&dep, &mid, &tier, &seen, &state); err != nil {
			t.Fatal(err)
		}
		got = append(got, dep+" "+mid[:1]+" "+tier+" "+state+" "+map[bool]string{true: "seen", false: "-"}[seen])
	}
	want := []string{"dep-1 b edge applied -", "dep-2 a stable applied seen"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sync machines (-want +got):\n%s", diff)
	}
}
