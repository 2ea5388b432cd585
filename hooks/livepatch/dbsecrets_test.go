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

// secretState is a unit on the database relation whose provider shares the credentials in
// Juju secrets.
func secretState(leader bool) hookstest.State {
	st := lpt.Ready(leader)
	r, secrets := lpt.DatabaseSecretRelation()
	if !leader {
		r.LocalAppData = nil
	}
	st.Relations = append(without(st.Relations, "db"), r)
	st.Secrets = secrets
	return st
}

// secretChanged is the environment of the secret-changed hook Juju runs for a new revision
// of the secret id.
func secretChanged(st hookstest.State, id string) hookstest.State {
	st = st.Clone()
	if st.Env == nil {
		st.Env = map[string]string{}
	}
	st.Env["JUJU_SECRET_ID"] = "secret://" + lpt.ModelUUID + "/" + id
	st.Env["JUJU_SECRET_LABEL"] = ""
	st.Env["JUJU_SECRET_REVISION"] = ""
	return st
}

// TestDatabaseSecretCredentials: the leader asks for secrets (requested-secrets) with the
// database; the credentials come from the secret secret-user names, read at its latest
// revision (which the unit then tracks); a new revision (a new password) runs secret-changed,
// which re-renders and restarts the server, and no hook shows the password.
func TestDatabaseSecretCredentials(t *testing.T) {
	e := lpt.New(t)
	st := secretState(true)
	e.Install(t, st)
	res := e.H.Run(t, "database-relation-changed", st, "postgresql/0")
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("database-relation-changed: %v, status %v", res.Err, res.Status)
	}
	if got := res.Relation("database").LocalAppData["requested-secrets"]; got != lpt.RequestedSecrets {
		t.Errorf("requested-secrets %q, want %q", got, lpt.RequestedSecrets)
	}
	first := "connect_timeout='5' dbname='livepatch' host='10.0.0.10,10.0.0.9' password='pg-s3cret/pass' port='5432,5432' sslmode='prefer' target_session_attrs='read-write' user='relation-4'"
	if got := loadRendered(t, e).Database.ConnectionString; got != first {
		t.Errorf("DSN %q, want %q", got, first)
	}
	for id, want := range map[string]int{lpt.UserSecretID: 1, lpt.TLSSecretID: 1} {
		if got := res.Secrets[id].Tracked; got != want {
			t.Errorf("secret %s tracked at revision %d, want %d", id, got, want)
		}
	}
	lpt.CheckNoLeaks(t, res, lpt.Secrets()...)

	// The password changes: a new revision, then secret-changed.
	const rotated = "n3w-pg-s3cret-r0tated"
	st = res.State
	content := map[string]string{"username": "relation-4", "password": rotated, "uris": "postgresql://relation-4:" + rotated + "@10.0.0.9:5432/livepatch"}
	st.Secrets[lpt.UserSecretID] = st.Secrets[lpt.UserSecretID].Update(content)
	res = e.H.Run(t, "secret-changed", secretChanged(st, lpt.UserSecretID))
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("secret-changed: %v, status %v", res.Err, res.Status)
	}
	if n := lpt.Restarts(res); n != 1 {
		t.Errorf("secret-changed: %d restarts, want 1", n)
	}
	if got := loadRendered(t, e).Database.ConnectionString; got != strings.Replace(first, "pg-s3cret/pass", rotated, 1) {
		t.Errorf("DSN after the rotation %q, want the new password", got)
	}
	if got := res.Secrets[lpt.UserSecretID].Tracked; got != 2 {
		t.Errorf("secret tracked at revision %d after secret-changed, want 2", got)
	}
	lpt.CheckNoLeaks(t, res, append(lpt.Secrets(), rotated)...)
	if again := e.H.Run(t, "update-status", res.State); lpt.Restarts(again) != 0 || again.Status != hooks.Active(lpt.MessageActive) {
		t.Errorf("update-status after the rotation: %d restarts, status %v", lpt.Restarts(again), again.Status)
	}
}

// TestDatabaseSecretRotationWaitsItsTurn: on a unit that is not the leader, the new
// password of secret-changed is rendered for the schema checks at once, and the server's
// restart waits for the leader's next rolling restart, as any configuration change does.
func TestDatabaseSecretRotationWaitsItsTurn(t *testing.T) {
	e := lpt.New(t)
	st := secretState(false)
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("config-changed: %v, status %v", res.Err, res.Status)
	}
	if got := res.Relation("database").LocalAppData; len(got) != 0 {
		t.Errorf("a non-leader wrote the application bag: %v", got)
	}
	st = res.State
	st.Secrets[lpt.UserSecretID] = st.Secrets[lpt.UserSecretID].Update(map[string]string{"username": "relation-4", "password": "an0ther-s3cret-pw"})
	res = e.H.Run(t, "secret-changed", secretChanged(st, lpt.UserSecretID))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if n := lpt.Restarts(res); n != 0 || res.Status.Name != "active" || !strings.Contains(res.Status.Message, "restart pending (configuration changed)") {
		t.Errorf("secret-changed on a non-leader: %d restarts, status %v; want a pending restart", n, res.Status)
	}
	if got := res.Relation(livepatch.PeerEndpoint).LocalUnitData[livepatch.PeerRestartWanted]; got == "" {
		t.Errorf("no restart asked of the leader (%s unset)", livepatch.PeerRestartWanted)
	}
	// The server keeps its configuration until its turn; the schema checks use the new one.
	if got := loadRendered(t, e).Database.ConnectionString; !strings.Contains(got, "password='pg-s3cret/pass'") {
		t.Errorf("DSN %q changed before the restart", got)
	}
	if got := e.H.ReadFile(t, livepatch.SchemaConfigPath); !strings.Contains(got, "password='an0ther-s3cret-pw'") {
		t.Errorf("schema configuration does not hold the new password")
	}
}

