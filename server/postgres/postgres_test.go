package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/livepatch-onprem/livepatch/internal/pgtest"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openDB opens a store on a new database, without migrating it.
func openDB(t testing.TB, dsn string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newDB returns a store on a new, migrated database.
func newDB(t testing.TB) *postgres.DB {
	t.Helper()
	db := openDB(t, pgtest.DSN(t))
	if _, _, err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// wantCode fails the test unless err carries code.
func wantCode(t testing.TB, err error, code server.Code) {
	t.Helper()
	if got := server.ErrorCode(err); got != code {
		t.Fatalf("got error %v (code %s), want code %s", err, got, code)
	}
}

func must[T any](t testing.TB) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestMigrateFromEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := openDB(t, pgtest.DSN(t))
	latest := postgres.LatestVersion()
	if latest < 1 {
		t.Fatalf("LatestVersion() = %d, want at least 1", latest)
	}

	current, gotLatest, err := db.SchemaVersion(ctx)
	if err != nil || current != 0 || gotLatest != latest {
		t.Fatalf("SchemaVersion() on empty database = %d, %d, %v; want 0, %d, nil", current, gotLatest, err, latest)
	}
	from, to, err := db.Migrate(ctx)
	if err != nil || from != 0 || to != latest {
		t.Fatalf("first Migrate() = %d, %d, %v; want 0, %d, nil", from, to, err, latest)
	}
	from, to, err = db.Migrate(ctx)
	if err != nil || from != latest || to != latest {
		t.Fatalf("second Migrate() = %d, %d, %v; want %d, %d, nil", from, to, err, latest, latest)
	}
	current, _, err = db.SchemaVersion(ctx)
	if err != nil || current != latest {
		t.Fatalf("SchemaVersion() after migrating = %d, %v; want %d", current, err, latest)
	}

	tiers := must[[]server.Tier](t)(db.Tiers(ctx))
	var want []server.Tier
	for i, name := range server.DefaultTiers {
		want = append(want, server.Tier{Name: name, Position: i + 1})
	}
	if fmt.Sprint(tiers) != fmt.Sprint(want) {
		t.Fatalf("tiers after migrating = %v, want %v", tiers, want)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	type result struct{ from, to int }
	results := make(chan result, 3)
	var wg sync.WaitGroup
	for range 3 {
		db := openDB(t, dsn) // one pool per "unit"
		wg.Go(func() {
			from, to, err := db.Migrate(t.Context())
			if err != nil {
				t.Error(err)
			}
			results <- result{from, to}
		})
	}
	wg.Wait()
	close(results)
	latest := postgres.LatestVersion()
	fresh := 0
	for r := range results {
		switch r {
		case result{0, latest}:
			fresh++
		case result{latest, latest}:
		default:
			t.Errorf("Migrate() = %d, %d; want 0 or %d, then %d", r.from, r.to, latest, latest)
		}
	}
	if fresh != 1 {
		t.Errorf("%d units migrated from 0, want exactly 1", fresh)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close() // nothing listens there now
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=nobody dbname=nothing sslmode=disable connect_timeout=5", addr.Port)
	_, err = postgres.Open(t.Context(), dsn, postgres.Options{})
	wantCode(t, err, server.CodeUnavailable)
}

func TestOpenInvalidDSN(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(t.Context(), "host=127.0.0.1 sslmode=bogus", postgres.Options{})
	wantCode(t, err, server.CodeInvalid)
}

func TestPing(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	if err := db.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestRunExclusive(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	unit1, unit2 := openDB(t, dsn), openDB(t, dsn)
	ctx := t.Context()

	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		ran, err := unit1.RunExclusive(ctx, "cleanup", func(ctx context.Context) error {
			close(inside)
			<-release
			return nil
		})
		if err == nil && !ran {
			err = errors.New("first unit did not run the job")
		}
		done <- err
	}()
	<-inside

	// While unit 1 runs the job, unit 2 cannot; another job is free.
	ran, err := unit2.RunExclusive(ctx, "cleanup", func(context.Context) error {
		t.Error("second unit ran the job while the first held it")
		return nil
	})
	if err != nil || ran {
		t.Fatalf("RunExclusive on second unit = %v, %v; want false, nil", ran, err)
	}
	ran, err = unit2.RunExclusive(ctx, "sync", func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Fatalf("RunExclusive of another job = %v, %v; want true, nil", ran, err)
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Released: unit 2 runs it now, and the job's error comes back.
	jobErr := errors.New("job failed")
	ran, err = unit2.RunExclusive(ctx, "cleanup", func(context.Context) error { return jobErr })
	if !ran || !errors.Is(err, jobErr) {
		t.Fatalf("RunExclusive after release = %v, %v; want true, %v", ran, err, jobErr)
	}
	// A failed job releases the lock too.
	ran, err = unit1.RunExclusive(ctx, "cleanup", func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Fatalf("RunExclusive after failed job = %v, %v; want true, nil", ran, err)
	}
}

func TestCatalogVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db := newDB(t)
	v := must[int64](t)(db.CatalogVersion(ctx))
	changed := func(what string) {
		t.Helper()
		nv := must[int64](t)(db.CatalogVersion(ctx))
		if nv == v {
			t.Fatalf("catalog version did not change after %s", what)
		}
		v = nv
	}
	must[server.Tier](t)(db.AddTier(ctx, "qa", server.TierPlacement{}))
	changed("AddTier")
	must[server.Patch](t)(db.AddPatch(ctx, testPatch("107.1", "amd64")))
	changed("AddPatch")
	must[int](t)(db.SetBlocked(ctx, "107.1", true, "bad"))
	changed("SetBlocked")
	must[int](t)(db.PromotePatch(ctx, "107.1", "stable"))
	changed("PromotePatch")
	if err := db.DeleteTier(ctx, "qa"); err != nil {
		t.Fatal(err)
	}
	changed("DeleteTier")
	if err := db.DeletePatchRecord(ctx, testPatch("107.1", "amd64").Filename); err != nil {
		t.Fatal(err)
	}
	changed("DeletePatchRecord")

	// Machine traffic leaves the catalog alone.
	tok := createToken(t, db, "web", "stable", nil, 0)
	enable(t, db, tok, "m1")
	if _, err := db.CheckIn(ctx, checkIn("m1", "107.1", server.StateApplied), time.Now()); err != nil {
		t.Fatal(err)
	}
	if nv := must[int64](t)(db.CatalogVersion(ctx)); nv != v {
		t.Fatalf("catalog version changed from %d to %d after machine traffic", v, nv)
	}
}

// TestReadOnlySessionUnavailable checks that a write refused because the session is
// read-only (its server was the primary and is a standby now, mid-switchover) is the
// database being unavailable, a 503 the client retries, not an internal error.
func TestReadOnlySessionUnavailable(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	rw := openDB(t, dsn)
	if _, _, err := rw.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Every new session of the database is read-only, as on a standby.
	var name string
	if err := rw.SQL().QueryRowContext(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := rw.SQL().ExecContext(t.Context(), `ALTER DATABASE `+pq.QuoteIdentifier(name)+` SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	ro := openDB(t, dsn)
	var setting string
	if err := ro.SQL().QueryRowContext(t.Context(), `SHOW default_transaction_read_only`).Scan(&setting); err != nil || setting != "on" {
		t.Fatalf("default_transaction_read_only = %q, %v", setting, err)
	}
	// One statement outside an explicit transaction (lib/pq begins those READ WRITE, which
	// a standby refuses with the same code).
	err := ro.RecordDownstreamSync(t.Context(), server.DownstreamSync{DeploymentID: "dep-1", Via: server.ViaResourceToken,
		Credential: server.HashToken("r"), Tier: "stable", At: time.Now()})
	wantCode(t, err, server.CodeUnavailable)
}
