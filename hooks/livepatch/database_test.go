package livepatch_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
	"github.com/livepatch-onprem/livepatch/internal/testca"
)

// databaseState is a ready leader on the database relation, with one primary endpoint.
func databaseState() hookstest.State {
	st := lpt.Ready(true)
	r := lpt.DatabaseRelation()
	r.RemoteAppData["endpoints"] = "10.0.0.9:5432"
	st.Relations = append(without(st.Relations, "db"), r)
	return st
}

// TestDatabaseTLS: tls/tls-ca on the database relation turn verify-full on with the CA
// written 0600 next to the server configuration; turning TLS on or off re-renders and
// restarts the server through the rolling restart.
func TestDatabaseTLS(t *testing.T) {
	issued, err := testca.New("postgresql CA")
	if err != nil {
		t.Fatal(err)
	}
	ca := string(issued.Cert)
	e := lpt.New(t)
	st := databaseState()
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("config-changed: %v, status %v", res.Err, res.Status)
	}
	caFile := filepath.Join(e.H.Root, livepatch.CAPath)
	plain := "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='prefer' user='relation-4'"
	if got := loadRendered(t, e).Database.ConnectionString; got != plain {
		t.Errorf("DSN %q, want %q", got, plain)
	}

	st = res.State
	st.Relation("database").RemoteAppData["tls"] = "True"
	st.Relation("database").RemoteAppData["tls-ca"] = ca
	res = e.H.Run(t, "database-relation-changed", st, "postgresql/0")
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("TLS on: %v, status %v", res.Err, res.Status)
	}
	if n := lpt.Restarts(res); n != 1 {
		t.Errorf("TLS on: %d restarts, want 1", n)
	}
	verified := "dbname='livepatch' host='10.0.0.9' password='pg-s3cret/pass' port='5432' sslmode='verify-full' sslrootcert='" + caFile + "' user='relation-4'"
	if got := loadRendered(t, e).Database.ConnectionString; got != verified {
		t.Errorf("DSN %q, want %q", got, verified)
	}
	data, err := os.ReadFile(caFile)
	if err != nil || strings.TrimSpace(string(data)) != strings.TrimSpace(ca) {
		t.Errorf("CA file %q (%v), want the shared CA", data, err)
	}
	if info, err := os.Stat(caFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("CA file mode %v (%v), want 600", info.Mode().Perm(), err)
	}
	if again := e.H.Run(t, "update-status", res.State); lpt.Restarts(again) != 0 {
		t.Errorf("update-status restarted the server")
	}

	// A new CA (the provider's certificates renewed) restarts the server too.
	other, err := testca.New("postgresql CA 2")
	if err != nil {
		t.Fatal(err)
	}
	st = res.State
	st.Relation("database").RemoteAppData["tls-ca"] = string(other.Cert)
	res = e.H.Run(t, "database-relation-changed", st, "postgresql/0")
	if n := lpt.Restarts(res); n != 1 || res.Status != hooks.Active(lpt.MessageActive) {
		t.Errorf("new CA: %d restarts, status %v; want 1, active", n, res.Status)
	}

	st = res.State
	st.Relation("database").RemoteAppData["tls"] = "False"
	st.Relation("database").RemoteAppData["tls-ca"] = ""
	res = e.H.Run(t, "database-relation-changed", st, "postgresql/0")
	if n := lpt.Restarts(res); n != 1 || res.Status != hooks.Active(lpt.MessageActive) {
		t.Errorf("TLS off: %d restarts, status %v; want 1, active", n, res.Status)
	}
	if got := loadRendered(t, e).Database.ConnectionString; got != plain {
		t.Errorf("DSN %q, want %q", got, plain)
	}
	if _, err := os.Stat(caFile); !os.IsNotExist(err) {
		t.Errorf("CA file still there after TLS off (%v)", err)
	}
}

