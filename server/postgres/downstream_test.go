package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestDownstreams(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	record := func(s server.DownstreamSync) {
		t.Helper()
		s.Credential = server.HashToken("credential of " + s.SyncToken)
		if err := db.RecordDownstreamSync(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// dep-a syncs with a sync token, twice; a request recorded late (another unit's, say)
	// does not overwrite the newer one.
	record(server.DownstreamSync{DeploymentID: "dep-a", Via: server.ViaSyncToken, SyncToken: "region-a", Tier: "stable", MachineCount: new(50), At: t0})
	record(server.DownstreamSync{DeploymentID: "dep-a", Via: server.ViaSyncToken, SyncToken: "region-a", Tier: "stable", MachineCount: new(100), At: t0.Add(time.Hour)})
	record(server.DownstreamSync{DeploymentID: "dep-a", Via: server.ViaSyncToken, SyncToken: "region-a", Tier: "edge", MachineCount: new(1), At: t0.Add(30 * time.Minute)})
	// dep-b with a resource token and no machine count.
	record(server.DownstreamSync{DeploymentID: "dep-b", Via: server.ViaResourceToken, Tier: "beta", At: t0})
	// dep-a reports three machines; dep-c only reports (its lists were not recorded).
	id := func(c string) string { return strings.Repeat(c, 64) }
	st := func(state, version string) server.Status {
		return server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: state, PatchVersion: version}
	}
	machinesA := []server.SyncMachine{
		{ID: id("a"), Tier: "stable", LastSeen: t0, Status: st(server.StateApplied, "107.1")},
		{ID: id("b"), Tier: "stable", Status: st(server.StateApplyFailed, "107.1")},
		{ID: id("c"), Tier: "edge", LastSeen: t0, Status: st(server.StateApplied, "107.2")},
	}
	if err := db.RecordSyncMachines(ctx, "dep-a", server.HashToken("credential of region-a"), machinesA, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordSyncMachines(ctx, "dep-c", server.HashToken("credential of dep-c"), machinesA[:1], t0); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(2 * time.Hour)
	want := []server.Downstream{{
		ID: "dep-a", FirstSeen: t0, LastSync: t0.Add(time.Hour), Via: server.ViaSyncToken, SyncToken: "region-a", Tier: "stable",
		MachineCount: new(100), ReportedMachines: 3, PatchStates: map[string]int{"applied": 2, "apply-failed": 1}, LastReport: t0.Add(time.Hour),
	}, {
		ID: "dep-b", FirstSeen: t0, LastSync: t0, Via: server.ViaResourceToken, Tier: "beta", PatchStates: map[string]int{},
	}, {
		ID: "dep-c", ReportedMachines: 1, PatchStates: map[string]int{"applied": 1}, LastReport: t0,
	}}
	if diff := cmp.Diff(want, must[[]server.Downstream](t)(db.Downstreams(ctx, now))); diff != "" {
		t.Errorf("Downstreams (-want +got):\n%s", diff)
	}

	// Machines: pages, filters, and a deployment that reports none.
	machines := func(f server.DownstreamMachineFilter) []string {
		t.Helper()
		ms := must[[]server.DownstreamMachine](t)(db.DownstreamMachines(ctx, f, now))
		var out []string
		for _, m := range ms {
			out = append(out, m.ID[:1]+" "+m.Tier+" "+m.PatchState+" "+m.PatchVersion+" "+m.ReportedAt.Format(time.RFC3339))
		}
		return out
	}
	at := t0.Add(time.Hour).Format(time.RFC3339)
	for _, tt := range []struct {
		f    server.DownstreamMachineFilter
		want []string
	}{
		{server.DownstreamMachineFilter{DeploymentID: "dep-a"}, []string{"a stable applied 107.1 " + at, "b stable apply-failed 107.1 " + at, "c edge applied 107.2 " + at}},
		{server.DownstreamMachineFilter{DeploymentID: "dep-a", Limit: 2}, []string{"a stable applied 107.1 " + at, "b stable apply-failed 107.1 " + at}},
		{server.DownstreamMachineFilter{DeploymentID: "dep-a", After: id("b")}, []string{"c edge applied 107.2 " + at}},
		{server.DownstreamMachineFilter{DeploymentID: "dep-a", PatchState: server.StateApplied}, []string{"a stable applied 107.1 " + at, "c edge applied 107.2 " + at}},
		{server.DownstreamMachineFilter{DeploymentID: "dep-a", Tier: "stable", PatchState: server.StateApplied}, []string{"a stable applied 107.1 " + at}},
		{server.DownstreamMachineFilter{DeploymentID: "dep-a", Tier: "candidate"}, nil},
		{server.DownstreamMachineFilter{DeploymentID: "dep-b"}, nil},
	} {
		if diff := cmp.Diff(tt.want, machines(tt.f)); diff != "" {
			t.Errorf("DownstreamMachines(%+v) (-want +got):\n%s", tt.f, diff)
		}
	}
	full := must[[]server.DownstreamMachine](t)(db.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "dep-a", Limit: 1}, now))
	wantFull := []server.DownstreamMachine{{SyncMachine: machinesA[0], ReportedAt: t0.Add(time.Hour)}}
	if diff := cmp.Diff(wantFull, full); diff != "" {
		t.Errorf("reported machine (-want +got):\n%s", diff)
	}
	_, err := db.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "nosuch"}, now)
	wantCode(t, err, server.CodeNotFound)

	// A month on, only what was seen in the last 30 days shows: dep-b syncs again and
	// starts anew; dep-a and dep-c are gone, and forgotten by the cleanup.
	later := t0.Add(31 * 24 * time.Hour)
	record(server.DownstreamSync{DeploymentID: "dep-b", Via: server.ViaSyncToken, SyncToken: "region-b", Tier: "beta", MachineCount: new(0), At: later})
	want = []server.Downstream{{
		ID: "dep-b", FirstSeen: later, LastSync: later, Via: server.ViaSyncToken, SyncToken: "region-b", Tier: "beta", MachineCount: new(0), PatchStates: map[string]int{},
	}}
	if diff := cmp.Diff(want, must[[]server.Downstream](t)(db.Downstreams(ctx, later))); diff != "" {
		t.Errorf("Downstreams a month later (-want +got):\n%s", diff)
	}
	_, err = db.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "dep-a"}, later)
	wantCode(t, err, server.CodeNotFound)
	// Forgotten: dep-a's list and dep-a's and dep-c's 4 machines.
	if n := must[int](t)(db.ForgetDownstreams(ctx, later)); n != 5 {
		t.Errorf("ForgetDownstreams() = %d, want 5", n)
	}
	var left int
	if err := db.SQL().QueryRowContext(ctx, `SELECT (SELECT count(*) FROM sync_deployments) + (SELECT count(*) FROM sync_machines)`).Scan(&left); err != nil || left != 1 {
		t.Errorf("rows left after ForgetDownstreams = %d, %v; want dep-b's only", left, err)
	}
	if n := must[int](t)(db.ForgetDownstreams(ctx, later)); n != 0 {
		t.Errorf("second ForgetDownstreams() = %d, want 0", n)
	}

	cred := server.HashToken("c")
	wantCode(t, db.RecordDownstreamSync(ctx, server.DownstreamSync{DeploymentID: "bad id", Via: server.ViaSyncToken, Credential: cred, Tier: "edge", At: t0}), server.CodeInvalid)
	wantCode(t, db.RecordDownstreamSync(ctx, server.DownstreamSync{DeploymentID: "dep-x", Via: "password", Credential: cred, Tier: "edge", At: t0}), server.CodeInvalid)
	wantCode(t, db.RecordDownstreamSync(ctx, server.DownstreamSync{DeploymentID: "dep-x", Via: server.ViaSyncToken, Tier: "edge", At: t0}), server.CodeInvalid)
	wantCode(t, db.RecordSyncMachines(ctx, "dep-x", nil, machinesA, t0), server.CodeInvalid)
}

