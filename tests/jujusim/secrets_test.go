package jujusim_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// secretModel deploys srv (2 units) related to cli (2 units) and records every secret hook
// in $SIMTEST_SCRIPTS/secret-events.
func secretModel(t *testing.T) (*jujusim.Model, scripts, string) {
	t.Helper()
	m, sc := newModel(t)
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "srv", srvMeta, "", ""), NumUnits: 2})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "cli", cliMeta, cliConfig, ""), NumUnits: 2})
	for _, h := range []string{"secret-changed", "secret-rotate", "secret-expired", "secret-remove"} {
		sc.set(t, h, `sid=${JUJU_SECRET_ID##*/}; echo "$JUJU_UNIT_NAME `+h+` ${sid#secret:} label=$JUJU_SECRET_LABEL rev=$JUJU_SECRET_REVISION" >> "$SIMTEST_SCRIPTS/secret-events"`)
	}
	id := relate(t, m, "cli", "srv")
	waitIdle(t, m)
	writtenWithLeaders(t, m, sc, "srv", "cli")
	return m, sc, "db:" + itoa(id)
}

// names holds, per model and per scripts directory, the renaming of writtenWithLeaders.
var names sync.Map

// writtenWithLeaders lets a test be written as if unit 0 of each two-unit application led:
// run, execAs and events swap the names of the leader and the other unit when leadership fell
// the other way. A swap undoes itself, so the same replacer turns outputs back.
func writtenWithLeaders(t *testing.T, m *jujusim.Model, sc scripts, apps ...string) {
	t.Helper()
	var pairs []string
	for _, app := range apps {
		leader, minion := leaderAndMinion(t, m, app)
		if leader != app+"/0" {
			pairs = append(pairs, leader, minion, minion, leader)
		}
	}
	r := strings.NewReplacer(pairs...)
	names.Store(m, r)
	names.Store(string(sc), r)
}

func rename(key any, s string) string {
	if r, ok := names.Load(key); ok {
		return r.(*strings.Replacer).Replace(s)
	}
	return s
}

// execAs runs argv on a unit named as the test is written (see writtenWithLeaders).
func execAs(t *testing.T, m *jujusim.Model, unit string, argv ...string) jujusim.ExecResult {
	t.Helper()
	for i := range argv {
		argv[i] = rename(m, argv[i])
	}
	res, err := m.Exec(t.Context(), rename(m, unit), argv...)
	if err != nil {
		t.Fatal(err)
	}
	res.Stdout, res.Stderr = rename(m, res.Stdout), rename(m, res.Stderr)
	return res
}

// run execs a shell script on a unit and fails the test unless it exits with code.
func run(t *testing.T, m *jujusim.Model, unit, script string, code int) string {
	t.Helper()
	res := execAs(t, m, unit, "sh", "-c", script)
	if res.Code != code {
		t.Fatalf("%s: %q exited %d (want %d): %s%s", unit, script, res.Code, code, res.Stdout, res.Stderr)
	}
	return res.Stdout + res.Stderr
}

func events(t *testing.T, sc scripts) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(string(sc), "secret-events"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(rename(string(sc), string(b))), "\n")
}

