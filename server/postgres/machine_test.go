package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// createToken creates an auth token and returns its value.
func createToken(t testing.TB, db *postgres.DB, id, tier string, expires *time.Time, maxMachines int) string {
	t.Helper()
	value := server.NewUUID()
	_, err := db.CreateAuthToken(t.Context(), server.NewAuthToken{
		ID: id, Tier: tier, Hash: server.HashToken(value), ExpiresAt: expires, MaxMachines: maxMachines,
	})
	if err != nil {
		t.Fatal(err)
	}
	return value
}

// machineToken is the machine token tests give machine id.
func machineToken(id string) string { return "machine-token-" + id }

// enable enables machine id with the auth token value tok.
func enable(t testing.TB, db *postgres.DB, tok, id string) server.Machine {
	t.Helper()
	m, err := db.Enable(t.Context(), enrolment(tok, id), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// enrolment enables machine id with auth token tok, holding the machine token tests give
// it (its proof when it is enrolled already).
func enrolment(tok, id string) server.Enrolment {
	return server.Enrolment{
		AuthTokenHash:    server.HashToken(tok),
		MachineID:        id,
		MachineTokenHash: server.HashToken(machineToken(id)),
		CurrentTokenHash: server.HashToken(machineToken(id)),
	}
}

// checkIn is a check-in of machine id running patch version in state.
func checkIn(id, version, state string) server.CheckIn {
	return server.CheckIn{
		MachineID:        id,
		MachineTokenHash: server.HashToken(machineToken(id)),
		Status: server.Status{
			Kernel:        "5.15.0-107-generic",
			Architecture:  "amd64",
			CPUModel:      "Intel(R) Xeon(R)",
			BootTime:      time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC),
			Uptime:        3600,
			ClientVersion: "10.8.3",
			PatchState:    state,
			PatchVersion:  version,
		},
	}
}

func TestAuthTokens(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	got, err := db.CreateAuthToken(ctx, server.NewAuthToken{ID: "web", Tier: "stable", Hash: server.HashToken("a"), ExpiresAt: &expires, MaxMachines: 5})
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.IsZero() {
		t.Error("CreatedAt is zero")
	}
	want := server.AuthToken{ID: "web", Tier: "stable", CreatedAt: got.CreatedAt, ExpiresAt: &expires, MaxMachines: 5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CreateAuthToken() (-want +got):\n%s", diff)
	}

	// The id is taken while the token is not revoked.
	_, err = db.CreateAuthToken(ctx, server.NewAuthToken{ID: "web", Tier: "beta", Hash: server.HashToken("b")})
	wantCode(t, err, server.CodeConflict)
	_, err = db.CreateAuthToken(ctx, server.NewAuthToken{ID: "db", Tier: "missing", Hash: server.HashToken("c")})
	wantCode(t, err, server.CodeNotFound)
	_, err = db.CreateAuthToken(ctx, server.NewAuthToken{ID: "bad id", Tier: "beta", Hash: server.HashToken("d")})
	wantCode(t, err, server.CodeInvalid)
	_, err = db.CreateAuthToken(ctx, server.NewAuthToken{ID: "neg", Tier: "beta", Hash: server.HashToken("e"), MaxMachines: -1})
	wantCode(t, err, server.CodeInvalid)

	enable(t, db, "a", "m1")
	enable(t, db, "a", "m2")
	if err := db.RevokeAuthToken(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.RevokeAuthToken(ctx, "web"), server.CodeNotFound)
	wantCode(t, db.RevokeAuthToken(ctx, "missing"), server.CodeNotFound)

	// Revoked, the id is free again.
	newer := must[server.AuthToken](t)(db.CreateAuthToken(ctx, server.NewAuthToken{ID: "web", Tier: "beta", Hash: server.HashToken("f")}))

	tokens := must[[]server.AuthToken](t)(db.AuthTokens(ctx))
	wantTokens := []server.AuthToken{
		{ID: "web", Tier: "stable", CreatedAt: got.CreatedAt, ExpiresAt: &expires, MaxMachines: 5, Machines: 2, Revoked: true},
		{ID: "web", Tier: "beta", CreatedAt: newer.CreatedAt},
	}
	if diff := cmp.Diff(wantTokens, tokens); diff != "" {
		t.Errorf("AuthTokens() (-want +got):\n%s", diff)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	expires := now.Add(time.Hour)
	hash := server.HashToken("session")
	cred := server.HashToken("admin:$2y$...")

	if err := db.CreateSession(ctx, server.Session{ID: "s1", User: "admin", ExpiresAt: expires, Credential: cred}, hash); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.CreateSession(ctx, server.Session{ID: "s1b", User: "admin", ExpiresAt: expires}, hash), server.CodeConflict)
	wantCode(t, db.CreateSession(ctx, server.Session{ID: "s1", User: "admin", ExpiresAt: expires}, server.HashToken("x")), server.CodeConflict)
	s, err := db.Session(ctx, hash, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(server.Session{ID: "s1", User: "admin", ExpiresAt: expires, Credential: cred}, s, cmpopts.IgnoreFields(server.Session{}, "CreatedAt")); diff != "" {
		t.Errorf("Session() (-want +got):\n%s", diff)
	}
	_, err = db.Session(ctx, hash, expires)
	wantCode(t, err, server.CodeUnauthorized) // expired
	_, err = db.Session(ctx, server.HashToken("other"), now)
	wantCode(t, err, server.CodeUnauthorized)

	if err := db.DeleteSession(ctx, hash); err != nil {
		t.Fatal(err)
	}
	_, err = db.Session(ctx, hash, now)
	wantCode(t, err, server.CodeUnauthorized)
	if err := db.DeleteSession(ctx, hash); err != nil {
		t.Fatalf("DeleteSession() of an ended session: %v", err)
	}

	// Listing and revoking, by id and by user; a session the previous server made (no id,
	// no credential) is not listed but goes with its user's.
	for i, u := range []string{"admin", "bob", "admin"} {
		id := fmt.Sprint("id", i)
		if err := db.CreateSession(ctx, server.Session{ID: id, User: u, ExpiresAt: expires, Credential: cred}, server.HashToken(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO sessions (token_hash, user_name, expires_at) VALUES ($1, 'admin', $2)`, server.HashToken("old"), expires); err != nil {
		t.Fatal(err)
	}
	ids := func() []string {
		var out []string
		for _, s := range must[[]server.Session](t)(db.Sessions(ctx, now)) {
			out = append(out, s.ID+":"+s.User)
		}
		return out
	}
	if diff := cmp.Diff([]string{"id0:admin", "id1:bob", "id2:admin"}, ids()); diff != "" {
		t.Errorf("Sessions() (-want +got):\n%s", diff)
	}
	if err := db.RevokeSession(ctx, "id1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, db.RevokeSession(ctx, "id1"), server.CodeNotFound)
	if n, err := db.RevokeUserSessions(ctx, "admin"); err != nil || n != 3 {
		t.Errorf("RevokeUserSessions(admin) = %d, %v; want 3", n, err)
	}
	if got := ids(); len(got) != 0 {
		t.Errorf("sessions left: %v", got)
	}
}

func TestEnable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	web := createToken(t, db, "web", "stable", &future, 2)
	old := createToken(t, db, "old", "stable", &past, 0)
	gone := createToken(t, db, "gone", "stable", nil, 0)
	if err := db.RevokeAuthToken(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	beta := createToken(t, db, "beta", "beta", nil, 0)

	m, err := db.Enable(ctx, enrolment(web, "m1"), now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(server.Machine{ID: "m1", Tier: "stable", TokenID: "web", EnabledAt: now, FirstSeen: now}, m); diff != "" {
		t.Errorf("Enable() (-want +got):\n%s", diff)
	}
	enable(t, db, web, "m2")

	tests := []struct {
		tok, id string
		code    server.Code
	}{
		{"unknown", "m9", server.CodeUnauthorized},
		{old, "m9", server.CodeUnauthorized},  // expired
		{gone, "m9", server.CodeUnauthorized}, // revoked
		{web, "m3", server.CodeForbidden},     // two machines already
		{web, "m1", ""},                       // re-enabling is not one more machine
		{beta, "m1", ""},                      // moves m1 to beta
		{web, "m3", ""},                       // m1 left web: room for m3
		{web, "m1", server.CodeForbidden},     // and now web is full again
		{beta, "m-beta", ""},                  // unlimited
		{"unknown", "m-beta", server.CodeUnauthorized},
	}
	for _, test := range tests {
		_, err := db.Enable(ctx, enrolment(test.tok, test.id), now)
		if test.code == "" && err != nil {
			t.Fatalf("Enable(%s): %v", test.id, err)
		}
		if test.code != "" {
			wantCode(t, err, test.code)
		}
	}

	// Re-enabling replaced m1's tier and token: the check-in says so.
	tier, err := db.CheckIn(ctx, checkIn("m1", "", server.StateNothingToApply), now)
	if err != nil || tier != "beta" {
		t.Fatalf("CheckIn(m1) = %q, %v; want beta", tier, err)
	}
	machines := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{}))
	var got []string
	for _, m := range machines {
		got = append(got, m.ID+":"+m.Tier+":"+m.TokenID)
	}
	if diff := cmp.Diff([]string{"m-beta:beta:beta", "m1:beta:beta", "m2:stable:web", "m3:stable:web"}, got); diff != "" {
		t.Errorf("machines (-want +got):\n%s", diff)
	}
}

// TestEnableTakeover checks that an auth token cannot take over an enrolled machine by its
// id: re-enabling needs the machine's current token.
func TestEnableTakeover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	now := time.Now().UTC()
	web := createToken(t, db, "web", "stable", nil, 0)
	attacker := createToken(t, db, "lab", "beta", nil, 0)
	enable(t, db, web, "victim")
	for _, proof := range [][]byte{nil, server.HashToken("guess")} {
		_, err := db.Enable(ctx, server.Enrolment{
			AuthTokenHash: server.HashToken(attacker), MachineID: "victim",
			MachineTokenHash: server.HashToken("attacker's"), CurrentTokenHash: proof,
		}, now)
		wantCode(t, err, server.CodeConflict)
	}
	// Same auth token as the victim's: still no takeover.
	_, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken(web), MachineID: "victim", MachineTokenHash: server.HashToken("x")}, now)
	wantCode(t, err, server.CodeConflict)
	// The victim keeps its token and tier.
	if tier, err := db.CheckIn(ctx, checkIn("victim", "", server.StateNothingToApply), now); err != nil || tier != "stable" {
		t.Fatalf("victim's check-in = %q, %v; want stable", tier, err)
	}
	// An administrator frees the id; then it enables as a new machine.
	wantCode(t, db.RemoveMachine(ctx, "nobody"), server.CodeNotFound)
	if err := db.RemoveMachine(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken(web), MachineID: "victim", MachineTokenHash: server.HashToken("new")}, now); err != nil {
		t.Errorf("enable after removal: %v", err)
	}
}

// The machine limit holds when many machines enable at once.
func TestEnableLimitConcurrently(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	tok := createToken(t, db, "web", "stable", nil, 3)
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Go(func() {
			_, err := db.Enable(t.Context(), enrolment(tok, fmt.Sprint("m", i)), time.Now())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch server.ErrorCode(err) {
		case server.CodeForbidden:
		default:
			if err != nil {
				t.Errorf("Enable: %v", err)
				continue
			}
			ok++
		}
	}
	if ok != 3 {
		t.Errorf("%d machines enabled with a token for 3", ok)
	}
}

func TestCheckIn(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "candidate", nil, 0)
	enable(t, db, tok, "m1")
	now := time.Now().UTC().Truncate(time.Microsecond)

	c := checkIn("m1", "107.1", server.StateApplied)
	tier, err := db.CheckIn(ctx, c, now)
	if err != nil || tier != "candidate" {
		t.Fatalf("CheckIn() = %q, %v; want candidate", tier, err)
	}
	machines := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{}))
	want := []server.Machine{{ID: "m1", Tier: "candidate", TokenID: "web", EnabledAt: machines[0].EnabledAt,
		FirstSeen: machines[0].EnabledAt, LastSeen: now, StateSince: now, Status: c.Status}}
	if diff := cmp.Diff(want, machines); diff != "" {
		t.Errorf("machines after check-in (-want +got):\n%s", diff)
	}

	// A second report: the latest wins, both are in the history. No boot time is fine.
	c2 := checkIn("m1", "107.2", server.StateNeedsCheck)
	c2.Status.BootTime = time.Time{}
	if _, err := db.CheckIn(ctx, c2, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	m := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{}))[0]
	if diff := cmp.Diff(c2.Status, m.Status); diff != "" {
		t.Errorf("status after second check-in (-want +got):\n%s", diff)
	}
	if got := reportCount(t, db); got != 2 {
		t.Errorf("history has %d rows, want 2", got)
	}

	// Wrong token, unknown machine: unauthorized, nothing recorded.
	bad := checkIn("m1", "107.1", server.StateApplied)
	bad.MachineTokenHash = server.HashToken("wrong")
	_, err = db.CheckIn(ctx, bad, now)
	wantCode(t, err, server.CodeUnauthorized)
	_, err = db.CheckIn(ctx, checkIn("m2", "107.1", server.StateApplied), now)
	wantCode(t, err, server.CodeUnauthorized)
	if got := reportCount(t, db); got != 2 {
		t.Errorf("history has %d rows after refused check-ins, want 2", got)
	}
}

func reportCount(t *testing.T, db *postgres.DB) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRowContext(t.Context(), `SELECT count(*) FROM machine_reports`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDisable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "stable", nil, 1)
	enable(t, db, tok, "m1")

	wantCode(t, db.Disable(ctx, "m1", server.HashToken("wrong")), server.CodeUnauthorized)
	wantCode(t, db.Disable(ctx, "m2", server.HashToken(machineToken("m2"))), server.CodeUnauthorized)
	if err := db.Disable(ctx, "m1", server.HashToken(machineToken("m1"))); err != nil {
		t.Fatal(err)
	}
	_, err := db.CheckIn(ctx, checkIn("m1", "", server.StateUnknown), time.Now())
	wantCode(t, err, server.CodeUnauthorized)
	// The machine no longer counts against the token's limit.
	enable(t, db, tok, "m2")
}

func TestMachinesPagination(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	stable := createToken(t, db, "web", "stable", nil, 0)
	beta := createToken(t, db, "qa", "beta", nil, 0)
	for i := range 25 {
		id := fmt.Sprintf("m%02d", i)
		tok := stable
		if i%5 == 0 {
			tok = beta
		}
		enable(t, db, tok, id)
		state := server.StateApplied
		if i%2 == 1 {
			state = server.StateApplyFailed
		}
		if _, err := db.CheckIn(ctx, checkIn(id, "107.1", state), time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	// Walk all pages of 10.
	var ids []string
	after := ""
	for page := 0; page < 10; page++ {
		ms := must[[]server.Machine](t)(db.Machines(ctx, server.MachineFilter{After: after, Limit: 10}))
		if len(ms) > 10 {
			t.Fatalf("page has %d machines, limit 10", len(ms))
		}
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			ids = append(ids, m.ID)
		}
		after = ms[len(ms)-1].ID
	}
	var want []string
	for i := range 25 {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("paged ids (-want +got):\n%s", diff)
	}

	count := func(f server.MachineFilter) int {
		return len(must[[]server.Machine](t)(db.Machines(ctx, f)))
	}
	for _, test := range []struct {
		f    server.MachineFilter
		want int
	}{
		{server.MachineFilter{Tier: "beta"}, 5},
		{server.MachineFilter{Tier: "stable"}, 20},
		{server.MachineFilter{Tier: "edge"}, 0},
		{server.MachineFilter{PatchState: server.StateApplyFailed}, 12},
		{server.MachineFilter{PatchVersion: "107.1"}, 25},
		{server.MachineFilter{PatchVersion: "107.2"}, 0},
		{server.MachineFilter{Tier: "beta", PatchState: server.StateApplied}, 3},
		{server.MachineFilter{After: "m20"}, 4},
	} {
		if got := count(test.f); got != test.want {
			t.Errorf("Machines(%+v) lists %d machines, want %d", test.f, got, test.want)
		}
	}
	_, err := db.Machines(ctx, server.MachineFilter{Tier: "missing"})
	wantCode(t, err, server.CodeNotFound)
}

func TestPatchHealthAndKernels(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	stable := createToken(t, db, "web", "stable", nil, 0)
	beta := createToken(t, db, "qa", "beta", nil, 0)
	report := func(tok, id, version, state, kernel string) {
		enable(t, db, tok, id)
		c := checkIn(id, version, state)
		c.Status.Kernel = kernel
		if _, err := db.CheckIn(ctx, c, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	report(stable, "a", "107.1", server.StateApplied, "5.15.0-107-generic")
	report(stable, "b", "107.1", server.StateApplied, "5.15.0-107-generic")
	report(stable, "c", "107.1", server.StateApplyFailed, "5.15.0-107-generic")
	report(stable, "d", "107.2", server.StateApplied, "6.8.0-31-generic")
	report(beta, "e", "107.1", server.StateApplied, "6.8.0-31-generic")
	enable(t, db, stable, "f") // never checked in

	health := must[map[string]int](t)(db.PatchHealth(ctx, "stable", "107.1"))
	if diff := cmp.Diff(map[string]int{server.StateApplied: 2, server.StateApplyFailed: 1}, health); diff != "" {
		t.Errorf("PatchHealth() (-want +got):\n%s", diff)
	}
	health = must[map[string]int](t)(db.PatchHealth(ctx, "edge", "107.1"))
	if diff := cmp.Diff(map[string]int{}, health); diff != "" {
		t.Errorf("PatchHealth() of an empty tier (-want +got):\n%s", diff)
	}
	_, err := db.PatchHealth(ctx, "missing", "107.1")
	wantCode(t, err, server.CodeNotFound)

	kernels := must[[]server.KernelCount](t)(db.Kernels(ctx))
	want := []server.KernelCount{
		{Kernel: "5.15.0-107-generic", Architecture: "amd64", Machines: 3},
		{Kernel: "6.8.0-31-generic", Architecture: "amd64", Machines: 2},
	}
	if diff := cmp.Diff(want, kernels); diff != "" {
		t.Errorf("Kernels() (-want +got):\n%s", diff)
	}
}

func TestCleanupReports(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	tok := createToken(t, db, "web", "stable", nil, 0)
	enable(t, db, tok, "m1")
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		if _, err := db.CheckIn(ctx, checkIn("m1", "107.1", server.StateApplied), start.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := start.Add(7 * time.Hour) // rows 0..6 are older

	// The first batch also deletes the one change older than the cutoff (the first
	// check-in's; enabling happened now).
	for _, want := range []int{4, 3, 1, 0} {
		if n := must[int](t)(db.CleanupReports(ctx, cutoff, 3)); n != want {
			t.Fatalf("CleanupReports() = %d, want %d", n, want)
		}
	}
	if got := reportCount(t, db); got != 3 {
		t.Errorf("history has %d rows after cleanup, want 3", got)
	}
	_, err := db.CleanupReports(ctx, cutoff, 0)
	wantCode(t, err, server.CodeInvalid)
}

// TestCheckInDurability checks both commit modes record the check-in, and that the
// asynchronous mode stays local to the check-in: the connection it used (the only one)
// still commits synchronously afterwards.
func TestCheckInDurability(t *testing.T) {
	ctx := context.Background()
	for _, sync := range []bool{false, true} {
		dsn := pgtest.DSN(t)
		db, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 1, SynchronousCheckIns: sync})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, _, err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateAuthToken(ctx, server.NewAuthToken{ID: "t", Tier: "edge", Hash: server.HashToken("tok")}); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if _, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("tok"), MachineID: "m1", MachineTokenHash: server.HashToken("mt")}, now); err != nil {
			t.Fatal(err)
		}
		// The test cluster runs with synchronous_commit off; make the one connection's own
		// setting on, so a leak of the check-in's local setting would show.
		if _, err := db.SQL().ExecContext(ctx, `SET synchronous_commit = on`); err != nil {
			t.Fatal(err)
		}
		st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateNothingToApply}
		tier, err := db.CheckIn(ctx, server.CheckIn{MachineID: "m1", MachineTokenHash: server.HashToken("mt"), Status: st}, now)
		if err != nil || tier != "edge" {
			t.Fatalf("sync=%v: CheckIn = %q, %v", sync, tier, err)
		}
		var setting string
		var reports int
		if err := db.SQL().QueryRowContext(ctx, `SELECT current_setting('synchronous_commit'), (SELECT count(*) FROM machine_reports)`).Scan(&setting, &reports); err != nil {
			t.Fatal(err)
		}
		if setting != "on" || reports != 1 {
			t.Errorf("sync=%v: after a check-in synchronous_commit is %q and %d reports, want on and 1", sync, setting, reports)
		}
	}
}
