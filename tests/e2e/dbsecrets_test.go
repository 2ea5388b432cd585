package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// TestDatabaseSecretRotation deploys the bundle with livepatch on the database relation
// (postgresql_client) and two livepatch units: the charm asks for secrets, postgresql
// shares the credentials in a secret (no password in the relation data), and machines
// check in. Then what changes the secrets of a real postgresql charm: set-password rotates
// the operator password (the relation's secrets stay as they are, nothing restarts), and
// TLS turned on is a new revision of secret-tls, which every livepatch unit hears of with
// secret-changed; each re-renders (verify-full with the CA) and restarts in turn, and
// machines check in after it. No secret shows in a status or a livepatch log line.
func TestDatabaseSecretRotation(t *testing.T) {
	t.Parallel()
	root, err := deploy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	original, err := os.ReadFile(filepath.Join(root, "bundle", "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle.yaml")
	variant := strings.Replace(string(original), `["livepatch:db", "postgresql:db"]`, `["livepatch:database", "postgresql:database"]`, 1)
	if !strings.Contains(variant, `["livepatch:database", "postgresql:database"]`) {
		t.Fatalf("bundle/bundle.yaml relates livepatch to postgresql on neither db nor database")
	}
	if err := os.WriteFile(bundle, []byte(variant), 0o644); err != nil {
		t.Fatal(err)
	}
	d := deploy.Deploy(t, deploy.Options{Units: 2, NoUpstream: true, Bundle: bundle})
	m := d.Model

	relID, err := m.RelationID("livepatch:database", "postgresql:database")
	if err != nil {
		t.Fatal(err)
	}
	provider, err := m.RelationData(relID, "postgresql")
	if err != nil {
		t.Fatal(err)
	}
	requirer, err := m.RelationData(relID, "livepatch")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := provider["password"]; ok || provider["secret-user"] == "" || provider["secret-tls"] == "" {
		t.Fatalf("postgresql's bag %v, want the credentials in secret-user", keys(provider))
	}
	if !strings.Contains(requirer["requested-secrets"], `"password"`) {
		t.Errorf("livepatch's requested-secrets %q", requirer["requested-secrets"])
	}
	res, err := m.Exec(t.Context(), "livepatch/1", "secret-get", "--format=json", provider["secret-user"])
	if err != nil || res.Code != 0 {
		t.Fatalf("secret-get on livepatch/1: %+v, %v", res, err)
	}
	var user map[string]string
	if err := json.Unmarshal([]byte(res.Stdout), &user); err != nil || len(user["password"]) < 16 {
		t.Fatalf("secret-user content (%v): %d keys", err, len(user))
	}
	machine := d.EnrolMachine(t, deploy.UpstreamTier)
	machine.Refresh(t)

	// set-password rotates the operator, not the relation's user: nothing to follow.
	const operatorPassword = "r0tated-operat0r-passw0rd"
	logsBefore := len(m.Logs())
	a := d.RunAction(t, "postgresql/leader", "set-password", map[string]any{"username": "operator", "password": operatorPassword})
	if a.Results["password"] != operatorPassword {
		t.Errorf("set-password results %v", keys(a.Results))
	}
	d.WaitActive(t)
	if n := restartsSince(m, logsBefore); n != 0 {
		t.Errorf("%d livepatch restarts after set-password operator, want none", n)
	}
	machine.Refresh(t)

	// TLS on: a new revision of secret-tls, secret-changed, a rolling restart with verify-full.
	logsBefore, hooksBefore := len(m.Logs()), len(m.History())
	d.Config(t, "postgresql", map[string]string{"tls": "true"})
	d.WaitActive(t)
	if n := restartsSince(m, logsBefore); n != 2 {
		t.Errorf("%d livepatch restarts after TLS on, want one per unit", n)
		for _, e := range m.Logs()[logsBefore:] {
			if strings.HasPrefix(e.Unit, "livepatch/") {
				t.Log(e)
			}
		}
	}
	changed := map[string]bool{}
	for _, h := range m.History()[hooksBefore:] {
		if h.Hook == "secret-changed" && h.ExitCode == 0 {
			changed[h.Unit] = true
		}
	}
	for _, unit := range d.Units("livepatch") {
		root, err := m.UnitRoot(unit)
		if err != nil {
			t.Fatal(err)
		}
		rendered, err := os.ReadFile(filepath.Join(root, livepatch.ConfigPath))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(rendered), "sslmode='verify-full'") || !strings.Contains(string(rendered), "sslrootcert='") {
			t.Errorf("%s does not verify PostgreSQL's certificate after TLS on", unit)
		}
		if !changed[unit] {
			t.Errorf("no secret-changed hook ran on %s after TLS on", unit)
		}
	}
	machine.Refresh(t)
	if st := machine.Status(t); st.CheckError != "" {
		t.Errorf("check-in after the rotation: %s", st.CheckError)
	}

	// No secret in a status or a livepatch log line.
	st := m.Status()
	for _, secret := range []string{user["password"], operatorPassword} {
		for _, unit := range append(d.Units("livepatch"), d.Units("postgresql")...) {
			if us, _ := st.Unit(unit); strings.Contains(us.Workload.Message, secret) {
				t.Errorf("a secret in the status of %s", unit)
			}
		}
		for _, e := range m.Logs() {
			if strings.HasPrefix(e.Unit, "livepatch/") && strings.Contains(e.Message, secret) {
				t.Errorf("a secret in a log line of %s", e.Unit)
			}
		}
	}
}

// restartsSince counts the livepatch restarts logged after the first n log entries.
func restartsSince(m *jujusim.Model, n int) int {
	count := 0
	for _, e := range m.Logs()[n:] {
		if strings.HasPrefix(e.Unit, "livepatch/") && strings.Contains(e.Message, "Restarted livepatch-server") {
			count++
		}
	}
	return count
}

// keys lists a map's keys, to show a bag without its values.
func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
