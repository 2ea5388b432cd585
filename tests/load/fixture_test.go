package load

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestPickSQL(t *testing.T) {
	got := PickSQL("r", []Weighted{{"a", 1}, {"b", 1}, {"c'd", 2}})
	want := "CASE WHEN r < 0.250000 THEN 'a' WHEN r < 0.500000 THEN 'b' ELSE 'c''d' END"
	if got != want {
		t.Errorf("PickSQL =\n%s\nwant\n%s", got, want)
	}
}

// TestFleetFixture loads a small fleet into the real schema and checks that it is what
// the benchmark says it is, and that the store reads it.
func TestFleetFixture(t *testing.T) {
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.DSN(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db := store.SQL()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for _, stmt := range append(FleetSQL(n), FleetVacuumSQL...) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	conn.Close()

	query := func(q string, dest ...any) {
		t.Helper()
		if err := db.QueryRowContext(ctx, q).Scan(dest...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	var machines, tokens, minRows, maxRows, stable int
	query(`SELECT count(*) FROM machines`, &machines)
	query(`SELECT count(*) FROM auth_tokens WHERE label LIKE 'fleet-%'`, &tokens)
	query(`SELECT min(c), max(c) FROM (SELECT count(*) AS c FROM machine_reports GROUP BY machine_id) r`, &minRows, &maxRows)
	query(`SELECT count(*) FROM machines m JOIN tiers t ON t.id = m.tier_id WHERE t.name = 'stable'`, &stable)
	if machines != n || tokens != 4 {
		t.Errorf("%d machines, %d tokens; want %d, 4", machines, tokens, n)
	}
	if minRows != 3 || maxRows != 10 {
		t.Errorf("history rows per machine from %d to %d, want 3 to 10", minRows, maxRows)
	}
	if share := float64(stable) / n; share < 0.6 || share > 0.8 {
		t.Errorf("%.2f of the fleet on stable, want about 0.7", share)
	}
	var reports, old int
	cutoff := time.Now().Add(-90 * 24 * time.Hour)
	if err := db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE reported_at < $1) FROM machine_reports`, cutoff).Scan(&reports, &old); err != nil {
		t.Fatal(err)
	}
	if share := float64(old) / float64(reports); share < 0.1 || share > 0.3 {
		t.Errorf("%.2f of the history is older than 90 days, want about 0.2", share)
	}
	var oldChanges int
	query(`SELECT count(*) FROM machine_changes WHERE changed_at < now() - interval '90 days'`, &oldChanges)

	// Every kind of row is a status the server accepts.
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT kernel, architecture, patch_state, patch_version FROM machines`)
	if err != nil {
		t.Fatal(err)
	}
	kinds := 0
	for rows.Next() {
		var st server.Status
		if err := rows.Scan(&st.Kernel, &st.Architecture, &st.PatchState, &st.PatchVersion); err != nil {
			t.Fatal(err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("fixture status %+v: %v", st, err)
		}
		kinds++
	}
	rows.Close()
	if kinds < len(FleetKernels) {
		t.Errorf("only %d kinds of machine", kinds)
	}
	checkEnabledBeforeSeen(t, db)

	// The store reads it: a page of machines, patch health, and the cleanup.
	page, err := store.Machines(ctx, server.MachineFilter{Tier: "stable", Limit: 100})
	if err != nil || len(page) != 100 || page[0].TokenID != "fleet-stable" {
		t.Errorf("Machines: %d machines, %v", len(page), err)
	}
	health, err := store.PatchHealth(ctx, "stable", FleetKernels[0].PatchVersion)
	if err != nil || health["applied"] == 0 {
		t.Errorf("PatchHealth = %v, %v", health, err)
	}
	tagged, err := store.Machines(ctx, server.MachineFilter{Tags: map[string]string{"role": "db"}})
	if err != nil || len(tagged) != n/10 {
		t.Errorf("Machines tagged role=db: %d machines, %v; want %d", len(tagged), err, n/10)
	}
	byHost, err := store.Machines(ctx, server.MachineFilter{Hostname: "host-42"})
	if err != nil || len(byHost) != 1 {
		t.Fatalf("Machines of host-42: %d machines, %v; want 1", len(byHost), err)
	}
	detail, err := store.Machine(ctx, byHost[0].ID, 20)
	if err != nil || len(detail.History) != 3 || detail.History[2].Cause != server.CauseEnable {
		t.Errorf("Machine(%s) history = %+v, %v; want three changes from its enable", byHost[0].ID, detail.History, err)
	}
	deleted := 0
	for range 100 {
		n, err := store.CleanupReports(ctx, cutoff, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		deleted += n
	}
	if deleted != old+oldChanges {
		t.Errorf("cleanup deleted %d rows, want the %d reports and %d changes older than 90 days", deleted, old, oldChanges)
	}
}

func checkEnabledBeforeSeen(t *testing.T, db *sql.DB) {
	t.Helper()
	var bad int
	if err := db.QueryRow(`SELECT count(*) FROM machines WHERE enabled_at > last_seen OR boot_time > last_seen`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%d machines seen before they were enabled or booted", bad)
	}
}

func TestReportMarkdown(t *testing.T) {
	r := &Report{
		Size: "quick", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Took: 3 * time.Minute,
		Machine:  MachineInfo{CPUs: 2, CPUModel: "AMD EPYC", MemTotal: "23.4 GiB", Kernel: "6.1", LoadAvg: "0.1 0.2 0.3"},
		Notes:    []string{"Measured while other work ran."},
		Summary:  append([]Row{{ID: "1a", Measurement: "check-ins", Result: "3000/s", Ceiling: "6000/s", Ratio: Ratio(3000, 6000), Target: "≥ 3,000/s", Met: Verdict(true)}}, HooksNotRun("not run (lpbench -only)")...),
		Sections: []Section{{Title: "Details", Header: []string{"a", "b"}, Rows: [][]string{{"1", "2"}}}},
	}
	var md strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| 1a | check-ins | 3000/s | 6000/s | 0.50 | ≥ 3,000/s | yes |\n",
		"| 4a | charm hooks: dispatch wall time per hook",
		"| not run (lpbench -only) |",
		"> Measured while other work ran.\n",
		"| a | b |\n|---|---|\n| 1 | 2 |\n",
		"| CPUs (nproc) | 2 |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	var table strings.Builder
	r.WriteTable(&table)
	if strings.Contains(table.String(), "**") || !strings.Contains(table.String(), "not run (lpbench -only)") {
		t.Errorf("table:\n%s", table.String())
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{1500 * time.Microsecond, "1.50 ms"}, {42300 * time.Microsecond, "42.3 ms"}, {1234 * time.Millisecond, "1234 ms"}} {
		if got := Millis(tc.d); got != tc.want {
			t.Errorf("Millis(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := Count(n); got != want {
			t.Errorf("Count(%d) = %q, want %q", n, got, want)
		}
	}
	if Ratio(1, 0) != "-" || Verdict(false) != "**no**" {
		t.Error("Ratio or Verdict")
	}
}
