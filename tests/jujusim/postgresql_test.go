package jujusim_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/postgresql"
)

const pgClientMeta = `
name: client
summary: pgsql and postgresql_client client
description: pgsql and postgresql_client client
requires:
  db: {interface: pgsql}
  database: {interface: postgresql_client}
`

// pgClientScripts ask for database appdb on whichever endpoint is related, from the leader's
// application bag, as the livepatch charm does.
var pgClientScripts = map[string]string{
	"db-relation-joined": `
relation-set database=appdb
if [ "$(is-leader --format=json)" = true ]; then
  relation-set --app database=appdb
  if [ -f "$SIMTEST_SCRIPTS/roles" ]; then relation-set --app roles=admin; fi
fi
`,
	"database-relation-joined": `
if [ "$(is-leader --format=json)" = true ]; then
  relation-set --app database=appdb
  if [ -f "$SIMTEST_SCRIPTS/secrets" ]; then relation-set --app "requested-secrets=$(cat "$SIMTEST_SCRIPTS/secrets")"; fi
fi
`,
}

// needPostgreSQL skips the test under -short (the stand-in runs real PostgreSQL clusters,
// seconds per unit) and fails it when PostgreSQL 15 is not installed.
func needPostgreSQL(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL units: skipped with -short")
	}
	if _, err := os.Stat(filepath.Join(postgresql.BinDir, "initdb")); err != nil {
		t.Fatalf("PostgreSQL 15 is required: %v", err)
	}
}

func pgModel(t *testing.T, units int, config map[string]any) (*jujusim.Model, scripts) {
	t.Helper()
	needPostgreSQL(t)
	m, sc := newModel(t)
	for hook, body := range pgClientScripts {
		sc.set(t, hook, body)
	}
	deploy(t, m, jujusim.DeployArgs{Charm: "ch:postgresql", NumUnits: units, Config: config})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "client", pgClientMeta, "", "")})
	return m, sc
}

