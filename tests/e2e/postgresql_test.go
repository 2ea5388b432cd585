package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/standin/postgresql"
)

// The PostgreSQL scenarios: the livepatch charm against PostgreSQL as the postgresql charm
// serves it (the stand-in: real servers, TLS, a streaming replica, switchover), under
// check-ins through haproxy. Each deploys the bundle, or a variant of it, without an
// upstream (nothing to sync), so that it stays short.

// Witness sizes: a few machines checking in often enough that an outage shows, a failed
// attempt retried at once three times (as the reliability drills do).
const (
	witnessMachines = 6
	witnessRate     = 12
	witnessRetries  = 3
)

// bundleVariant writes the repository's bundle.yaml with each old string replaced by its
// new one (pairs), and returns its path.
func bundleVariant(t *testing.T, pairs ...string) string {
	t.Helper()
	root, err := deploy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "bundle", "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("bundle.yaml has no %q", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	path := filepath.Join(t.TempDir(), "bundle.yaml")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Edits of bundle.yaml for the variants.
const (
	postgresqlUnits = "    num_units: 1\n    constraints: cpu-cores=1 mem=4G root-disk=50G\n"
	databaseRel     = `["livepatch:database", "postgresql:database"]`
	legacyRel       = `["livepatch:db", "postgresql:db"]`
)

// postgresqlWith is the postgresql application of the bundle with n units and, when tls,
// the stand-in's tls option (what relating postgresql:certificates to a certificates
// provider does to the real charm).
func postgresqlWith(n int, tls bool) string {
	s := strings.Replace(postgresqlUnits, "num_units: 1", fmt.Sprintf("num_units: %d", n), 1)
	if tls {
		s += "    options:\n      tls: true\n"
	}
	return s
}

// deployNoUpstream deploys bundle (a variant) and configures it as the guide does, without
// an upstream.
func deployNoUpstream(t *testing.T, bundle string) *deploy.Deployment {
	t.Helper()
	d := deploy.New(t, deploy.Options{NoUpstream: true, Bundle: bundle})
	// The postgresql leader publishes db credentials once its pg_hba has loaded them, at
	// its next hook (the real charm defers the event): update-status is one.
	d.Model.TriggerUpdateStatus()
	d.Configure(t)
	return d
}

// pgSuperuser connects to a postgresql unit's own server as its superuser, through the
// unit's socket (local trust, as the charm administers its server), to database db.
func pgSuperuser(t *testing.T, d *deploy.Deployment, unit, db string) *sql.DB {
	t.Helper()
	root, err := d.Model.UnitRoot(unit)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sql.Open("postgres", fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable",
		filepath.Join(root, "run", "postgresql"), postgresql.Port, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// livepatchDB is the database the charm asks for (psql_dbname).
func livepatchDB(t *testing.T, d *deploy.Deployment) string {
	t.Helper()
	return configValue(t, d, "livepatch", "psql_dbname")
}

// serverSessions counts the livepatch server's sessions on a postgresql unit (those of the
// relation user), and those of them on TLS.
func serverSessions(t *testing.T, d *deploy.Deployment, unit string) (all, onTLS int) {
	t.Helper()
	db := pgSuperuser(t, d, unit, "postgres")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE s.ssl)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.usename LIKE 'relation-%' AND a.datname = $1`, livepatchDB(t, d)).Scan(&all, &onTLS)
	if err != nil {
		t.Fatalf("cannot read %s's sessions: %v", unit, err)
	}
	return all, onTLS
}

// steadyCheckIns lets n more check-ins of w end and fails the test if any of them failed.
func steadyCheckIns(t *testing.T, w *deploy.Witness, n int64) {
	t.Helper()
	base := w.Stats()
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	if err := w.WaitEnded(ctx, base, n); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats().Sub(base); st.Failed > 0 {
		t.Errorf("check-ins failed: %v:\n%s", st, strings.Join(st.Errors, "\n"))
	}
}

// wantDSN checks the connection string the charm rendered on a livepatch unit: it has each
// of want (key='value' pairs) and none of not.
func wantDSN(t *testing.T, d *deploy.Deployment, unit string, want, not []string) string {
	t.Helper()
	dsn := d.ServerConfig(t, unit).Database.ConnectionString
	redacted := redactPassword(dsn)
	for _, w := range want {
		if !strings.Contains(dsn, w) {
			t.Errorf("%s: connection string %s has no %s", unit, redacted, w)
		}
	}
	for _, n := range not {
		if strings.Contains(dsn, n) {
			t.Errorf("%s: connection string %s has %s", unit, redacted, n)
		}
	}
	return dsn
}

// redactPassword hides the password of a key=value connection string.
func redactPassword(dsn string) string {
	var out []string
	for _, f := range strings.Fields(dsn) {
		if strings.HasPrefix(f, "password=") {
			f = "password=<redacted>"
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}

// caPath is where the charm writes the database CA on a unit, as the unit sees it.
func caPath(t *testing.T, d *deploy.Deployment, unit string) string {
	t.Helper()
	root, err := d.Model.UnitRoot(unit)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, livepatch.CAPath)
}

// checkVerifiedTLS checks that a livepatch unit verifies PostgreSQL with the CA the
// database relation shares: verify-full with sslrootcert the CA file, which holds the
// shared CA (mode 0600), and that the server's sessions are all on TLS.
func checkVerifiedTLS(t *testing.T, d *deploy.Deployment, unit, pgUnit string) {
	t.Helper()
	ca := caPath(t, d, unit)
	wantDSN(t, d, unit, []string{"sslmode='verify-full'", "sslrootcert='" + ca + "'"}, nil)
	id, err := d.Model.RelationID("livepatch:database", "postgresql:database")
	if err != nil {
		t.Fatal(err)
	}
	shared, err := d.Model.RelationData(id, "postgresql")
	if err != nil {
		t.Fatal(err)
	}
	// The charm asks for secrets: postgresql shares TLS in the secret secret-tls names.
	if uri := shared["secret-tls"]; uri != "" {
		info, err := d.Model.ShowSecret(uri, true, 0)
		if err != nil {
			t.Fatal(err)
		}
		shared = info.Content
	}
	if shared["tls"] != "True" || shared["tls-ca"] == "" {
		t.Fatalf("postgresql shares tls %q and a CA of %d bytes", shared["tls"], len(shared["tls-ca"]))
	}
	data, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(data)) != strings.TrimSpace(shared["tls-ca"]) {
		t.Errorf("%s does not hold the CA postgresql shares", livepatch.CAPath)
	}
	if fi, err := os.Stat(ca); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600", livepatch.CAPath, fi.Mode(), err)
	}
	all, onTLS := serverSessions(t, d, pgUnit)
	if all == 0 || onTLS != all {
		t.Errorf("the server has %d sessions on %s, %d of them on TLS; want some, all on TLS", all, pgUnit, onTLS)
	}
}

// TestPostgreSQLDatabaseTLS relates livepatch:database to a postgresql that serves TLS from
// the start: the charm verifies the server's certificate with the shared CA (verify-full)
// and serves check-ins.
func TestPostgreSQLDatabaseTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys the bundle: skipped with -short")
	}
	t.Parallel()
	d := deployNoUpstream(t, bundleVariant(t, postgresqlUnits, postgresqlWith(1, true)))
	w := d.StartWitness(t, witnessMachines, witnessRate, witnessRetries)
	steadyCheckIns(t, w, 2*witnessMachines)
	checkVerifiedTLS(t, d, "livepatch/0", "postgresql/0")
	if lost := w.Verify(t, d.OpenDatabase(t)); lost > 0 {
		t.Errorf("%d acknowledged check-ins lost", lost)
	}
}

// TestPostgreSQLTLSLater turns TLS on on the postgresql of a running deployment: postgresql
// shares tls and its CA on the database relation, the charm renders verify-full with the
// CA and restarts the server through the rolling restart, and the server serves check-ins
// again, with every acknowledged one in the database.
func TestPostgreSQLTLSLater(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys the bundle: skipped with -short")
	}
	t.Parallel()
	d := deployNoUpstream(t, "")
	wantDSN(t, d, "livepatch/0", []string{"sslmode='prefer'"}, []string{"sslrootcert="})
	w := d.StartWitness(t, witnessMachines, witnessRate, witnessRetries)
	steadyCheckIns(t, w, 2*witnessMachines)

	since := time.Now()
	base := w.Stats()
	// What `juju integrate postgresql:certificates self-signed-certificates` does to the
	// real charm.
	d.Config(t, "postgresql", map[string]string{"tls": "true"})
	// The hooks the change sets off (postgresql's, then livepatch's relation-changed, the
	// rolling restart) are queued before the model is idle again.
	d.WaitActive(t)
	t.Logf("TLS turned on: livepatch Active again after %s", time.Since(since).Round(time.Millisecond))
	if got := d.Restarts(since); len(got) != 1 {
		t.Errorf("restarts since TLS was turned on: %v, want one (rolling restart) of livepatch/0", got)
	}
	steadyCheckIns(t, w, 2*witnessMachines)
	during := w.Stats().Sub(base)
	t.Logf("check-ins while TLS was turned on: %v", during)
	checkVerifiedTLS(t, d, "livepatch/0", "postgresql/0")
	if lost := w.Verify(t, d.OpenDatabase(t)); lost > 0 {
		t.Errorf("%d acknowledged check-ins lost", lost)
	}
}

// TestPostgreSQLLegacyReplicas relates the legacy livepatch:db to a postgresql of two units,
// a primary and a streaming replica, then switches the primary over to the replica under
// continuous check-ins.
func TestPostgreSQLLegacyReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys the bundle: skipped with -short")
	}
	t.Parallel()
	d := deployNoUpstream(t, bundleVariant(t, postgresqlUnits, postgresqlWith(2, false), databaseRel, legacyRel))
	primary := d.Model.Leader("postgresql")
	var replica string
	for _, u := range d.Units("postgresql") {
		if u != primary {
			replica = u
		}
	}
	primaryAddr, err := d.Model.UnitAddress(primary)
	if err != nil {
		t.Fatal(err)
	}
	replicaAddr, err := d.Model.UnitAddress(replica)
	if err != nil {
		t.Fatal(err)
	}
	w := d.StartWitness(t, witnessMachines, witnessRate, witnessRetries)

	// The server names both units and takes the one that takes writes: the primary.
	t.Run("primary", func(t *testing.T) {
		steadyCheckIns(t, w, 2*witnessMachines)
		wantDSN(t, d, "livepatch/0", []string{primaryAddr, replicaAddr, "target_session_attrs='read-write'"}, nil)
		if all, _ := serverSessions(t, d, primary); all == 0 {
			t.Errorf("the server has no session on the primary %s", primary)
		}
		if all, _ := serverSessions(t, d, replica); all != 0 {
			t.Errorf("the server has %d sessions on the replica %s", all, replica)
		}
	})

	// promote-to-primary scope=unit on the replica, as an operator switches over with the
	// real charm; the check-ins go on, none acknowledged is lost.
	t.Run("switchover", func(t *testing.T) {
		steadyCheckIns(t, w, witnessMachines)
		base := w.Stats()
		start := time.Now()
		res := d.RunAction(t, replica, "promote-to-primary", map[string]any{"scope": "unit"})
		promoted := time.Now()
		t.Logf("promote-to-primary on %s: %s in %s", replica, res.Status, promoted.Sub(start).Round(time.Millisecond))

		// The first check-in acknowledged that started once the replica was promoted: the
		// old primary takes no writes from the moment it was fenced, so that check-in was
		// written on the new primary.
		var recovered time.Time
		ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
		defer cancel()
		for n := int64(1); ; n++ {
			if end, ok := w.FirstAckedAfter(promoted); ok {
				recovered = end
				break
			}
			if err := w.WaitEnded(ctx, base, n); err != nil {
				t.Fatalf("no check-in acknowledged after the switchover: %v", err)
			}
		}
		outage := w.Stats().Sub(base)
		t.Logf("switchover recovery: %s from promote-to-primary to the first check-in acknowledged on the new primary; check-ins meanwhile: %v",
			recovered.Sub(start).Round(time.Millisecond), outage)
		if outage.Failed > 0 || outage.Retried > 0 {
			t.Logf("the last failed attempt ended %s after promote-to-primary started", outage.LastFailure.Sub(start).Round(time.Millisecond))
		}
		since := start
		if len(outage.Errors) > 0 {
			t.Logf("failed attempts:\n%s", strings.Join(outage.Errors, "\n"))
		}

		// The model settles: the old primary follows the new one, the charm keeps serving.
		// The connection string names the same hosts, so no server restarts.
		d.WaitActive(t)
		steadyCheckIns(t, w, 2*witnessMachines)
		if got := d.Restarts(since); len(got) > 0 {
			t.Errorf("servers restarted after the switchover: %v", got)
		}
		if all, _ := serverSessions(t, d, replica); all == 0 {
			t.Errorf("the server has no session on the new primary %s", replica)
		}
		if lost := w.Verify(t, pgSuperuser(t, d, replica, livepatchDB(t, d))); lost > 0 {
			t.Errorf("%d acknowledged check-ins lost", lost)
		}
		t.Logf("witness: %v, %d acknowledged", w.Stats(), w.Acked())
	})
}
