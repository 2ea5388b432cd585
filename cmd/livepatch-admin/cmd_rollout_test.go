package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// startAPI runs the real API (with opts, and the administrator admin:pw) on a throwaway
// database and returns its URL; everything stops when the test ends.
func startAPI(t *testing.T, opts httpapi.Options) string {
	t.Helper()
	ctx := t.Context()
	db, err := postgres.Open(ctx, pgtest.DSN(t), postgres.Options{MaxConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	opts.BasicUsers = []string{"admin:" + string(hash)}
	api, err := httpapi.New(db, patchstore.NewPostgres(db.SQL()), opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { api.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv.URL
}

// realAPI starts the real API and returns its URL and a config directory holding a
// session for it.
func realAPI(t *testing.T) (url, dir string) {
	t.Helper()
	url = startAPI(t, httpapi.Options{CatalogRefresh: time.Hour})
	cl, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	login, err := cl.Login(t.Context(), "admin", "pw")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := (&sessionCache{dir: dir}).put(url, session{Token: login.Token, User: "admin", ExpiresAt: login.ExpiresAt}); err != nil {
		t.Fatal(err)
	}
	return url, dir
}

// TestRolloutCLI sets, shows and deletes a policy, pauses and resumes a rollout and
// shows its status, against the real API and database.
func TestRolloutCLI(t *testing.T) {
	url, dir := realAPI(t)
	env := map[string]string{envURL: url, envConfigDir: dir}
	cli := func(want int, args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(t, args, env, "")
		if code != want {
			t.Fatalf("%q: exit %d, want %d; stdout %q stderr %q", args, code, want, stdout, stderr)
		}
		return stdout + stderr
	}
	out := cli(0, "rollout", "policy", "set", "stable", "--canaries", "5%", "--soak", "24h", "--rate", "50/1h",
		"--max-in-flight", "100", "--failure-threshold", "10", "--window", "mon-fri 22:00-04:00", "--window", "sat,sun 00:00-23:59",
		"--time-zone", "Europe/Paris")
	want := `
Set the rollout policy of tier stable:
  canaries:           5% of the tier
  soak:               24h0m0s
  rate:               50 per 1h0m0s
  max in flight:      100
  failure threshold:  10%
  apply timeout:      3h0m0s
  window:             mon,tue,wed,thu,fri 22:00-04:00 Europe/Paris
  window:             sat,sun 00:00-23:59 Europe/Paris
`[1:]
	if out != want {
		t.Errorf("policy set:\n%s\nwant:\n%s", out, want)
	}
	if got := cli(0, "rollout", "policy", "show", "stable"); !strings.HasPrefix(got, "Rollout policy of tier stable:\n") || !strings.Contains(got, "5% of the tier") {
		t.Errorf("policy show:\n%s", got)
	}
	if got := cli(0, "rollout", "policy", "show", "stable", "--format", "json"); !strings.Contains(got, `"rate-period": "1h0m0s"`) {
		t.Errorf("policy show json:\n%s", got)
	}
	if got := cli(0, "rollout", "pause", "stable", "107.1", "--reason", "waiting for the change board"); got != "Paused the rollout of 107.1 in tier stable\n" {
		t.Errorf("pause: %q", got)
	}
	got := cli(0, "rollout", "status", "stable", "107.1")
	if !strings.HasPrefix(got, "107.1 in tier stable: paused: waiting for the change board\n") || !strings.Contains(got, "  offered     [....................]  0/0 machines\n") {
		t.Errorf("status:\n%s", got)
	}
	if got := cli(0, "rollout", "resume", "stable", "107.1"); got != "Resumed the rollout of 107.1 in tier stable\n" {
		t.Errorf("resume: %q", got)
	}
	if got := cli(0, "rollout", "resume", "stable", "107.1"); got != "Already resumed the rollout of 107.1 in tier stable\n" {
		t.Errorf("resume again: %q", got)
	}
	if got := cli(0, "rollout", "status", "stable"); !strings.HasPrefix(got, "107.1 in tier stable: active\n") {
		t.Errorf("status of the tier:\n%s", got)
	}
	if got := cli(0, "rollout", "policy", "delete", "stable"); got != "Deleted the rollout policy of tier stable\n" {
		t.Errorf("delete: %q", got)
	}
	if got := cli(1, "rollout", "policy", "show", "stable"); !strings.Contains(got, `tier "stable" has no rollout policy`) {
		t.Errorf("show after delete: %q", got)
	}
	if got := cli(1, "rollout", "status", "nope", "107.1"); !strings.Contains(got, "not found") {
		t.Errorf("status of an unknown tier: %q", got)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"rollout", "policy", "set", "stable", "--canaries", "many"}, `error: invalid --canaries "many": want a count such as 5 or a percentage such as 2%`},
		{[]string{"rollout", "policy", "set", "stable", "--rate", "50"}, `error: invalid --rate "50": want COUNT/PERIOD such as 50/1h`},
		{[]string{"rollout", "policy", "set", "stable", "--window", "someday 01:00-02:00"}, `error: invalid --window "someday 01:00-02:00": day "someday" is not one of sun, mon, tue, wed, thu, fri, sat`},
		{[]string{"rollout", "policy", "set", "stable", "--failure-threshold", "150"}, `error: invalid rollout policy for tier "stable": failure-threshold must be a percentage between 0 and 100, not 150`},
		{[]string{"rollout", "policy", "set", "stable", "--time-zone", "Nowhere/Town"}, `error: invalid rollout policy for tier "stable": unknown time-zone "Nowhere/Town": use an IANA name such as Europe/Paris`},
		{[]string{"rollout", "pause", "stable"}, "error: missing argument <version>"},
		{[]string{"rollout", "halt", "stable", "latest"}, `error: invalid patch version "latest": want numbers separated by dots, such as 107.1`},
		{[]string{"rollout", "status", "stable", "--machines"}, "error: --machines needs a version"},
	} {
		code, stdout, stderr := runCLI(t, tc.args, env, "")
		first, rest, _ := strings.Cut(stderr, "\n")
		if code != 2 || first != tc.msg || !strings.HasPrefix(rest, "Usage:\n") || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q then the usage", tc.args, code, stdout, stderr, tc.msg)
		}
	}
}