// TestDatabaseRelationProblems: what the provider's bag or the configuration can get wrong
// is a status saying what to do.
func TestDatabaseRelationProblems(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*hookstest.State)
		want   hooks.Status
	}{{
		name:   "psql_dbname changed after the relation was added",
		modify: func(s *hookstest.State) { s.Config["psql_dbname"] = "livepatch2" },
		want:   hooks.Blocked(livepatch.MessageRenamed("livepatch2", "livepatch")),
	}, {
		name: "tls-ca not a certificate",
		modify: func(s *hookstest.State) {
			s.Relation("database").RemoteAppData["tls"] = "True"
			s.Relation("database").RemoteAppData["tls-ca"] = "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----"
		},
		want: hooks.Blocked("postgresql shares unusable connection details on the database relation: tls-ca is not a PEM certificate"),
	}, {
		name:   "tls neither True nor False",
		modify: func(s *hookstest.State) { s.Relation("database").RemoteAppData["tls"] = "yes" },
		want:   hooks.Blocked(`postgresql shares unusable connection details on the database relation: tls "yes" is neither True nor False`),
	}, {
		name:   "IPv6 endpoint with brackets",
		modify: func(s *hookstest.State) { s.Relation("database").RemoteAppData["endpoints"] = "[fd00::9]:5432" },
		want:   hooks.Active(lpt.MessageActive),
	}, {
		name:   "endpoint without a port",
		modify: func(s *hookstest.State) { s.Relation("database").RemoteAppData["endpoints"] = "fd00::9" },
		want:   hooks.Blocked(`postgresql shares unusable connection details on the database relation: endpoint "fd00::9" is not host:port`),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := lpt.New(t)
			st := databaseState()
			tt.modify(&st)
			e.Install(t, st)
			res := e.H.Run(t, "config-changed", st)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if diff := cmp.Diff(tt.want, res.Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			lpt.CheckNoLeaks(t, res, lpt.Secrets()...)
		})
	}
}

// TestDBCredentialsFromAnyBag: the postgresql units publish at different times and only
// once the user is in pg_hba; the first bag that carries the credentials is used at once,
// whichever unit wrote it.
func TestDBCredentialsFromAnyBag(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	r := st.Relation("db")
	primary := r.RemoteUnits["postgresql/0"]
	r.RemoteUnits = map[string]map[string]string{
		"postgresql/0": {"private-address": "10.0.0.9"},
		"postgresql/1": {"private-address": "10.0.0.11"},
	}
	e.Install(t, st)
	res := e.H.Run(t, "db-relation-changed", st, "postgresql/1")
	want := hooks.Waiting("Waiting for postgres to create database livepatch and grant access to livepatch/0")
	if diff := cmp.Diff(want, res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	st = res.State
	replica := map[string]string{}
	for k, v := range primary {
		replica[k] = v
	}
	replica["private-address"], replica["state"] = "10.0.0.11", "hot standby"
	st.Relation("db").RemoteUnits["postgresql/1"] = replica
	res = e.H.Run(t, "db-relation-changed", st, "postgresql/1")
	if diff := cmp.Diff(hooks.Active(lpt.MessageActive), res.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if got := loadRendered(t, e).Database.ConnectionString; !strings.Contains(got, "host='10.0.0.9'") {
		t.Errorf("DSN %q does not name the primary", got)
	}
}

// TestDBHostsStableAcrossSwitchover checks that the connection string names the hosts of
// every pgsql bag: mid-switchover one bag names the new primary alone while another still
// names both, and the connection string, hence the server, stays as it is.
func TestDBHostsStableAcrossSwitchover(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Relations = append(without(st.Relations, "db"), lpt.DBRelation("livepatch/0"))
	rel := st.Relation("db")
	old := rel.RemoteUnits["postgresql/0"]
	old["standbys"] = "host=10.0.0.11 port=5432"
	newPrimary := map[string]string{}
	for k, v := range old {
		newPrimary[k] = v
	}
	newPrimary["private-address"], newPrimary["state"] = "10.0.0.11", "hot standby"
	rel.RemoteUnits["postgresql/1"] = newPrimary
	e.Install(t, st)
	res := e.H.Run(t, "db-relation-changed", st, "postgresql/1")
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	before := loadRendered(t, e).Database.ConnectionString
	for _, h := range []string{"host='10.0.0.11,10.0.0.9'", "target_session_attrs='read-write'"} {
		if !strings.Contains(before, h) {
			t.Fatalf("DSN %q lacks %s", before, h)
		}
	}
	// postgresql/1 is promoted: the demoted postgresql/0 names the new primary alone (it
	// does not stream from it yet), postgresql/1's bag is not updated yet.
	st = res.State
	st.Relation("db").RemoteUnits["postgresql/0"]["host"] = "10.0.0.11"
	st.Relation("db").RemoteUnits["postgresql/0"]["standbys"] = ""
	st.Relation("db").RemoteUnits["postgresql/0"]["state"] = "hot standby"
	res = e.H.Run(t, "db-relation-changed", st, "postgresql/0")
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := loadRendered(t, e).Database.ConnectionString; got != before {
		t.Errorf("DSN changed mid-switchover:\n got %q\nwant %q", got, before)
	}
}