func bag(t *testing.T, m *jujusim.Model, relID int, who string) map[string]string {
	t.Helper()
	data, err := m.RelationData(relID, who)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func exec(t *testing.T, m *jujusim.Model, unit string, argv ...string) {
	t.Helper()
	res, err := m.Exec(t.Context(), unit, argv...)
	if err != nil || res.Code != 0 {
		t.Fatalf("%s on %s: %+v, %v", argv, unit, res, err)
	}
}

func query(t *testing.T, dsn, q string) (string, error) {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s string
	err = db.QueryRow(q).Scan(&s)
	return s, err
}

// TestPostgresqlReplicasAndSwitchover: with two units the stand-in runs a primary and a
// streaming replica; on db both units write their own bag with host the primary and state
// their own role; promote-to-primary on the replica switches the primary over, loses no
// committed row, and republishes.
func TestPostgresqlReplicasAndSwitchover(t *testing.T) {
	m, _ := pgModel(t, 2, nil)
	id := relate(t, m, "client:db", "postgresql:db")
	waitIdle(t, m)
	m.TriggerUpdateStatus() // the units that deferred their credentials publish them now
	waitIdle(t, m)
	// The leader runs the primary.
	p0, p1 := leaderAndMinion(t, m, "postgresql")
	addr0, _ := m.UnitAddress(p0)
	addr1, _ := m.UnitAddress(p1)
	b0, b1 := bag(t, m, id, p0), bag(t, m, id, p1)
	user := fmt.Sprintf("relation-%d", id)
	for name, b := range map[string]map[string]string{p0: b0, p1: b1} {
		if b["host"] != addr0 || b["user"] != user || b["database"] != "appdb" || b["allowed-units"] != "client/0" {
			t.Errorf("%s bag: %v", name, b)
		}
	}
	if b0["state"] != "master" || b1["state"] != "hot standby" {
		dumpUnits(t, m, p0, p1)
		t.Errorf("states %q, %q; want master, hot standby", b0["state"], b1["state"])
	}
	if !strings.Contains(b0["standbys"], "host="+addr1+" ") {
		t.Errorf("standbys %q do not name the replica %s", b0["standbys"], addr1)
	}
	primary := "sslmode=disable " + b0["master"]
	replica := "sslmode=disable " + strings.Replace(b0["master"], "host="+addr0, "host="+addr1, 1)
	if _, err := query(t, primary, `CREATE TABLE checkins (n int); INSERT INTO checkins SELECT generate_series(1, 100) RETURNING 'x'`); err != nil {
		t.Fatal(err)
	}
	if got, err := query(t, replica, `SELECT pg_is_in_recovery()::text`); err != nil || got != "true" {
		t.Fatalf("replica in recovery: %q, %v", got, err)
	}

	// The replica cannot be promoted while it is not one; the primary cannot be either.
	for unit, params := range map[string]map[string]any{
		p0: {"scope": "unit"},
		p1: {},
	} {
		a, err := m.RunAction(unit, "promote-to-primary", params)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := a.Wait(t.Context()); res.Status != "failed" {
			t.Errorf("promote-to-primary %v on %s: %+v", params, unit, res)
		}
	}
	a, err := m.RunAction(p1, "promote-to-primary", map[string]any{"scope": "unit"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Wait(t.Context()); res.Status != "completed" {
		t.Fatalf("promote-to-primary: %+v", res)
	}
	waitIdle(t, m)
	b0, b1 = bag(t, m, id, p0), bag(t, m, id, p1)
	if b0["host"] != addr1 || b1["host"] != addr1 || b1["state"] != "master" || b0["state"] != "hot standby" {
		t.Errorf("after the switchover: postgresql/0 %v, postgresql/1 %v", b0, b1)
		dumpUnits(t, m, p0, p1)
	}
	if got, err := query(t, replica, `SELECT count(*)::text FROM checkins`); err != nil || got != "100" {
		t.Errorf("rows on the new primary: %q, %v", got, err)
	}
	if _, err := query(t, replica, `INSERT INTO checkins VALUES (101) RETURNING 'x'`); err != nil {
		t.Errorf("the new primary does not take writes: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		got, err := query(t, primary, `SELECT pg_is_in_recovery()::text || (SELECT count(*) FROM checkins)::text`)
		if err == nil && got == "true101" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the old primary does not follow the new one: %q, %v", got, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestPostgresqlRolesOnDB: a request for roles on db is a Blocked status, with no
// credentials, as on the real charm.
func TestPostgresqlRolesOnDB(t *testing.T) {
	m, sc := pgModel(t, 1, nil)
	sc.set(t, "roles", "")
	id := relate(t, m, "client:db", "postgresql:db")
	waitIdle(t, m)
	m.TriggerUpdateStatus()
	waitIdle(t, m)
	if u, _ := m.Status().Unit("postgresql/0"); u.Workload.Current != "blocked" || u.Workload.Message != postgresql.MessageRoles {
		t.Errorf("postgresql/0: %+v", u.Workload)
	}
	if b := bag(t, m, id, "postgresql/0"); b["password"] != "" {
		t.Errorf("credentials published despite roles: %v", b)
	}
}

// TestPostgresqlDatabaseTLS: with TLS on, the database relation publishes tls=True and the
// CA, PostgreSQL takes hostssl connections only and its certificate verifies against the CA;
// a later rename of the database is ignored.
func TestPostgresqlDatabaseTLS(t *testing.T) {
	m, _ := pgModel(t, 1, map[string]any{"tls": true})
	id := relate(t, m, "client:database", "postgresql:database")
	waitIdle(t, m)
	b := bag(t, m, id, "postgresql")
	addr, _ := m.UnitAddress("postgresql/0")
	if b["tls"] != "True" || !strings.Contains(b["tls-ca"], "BEGIN CERTIFICATE") || b["endpoints"] != addr+":5432" ||
		b["read-only-endpoints"] != addr+":5432" || b["database"] != "appdb" || b["username"] != fmt.Sprintf("relation-%d", id) {
		t.Fatalf("database bag: %v", b)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(b["tls-ca"]), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=appdb", addr, b["username"], b["password"])
	if _, err := query(t, dsn+" sslmode=disable", `SELECT 'x'`); err == nil || !strings.Contains(err.Error(), "no encryption") {
		t.Errorf("plain connection: %v, want refused by pg_hba", err)
	}
	if got, err := query(t, dsn+" sslmode=verify-full sslrootcert="+ca, `SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()`); err != nil || got != "true" {
		t.Errorf("verify-full connection: %q, %v", got, err)
	}

	exec(t, m, "client/0", "relation-set", "-r", fmt.Sprintf("database:%d", id), "--app", "database=otherdb")
	waitIdle(t, m)
	if b := bag(t, m, id, "postgresql"); b["database"] != "appdb" {
		t.Errorf("database after a rename: %q, want appdb", b["database"])
	}

	// TLS off: plain connections again, tls=False and no CA.
	if err := m.SetConfig("postgresql", map[string]string{"tls": "false"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if b := bag(t, m, id, "postgresql"); b["tls"] != "False" || b["tls-ca"] != "" {
		t.Errorf("after TLS off: tls %q, tls-ca %q", b["tls"], b["tls-ca"])
	}
	if _, err := query(t, dsn+" sslmode=disable", `SELECT 'x'`); err != nil {
		t.Errorf("plain connection after TLS off: %v", err)
	}
}

// secretGet runs secret-get on a unit, as a hook would, and decodes the content.
func secretGet(t *testing.T, m *jujusim.Model, unit string, args ...string) map[string]string {
	t.Helper()
	res, err := m.Exec(t.Context(), unit, append([]string{"secret-get", "--format=json"}, args...)...)
	if err != nil || res.Code != 0 {
		t.Fatalf("secret-get %s on %s: %+v, %v", args, unit, res, err)
	}
	var content map[string]string
	if err := json.Unmarshal([]byte(res.Stdout), &content); err != nil {
		t.Fatalf("secret-get output %q: %v", res.Stdout, err)
	}
	return content
}

// secretInfo returns the model's record of the secret at uri.
func secretInfo(t *testing.T, m *jujusim.Model, uri string) jujusim.SecretInfo {
	t.Helper()
	for _, s := range m.Secrets() {
		if s.URI == uri {
			return s
		}
	}
	t.Fatalf("no secret %s in the model", uri)
	return jujusim.SecretInfo{}
}

// TestPostgresqlDatabaseSecrets: a requirer that sends requested-secrets gets its
// credentials in a secret the postgresql application owns (secret-user: username, password,
// uris and read-only-uris) and TLS in another (secret-tls), both granted to the relation and
// named in the bag instead of the plain fields; TLS turned on is a new revision of
// secret-tls, which the requirer hears of with secret-changed. set-password takes system
// users only, rotates operator in PostgreSQL and leaves the relation's secrets as they are.
func TestPostgresqlDatabaseSecrets(t *testing.T) {
	m, sc := pgModel(t, 1, nil)
	sc.set(t, "secrets", `["username", "password", "tls", "tls-ca", "uris", "read-only-uris"]`)
	id := relate(t, m, "client:database", "postgresql:database")
	waitIdle(t, m)
	b := bag(t, m, id, "postgresql")
	addr, _ := m.UnitAddress("postgresql/0")
	for _, k := range []string{"username", "password", "uris", "read-only-uris", "tls", "tls-ca"} {
		if _, ok := b[k]; ok {
			t.Errorf("%s in the plain bag, want it in a secret", k)
		}
	}
	if b["secret-user"] == "" || b["secret-tls"] == "" || b["database"] != "appdb" || b["endpoints"] != addr+":5432" || b["version"] == "" {
		t.Fatalf("database bag: %v", b)
	}
	for group, uri := range map[string]string{"user": b["secret-user"], "tls": b["secret-tls"]} {
		info := secretInfo(t, m, uri)
		label := fmt.Sprintf("database.%d.%s.secret", id, group)
		granted := len(info.Access) == 1 && info.Access[0].Target == "application-client" && strings.HasPrefix(info.Access[0].Scope, "relation-")
		if info.Owner != "postgresql" || info.Label != label || info.Revision != 1 || !granted {
			t.Errorf("secret-%s: owner %q label %q revision %d access %+v; want postgresql's %s, revision 1, granted to client on the relation", group, info.Owner, info.Label, info.Revision, info.Access, label)
		}
	}
	user := secretGet(t, m, "client/0", b["secret-user"])
	name := fmt.Sprintf("relation-%d", id)
	uri := fmt.Sprintf("postgresql://%s:%s@%s:5432/appdb", name, user["password"], addr)
	if user["username"] != name || len(user["password"]) < 16 || user["uris"] != uri || user["read-only-uris"] != uri {
		t.Errorf("secret-user content: username %q, uris as wanted %v, read-only-uris as wanted %v", user["username"], user["uris"] == uri, user["read-only-uris"] == uri)
	}
	if tls := secretGet(t, m, "client/0", b["secret-tls"]); tls["tls"] != "False" || tls["tls-ca"] != "" || len(tls) != 2 {
		t.Errorf("secret-tls content %v, want tls False and an empty tls-ca", tls)
	}
	dsn := fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=appdb sslmode=disable", addr, name, user["password"])
	if got, err := query(t, dsn, `SELECT current_user::text`); err != nil || got != name {
		t.Fatalf("connection with the secret's credentials: %q, %v", got, err)
	}

	// set-password: system users only; operator rotates in PostgreSQL.
	for _, tt := range []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{}, "The action requires a username"},
		{map[string]any{"username": name}, "The action can be run only for system users: backup, replication, rewind, operator, monitoring not " + name},
	} {
		a, err := m.RunAction("postgresql/0", "set-password", tt.params)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := a.Wait(t.Context()); res.Status != "failed" || res.Message != tt.want {
			t.Errorf("set-password %v: %s %q, want failed %q", tt.params, res.Status, res.Message, tt.want)
		}
	}
	a, err := m.RunAction("postgresql/0", "set-password", map[string]any{"username": "operator", "password": "n3w-operator-passw0rd"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Wait(t.Context()); res.Status != "completed" || res.Results["password"] != "n3w-operator-passw0rd" {
		t.Fatalf("set-password operator: %+v", res)
	}
	waitIdle(t, m)
	operator := fmt.Sprintf("host=%s port=5432 user=operator password=n3w-operator-passw0rd dbname=postgres sslmode=disable", addr)
	if got, err := query(t, operator, `SELECT current_user::text`); err != nil || got != "operator" {
		t.Errorf("operator with the new password: %q, %v", got, err)
	}
	if a, err = m.RunAction("postgresql/0", "get-password", map[string]any{"username": "operator"}); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Wait(t.Context()); res.Results["password"] != "n3w-operator-passw0rd" {
		t.Errorf("get-password after set-password: %+v", res)
	}
	if info := secretInfo(t, m, b["secret-user"]); info.Revision != 1 {
		t.Errorf("secret-user revision %d after set-password operator, want 1", info.Revision)
	}

	// TLS on: a new revision of secret-tls, and secret-changed on the requirer.
	if err := m.SetConfig("postgresql", map[string]string{"tls": "true"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if info := secretInfo(t, m, b["secret-tls"]); info.Revision != 2 {
		t.Errorf("secret-tls revision %d after TLS on, want 2", info.Revision)
	}
	if ran := sc.read(t, "ran"); !strings.Contains(ran, "client/0 hooks/secret-changed") {
		t.Errorf("no secret-changed on the requirer after TLS on; hooks run:\n%s", ran)
	}
	tls := secretGet(t, m, "client/0", b["secret-tls"], "--refresh")
	if tls["tls"] != "True" || !strings.Contains(tls["tls-ca"], "BEGIN CERTIFICATE") {
		t.Fatalf("secret-tls after TLS on: tls %q", tls["tls"])
	}
	if b := bag(t, m, id, "postgresql"); b["tls"] != "" || b["tls-ca"] != "" || b["password"] != "" {
		t.Errorf("plain fields after TLS on: %v", b)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(tls["tls-ca"]), 0o600); err != nil {
		t.Fatal(err)
	}
	verified := strings.Replace(dsn, "sslmode=disable", "sslmode=verify-full sslrootcert="+ca, 1)
	if got, err := query(t, verified, `SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()`); err != nil || got != "true" {
		t.Errorf("verify-full with the secret's CA: %q, %v", got, err)
	}
}

func dumpUnits(t *testing.T, m *jujusim.Model, units ...string) {
	t.Helper()
	st := m.Status()
	for _, u := range units {
		us, _ := st.Unit(u)
		t.Logf("%s: %+v", u, us.Workload)
	}
	for _, l := range m.Logs() {
		if strings.HasPrefix(l.Unit, "postgresql") && (l.Level == "ERROR" || l.Level == "WARNING" || strings.Contains(l.Message, "cannot")) {
			t.Logf("%s %s %s", l.Unit, l.Level, l.Message)
		}
	}
}