func TestSecretToolErrors(t *testing.T) {
	m, _, rel := secretModel(t)
	uri := strings.TrimSpace(run(t, m, "srv/0", "secret-add --label creds password=s3cret", 0))
	id, err := jujusim.SecretID(uri)
	if err != nil {
		t.Fatal(err)
	}
	if want := "secret://" + m.UUID() + "/"; !strings.HasPrefix(uri, want) {
		t.Errorf("secret-add printed %q, want a URI starting with %q", uri, want)
	}
	tests := []struct {
		unit, cmd string
		code      int
		stdout    string
		stderr    string
	}{
		{"srv/0", "secret-add", 2, "", "ERROR missing secret value or filename\n"},
		{"srv/0", "secret-add ab=1", 2, "", "ERROR key \"ab\" not valid\n"},
		{"srv/0", "secret-add Password=1", 2, "", "ERROR key \"Password\" not valid\n"},
		{"srv/0", "secret-add nokey", 2, "", "ERROR key value \"nokey\" not valid\n"},
		{"srv/0", "secret-add --rotate often token=1", 2, "", "ERROR rotate policy \"often\" not valid\n"},
		{"srv/0", "secret-add --owner me token=1", 2, "", "ERROR secret owner \"me\" not valid\n"},
		{"srv/0", "secret-add --expire soon token=1", 2, "", "ERROR expire time or duration \"soon\" not valid\n"},
		{"srv/0", "secret-add --expire -1h token=1", 2, "", "ERROR negative expire duration \"-1h\" not valid\n"},
		{"srv/0", "secret-add --label creds token=1", 1, "", "ERROR secret with label \"creds\" already exists\n"},
		{"srv/1", "secret-add token=1", 1, "", "ERROR this unit is not the leader\n"},
		{"srv/0", "secret-get", 2, "", "ERROR require either a secret URI or label\n"},
		{"srv/0", "secret-get nope", 2, "", "ERROR secret URI \"nope\" not valid\n"},
		{"srv/0", "secret-get " + uri + " --peek --refresh", 2, "", "ERROR specify one of --peek or --refresh but not both\n"},
		{"srv/0", "secret-get " + uri + " --format smart", 2, "", "ERROR invalid value \"smart\" for option --format: unknown format \"smart\"\n"},
		{"srv/0", "secret-get " + uri, 0, "password: s3cret\n", ""},
		{"srv/0", "secret-get secret:" + id + " password", 0, "s3cret\n", ""},
		{"srv/0", "secret-get " + id + " password#base64", 0, "czNjcmV0\n", ""},
		{"srv/0", "secret-get --label creds --format json", 0, "{\"password\":\"s3cret\"}\n", ""},
		{"srv/0", "secret-get " + uri + " missing", 1, "", "ERROR secret key value \"missing\" not found\n"},
		{"srv/1", "secret-get " + uri + " password", 0, "s3cret\n", ""},
		{"srv/1", "secret-get --label creds", 0, "password: s3cret\n", ""},
		{"cli/0", "secret-get --label creds", 1, "", "ERROR consumer label \"creds\" not found\n"},
		{"cli/0", "secret-get --label creds password", 2, "", "ERROR secret URI \"password\" not valid\n"},
		{"cli/0", "secret-get " + uri, 1, "", "ERROR permission denied\n"},
		{"cli/0", "secret-get secret:" + strings.Repeat("a", 20), 1, "", "ERROR secret \"" + strings.Repeat("a", 20) + "\" not found\n"},
		{"srv/0", "secret-ids", 0, id + "\n", ""},
		{"srv/1", "secret-ids --format json", 0, "null\n", ""},
		{"srv/0", "secret-info-get", 2, "", "ERROR require either a secret URI or label\n"},
		{"srv/0", "secret-info-get " + uri + " --label creds", 2, "", "ERROR specify either a secret URI or label but not both\n"},
		{"srv/0", "secret-info-get --label creds --format json", 0, `{"` + id + `":{"revision":1,"label":"creds","owner":"application"}}` + "\n", ""},
		{"srv/1", "secret-info-get " + uri, 1, "", "ERROR secret \"" + id + "\" not found\n"},
		{"srv/0", "secret-set", 2, "", "ERROR missing secret URI\n"},
		{"srv/1", "secret-set " + uri + " password=x", 1, "", "ERROR this unit is not the leader\n"},
		{"cli/0", "secret-set " + uri + " password=x", 1, "", "ERROR permission denied\n"},
		{"srv/0", "secret-grant " + uri, 2, "", "ERROR no relation id specified\n"},
		{"srv/0", "secret-grant " + uri + " -r " + rel + " --unit bad", 2, "", "ERROR unit \"bad\" not valid\n"},
		{"srv/0", "secret-grant " + uri + " -r " + rel + " --unit srv/1", 2, "", "ERROR cannot specify unit \"srv/1\" in relation to application \"cli\"\n"},
		{"srv/1", "secret-grant " + uri + " -r " + rel, 1, "", "ERROR secret \"" + id + "\" not found\n"},
		{"srv/0", "secret-revoke " + uri, 2, "", "ERROR missing relation or application or unit\n"},
		{"srv/0", "secret-revoke " + uri + " --app cli --unit cli/0", 2, "", "ERROR specify only one of application or unit\n"},
		{"srv/0", "secret-revoke " + uri + " -r " + rel + " --app cli", 2, "", "ERROR do not specify both relation and app\n"},
		{"srv/0", "secret-remove", 2, "", "ERROR missing secret URI\n"},
		{"srv/0", "secret-remove " + uri + " --revision 7", 1, "", "ERROR secret revision 7 for \"" + id + "\" not found\n"},
		{"srv/1", "secret-remove " + uri, 1, "", "ERROR this unit is not the leader\n"},
	}
	for _, tt := range tests {
		t.Run(tt.unit+" "+tt.cmd, func(t *testing.T) {
			res := execAs(t, m, tt.unit, strings.Fields(tt.cmd)...)
			got := jujusim.ExecResult{Code: tt.code, Stdout: tt.stdout, Stderr: tt.stderr}
			if diff := cmp.Diff(got, res); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSecretChangesCommitOnlyOnSuccess(t *testing.T) {
	m, _, _ := secretModel(t)
	out := run(t, m, "srv/0", `uri=$(secret-add --label lost token=abc) && secret-get "$uri" token && secret-ids | wc -l && exit 1`, 1)
	if !strings.Contains(out, "abc\n1\n") {
		t.Errorf("the hook's own pending secret is not readable in the hook: %q", out)
	}
	if got := run(t, m, "srv/0", "secret-ids", 0); got != "" {
		t.Errorf("secret-ids after a failed hook = %q, want nothing", got)
	}
	if got := m.Secrets(); len(got) != 0 {
		t.Errorf("secrets after a failed hook: %+v", got)
	}
}

func TestSecretOwnerAndConsumer(t *testing.T) {
	m, sc, rel := secretModel(t)
	uri := strings.TrimSpace(run(t, m, "srv/0", "secret-add --label creds --description 'db user' password=one", 0))
	id, _ := jujusim.SecretID(uri)
	run(t, m, "srv/0", "secret-grant "+uri+" -r "+rel, 0)
	want := `{"` + id + `":{"revision":1,"label":"creds","owner":"application","description":"db user","access":[{"target":"application-cli","scope":"relation-cli.db#srv.db","role":"view"}]}}` + "\n"
	if got := run(t, m, "srv/0", "secret-info-get --format=json "+uri, 0); got != want {
		t.Errorf("secret-info-get = %s, want %s", got, want)
	}
	// The first read pins revision 1, with the consumer's own label.
	if got := run(t, m, "cli/0", "secret-get "+uri+" password --label db-creds", 0); got != "one\n" {
		t.Fatalf("cli/0 first read = %q", got)
	}
	// A unit of the owning application reads the latest revision, whatever it is.
	run(t, m, "srv/1", "secret-get "+uri, 0)
	run(t, m, "srv/0", "secret-set "+uri+" password=two", 0)
	waitIdle(t, m)
	if got := run(t, m, "cli/0", "secret-get --label db-creds", 0); got != "password: one\n" {
		t.Errorf("cli/0 read after a new revision without --refresh = %q, want the pinned one", got)
	}
	if got := run(t, m, "cli/0", "secret-get "+uri+" password --peek", 0); got != "two\n" {
		t.Errorf("--peek = %q", got)
	}
	if got := run(t, m, "cli/0", "secret-get "+uri+" password", 0); got != "one\n" {
		t.Errorf("read after --peek = %q, want still pinned", got)
	}
	wantEvents := []string{
		"cli/0 secret-changed " + id + " label=db-creds rev=2",
		"srv/1 secret-changed " + id + " label= rev=2",
	}
	got := events(t, sc)
	if diff := cmp.Diff(wantEvents, sortedCopy(got)); diff != "" {
		t.Errorf("secret events (-want +got):\n%s", diff)
	}
	// Once no consumer tracks revision 1, the owner's leader hears it is obsolete.
	if got := run(t, m, "cli/0", "secret-get "+uri+" password --refresh", 0); got != "two\n" {
		t.Errorf("--refresh = %q", got)
	}
	waitIdle(t, m)
	if got := events(t, sc); got[len(got)-1] != "srv/0 secret-remove "+id+" label=creds rev=1" {
		t.Errorf("last secret event = %q, want secret-remove of revision 1 on the leader", got[len(got)-1])
	}
	run(t, m, "srv/0", "secret-remove "+uri+" --revision 1", 0)
	run(t, m, "cli/0", "secret-get "+uri+" password", 0)
	// Revoked: no more reads; an identical secret-set makes no revision.
	run(t, m, "srv/0", "secret-revoke "+uri+" -r "+rel+" && secret-set "+uri+" password=two", 0)
	if got := run(t, m, "cli/0", "secret-get "+uri, 1); got != "ERROR permission denied\n" {
		t.Errorf("read after revoke = %q", got)
	}
	if info, _ := m.ShowSecret(uri, false, 0); info.Revision != 2 {
		t.Errorf("revision after an identical secret-set = %d, want 2", info.Revision)
	}
	// A unit-owned secret is its unit's alone.
	unitURI := strings.TrimSpace(run(t, m, "srv/1", "secret-add --owner unit token=mine", 0))
	unitID, _ := jujusim.SecretID(unitURI)
	if got := run(t, m, "srv/1", "secret-ids", 0); got != unitID+"\n" {
		t.Errorf("srv/1 secret-ids = %q, want its unit secret", got)
	}
	run(t, m, "srv/0", "secret-get "+unitURI, 1)
	// Removing the relation ends its grants.
	run(t, m, "srv/0", "secret-grant "+uri+" -r "+rel+" --unit cli/1", 0)
	run(t, m, "cli/1", "secret-get "+uri, 0)
	if err := m.RemoveRelation("cli", "srv"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	run(t, m, "cli/1", "secret-get "+uri, 1)
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestSecretRotateAndExpire(t *testing.T) {
	m, sc, _ := secretModel(t)
	uri := strings.TrimSpace(run(t, m, "srv/0", "secret-add --label rot --rotate hourly --expire 2h token=a", 0))
	id, _ := jujusim.SecretID(uri)
	m.AdvanceSecretClock(90 * time.Minute)
	waitIdle(t, m)
	if diff := cmp.Diff([]string{"srv/0 secret-rotate " + id + " label=rot rev="}, events(t, sc)); diff != "" {
		t.Errorf("events after 90m (-want +got):\n%s", diff)
	}
	// The rotate hook made no new revision: Juju asks again 5 minutes later.
	m.AdvanceSecretClock(6 * time.Minute)
	waitIdle(t, m)
	if n := len(events(t, sc)); n != 2 {
		t.Errorf("%d events after a rotation that made no revision and 6 more minutes, want 2: %v", n, events(t, sc))
	}
	m.AdvanceSecretClock(time.Hour)
	waitIdle(t, m)
	got := events(t, sc)
	if !containsLine(got, "srv/0 secret-expired "+id+" label=rot rev=1") {
		t.Errorf("no secret-expired for revision 1: %v", got)
	}
	for _, e := range got {
		if strings.HasPrefix(e, "srv/1") || strings.HasPrefix(e, "cli/") {
			t.Errorf("%q: only the owner's leader hears of rotation and expiry", e)
		}
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestUserSecrets(t *testing.T) {
	m, sc, _ := secretModel(t)
	uri, err := m.AddSecret("api-token", "the upstream token", map[string]string{"token": "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "secret:") {
		t.Errorf("user secret URI = %q", uri)
	}
	if _, err := m.AddSecret("api-token", "", map[string]string{"token": "x"}); err == nil {
		t.Error("a second user secret with the same name was accepted")
	}
	if _, err := m.AddSecret("bad", "", map[string]string{"TOKEN": "x"}); err == nil {
		t.Error("an invalid key was accepted")
	}
	run(t, m, "cli/0", "secret-get "+uri, 1)
	if err := m.GrantSecret("api-token", "nope"); err == nil {
		t.Error("grant to an unknown application was accepted")
	}
	if err := m.GrantSecret("api-token", "cli"); err != nil {
		t.Fatal(err)
	}
	if got := run(t, m, "cli/0", "secret-get "+uri+" token", 0); got != "t1\n" {
		t.Errorf("read = %q", got)
	}
	if err := m.UpdateSecret("api-token", jujusim.UpdateSecretArgs{Content: map[string]string{"token": "t2"}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	id, _ := jujusim.SecretID(uri)
	if diff := cmp.Diff([]string{"cli/0 secret-changed " + id + " label= rev=2"}, events(t, sc)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	info, err := m.ShowSecret(uri, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if info.Owner != "<model>" || info.Name != "api-token" || info.Revision != 2 || info.Content["token"] != "t2" {
		t.Errorf("show-secret = %+v", info)
	}
	// With auto-prune, revision 1 goes once its last consumer moves on.
	prune := true
	if err := m.UpdateSecret(uri, jujusim.UpdateSecretArgs{AutoPrune: &prune}); err != nil {
		t.Fatal(err)
	}
	run(t, m, "cli/0", "secret-get "+uri+" --refresh", 0)
	if _, err := m.ShowSecret(uri, true, 1); err == nil {
		t.Error("revision 1 still there after auto-prune")
	}
	if err := m.RevokeSecret(uri, "cli"); err != nil {
		t.Fatal(err)
	}
	run(t, m, "cli/0", "secret-get "+uri, 1)
	if err := m.RemoveSecret("api-token", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ShowSecret(uri, false, 0); err == nil {
		t.Error("secret still there after remove")
	}
}

func TestSecretHookWaitsForRealExpiry(t *testing.T) {
	m, sc, _ := secretModel(t)
	uri := strings.TrimSpace(run(t, m, "srv/0", "secret-add --expire 1s token=a", 0))
	id, _ := jujusim.SecretID(uri)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := m.WaitHistory(ctx, func(h []jujusim.HookRecord) bool {
		for _, r := range h {
			if r.Hook == "secret-expired" {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if diff := cmp.Diff([]string{"srv/0 secret-expired " + id + " label= rev=1"}, events(t, sc)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