// TestDownstreamDeploymentBound checks that a deployment id belongs to the credential that
// recorded it: another valid credential can neither overwrite its record nor report
// machines for it, until the first one is revoked or stops syncing for a week.
func TestDownstreamDeploymentBound(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	hashA, hashB := server.HashToken("token-a"), server.HashToken("token-b")
	must[server.SyncToken](t)(db.CreateSyncToken(ctx, server.NewSyncToken{Name: "region-a", Tier: "stable", Hash: hashA}))
	must[server.SyncToken](t)(db.CreateSyncToken(ctx, server.NewSyncToken{Name: "region-b", Tier: "stable", Hash: hashB}))
	sync := func(id, name string, hash []byte, at time.Time) error {
		via := server.ViaSyncToken
		if name == "" {
			via = server.ViaResourceToken
		}
		return db.RecordDownstreamSync(ctx, server.DownstreamSync{DeploymentID: id, Via: via, SyncToken: name, Credential: hash, Tier: "stable", At: at})
	}
	owner := func(id string) string {
		t.Helper()
		for _, d := range must[[]server.Downstream](t)(db.Downstreams(ctx, t0.Add(10*24*time.Hour))) {
			if d.ID == id {
				return d.SyncToken + "@" + d.FirstSeen.Format(time.RFC3339)
			}
		}
		return "none"
	}
	machines := []server.SyncMachine{{ID: strings.Repeat("a", 64), Tier: "stable", Status: server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied}}}

	if err := sync("dep-1", "region-a", hashA, t0); err != nil {
		t.Fatal(err)
	}
	// region-b claims dep-1: refused, and the record stays region-a's.
	wantCode(t, sync("dep-1", "region-b", hashB, t0.Add(time.Hour)), server.CodeConflict)
	wantCode(t, db.RecordSyncMachines(ctx, "dep-1", hashB, machines, t0.Add(time.Hour)), server.CodeConflict)
	if got, want := owner("dep-1"), "region-a@"+t0.Format(time.RFC3339); got != want {
		t.Errorf("dep-1 after region-b's claim = %s, want %s", got, want)
	}
	// region-a itself: a late request is no conflict, and its reports are recorded.
	if err := sync("dep-1", "region-a", hashA, t0.Add(-time.Minute)); err != nil {
		t.Errorf("region-a's late request: %v", err)
	}
	if err := db.RecordSyncMachines(ctx, "dep-1", hashA, machines, t0.Add(time.Hour)); err != nil {
		t.Errorf("region-a's reports: %v", err)
	}
	// Once region-a's token is revoked, region-b may take dep-1 over; it starts anew.
	if err := db.RevokeSyncToken(ctx, "region-a"); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(2 * time.Hour)
	if err := sync("dep-1", "region-b", hashB, later); err != nil {
		t.Fatalf("region-b after region-a's revocation: %v", err)
	}
	if got, want := owner("dep-1"), "region-b@"+later.Format(time.RFC3339); got != want {
		t.Errorf("dep-1 after the takeover = %s, want %s", got, want)
	}
	wantCode(t, db.RecordSyncMachines(ctx, "dep-1", hashA, machines, later), server.CodeConflict)

	// Resource tokens: bound while the first one syncs, free after a week of silence.
	r1, r2 := server.HashToken("resource-1"), server.HashToken("resource-2")
	if err := sync("dep-2", "", r1, t0); err != nil {
		t.Fatal(err)
	}
	wantCode(t, sync("dep-2", "", r2, t0.Add(24*time.Hour)), server.CodeConflict)
	if err := sync("dep-2", "", r2, t0.Add(8*24*time.Hour)); err != nil {
		t.Errorf("a week after the first token's last sync: %v", err)
	}

	// A record of the previous server (no credential) is bound by its next request,
	// keeping its first-seen time.
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO sync_deployments (deployment_id, via, sync_token, tier, first_seen, last_sync)
		VALUES ('dep-3', 'sync-token', 'region-b', 'stable', $1, $1)`, t0); err != nil {
		t.Fatal(err)
	}
	if err := sync("dep-3", "region-b", hashB, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := owner("dep-3"), "region-b@"+t0.Format(time.RFC3339); got != want {
		t.Errorf("dep-3 after its first bound request = %s, want %s", got, want)
	}
	wantCode(t, sync("dep-3", "", r1, t0.Add(2*time.Hour)), server.CodeConflict)
}