// TestDatabaseSecretTLS: tls and tls-ca come from the secret secret-tls names; TLS turned on
// (a new revision) gives verify-full with the CA, after a restart.
func TestDatabaseSecretTLS(t *testing.T) {
	issued, err := testca.New("postgresql CA")
	if err != nil {
		t.Fatal(err)
	}
	e := lpt.New(t)
	st := secretState(true)
	// A plain tls field the provider wrote before it had the secret is not what counts.
	st.Relation("database").RemoteAppData["tls"] = "True"
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
		t.Fatalf("config-changed: %v, status %v", res.Err, res.Status)
	}
	if got := loadRendered(t, e).Database.ConnectionString; !strings.Contains(got, "sslmode='prefer'") {
		t.Errorf("DSN %q, want sslmode prefer with TLS off in the secret", got)
	}
	st = res.State
	st.Secrets[lpt.TLSSecretID] = st.Secrets[lpt.TLSSecretID].Update(map[string]string{"tls": "True", "tls-ca": string(issued.Cert)})
	res = e.H.Run(t, "secret-changed", secretChanged(st, lpt.TLSSecretID))
	if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) || lpt.Restarts(res) != 1 {
		t.Fatalf("secret-changed: %v, status %v, %d restarts", res.Err, res.Status, lpt.Restarts(res))
	}
	caFile := filepath.Join(e.H.Root, livepatch.CAPath)
	if got := loadRendered(t, e).Database.ConnectionString; !strings.Contains(got, "sslmode='verify-full' sslrootcert='"+caFile+"'") {
		t.Errorf("DSN %q, want verify-full with the CA file", got)
	}
	if data, err := os.ReadFile(caFile); err != nil || strings.TrimSpace(string(data)) != strings.TrimSpace(string(issued.Cert)) {
		t.Errorf("CA file %q (%v), want the CA of the secret", data, err)
	}
}

// TestDatabaseSecretProblems: a secret the unit cannot read, or a Juju without secrets, is
// a status that names the field, never the content; without secrets the charm asks for none.
func TestDatabaseSecretProblems(t *testing.T) {
	t.Run("not granted", func(t *testing.T) {
		e := lpt.New(t)
		st := secretState(true)
		s := st.Secrets[lpt.UserSecretID]
		s.Denied = true
		st.Secrets[lpt.UserSecretID] = s
		e.Install(t, st)
		res := e.H.Run(t, "config-changed", st)
		want := hooks.Waiting("Waiting for postgresql to grant the secret it shares on the database relation (secret-user: permission denied)")
		if res.Err != nil || res.Status != want {
			t.Errorf("status %v (%v), want %v", res.Status, res.Err, want)
		}
	})
	t.Run("no secrets in this Juju", func(t *testing.T) {
		e := lpt.New(t)
		st := secretState(true)
		st.Secrets = nil
		e.Install(t, st)
		res := e.H.Run(t, "config-changed", st)
		want := hooks.Blocked("postgresql shares the database credentials in Juju secrets (secret-user) but this Juju has no secrets")
		if res.Err != nil || res.Status != want {
			t.Errorf("status %v (%v), want %v", res.Status, res.Err, want)
		}
	})
	t.Run("Juju 2.9 asks for no secrets", func(t *testing.T) {
		e := lpt.New(t)
		st := databaseState()
		st.Env = map[string]string{"JUJU_VERSION": "2.9.49"}
		st.Relation("database").LocalAppData = map[string]string{"database": "livepatch"}
		e.Install(t, st)
		res := e.H.Run(t, "config-changed", st)
		if res.Err != nil || res.Status != hooks.Active(lpt.MessageActive) {
			t.Fatalf("config-changed: %v, status %v", res.Err, res.Status)
		}
		if diff := cmp.Diff(map[string]string{"database": "livepatch"}, res.Relation("database").LocalAppData); diff != "" {
			t.Errorf("app bag (-want +got):\n%s", diff)
		}
	})
}

// TestHasSecrets: secrets from Juju 3.0.3 on, as ops decides.
func TestHasSecrets(t *testing.T) {
	for version, want := range map[string]bool{
		"": false, "2.9.49": false, "3.0.2": false, "3.0.3": true, "3.1.0": true, "3.6.4": true,
		"3.6-beta1": true, "4.0.0": true, "3": false,
	} {
		c := &hooks.Context{Getenv: func(k string) string {
			if k == "JUJU_VERSION" {
				return version
			}
			return ""
		}}
		if got := c.HasSecrets(); got != want {
			t.Errorf("HasSecrets with JUJU_VERSION %q = %v, want %v", version, got, want)
		}
	}
}
