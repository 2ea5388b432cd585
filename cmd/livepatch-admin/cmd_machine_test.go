package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// fleet is a real API on PostgreSQL, with a clock the test sets, and the environment the
// CLI runs in against it, logged in.
type fleet struct {
	t   *testing.T
	url string
	env map[string]string

	mu  sync.Mutex
	now time.Time
}

func (f *fleet) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fleet) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{t: t, now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	url := startAPI(t, httpapi.Options{
		Version: "9.9.9", URLTemplate: "http://lp.example/patches/{filename}", Now: f.clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	f.url = url
	f.env = map[string]string{envURL: url, envConfigDir: t.TempDir()}
	if code, _, stderr := runCLI(t, []string{"login", "-a", "admin:pw"}, f.env, ""); code != 0 {
		t.Fatalf("login: exit %d: %s", code, stderr)
	}
	return f
}

// authToken creates an auth token for tier through the CLI's client.
func (f *fleet) authToken(id, tier string, maxMachines int) string {
	f.t.Helper()
	cl, err := client.New(f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	tok, err := cl.WithBasicAuth("admin", "pw").CreateAuthToken(f.t.Context(), server.AuthTokenRequest{ID: id, Tier: tier, MaxMachines: maxMachines})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// machine enables a machine with an auth token and returns a function that checks it in.
func (f *fleet) machine(id, authToken string) func(st server.Status) {
	f.t.Helper()
	cl, err := client.New(f.url)
	if err != nil {
		f.t.Fatal(err)
	}
	mt, _, err := cl.Enable(f.t.Context(), id, authToken, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return func(st server.Status) {
		f.t.Helper()
		if _, err := cl.CheckIn(f.t.Context(), id, mt, st); err != nil {
			f.t.Fatal(err)
		}
	}
}

// expect runs the CLI and checks its exit code and exact outputs.
func (f *fleet) expect(args []string, code int, stdout, stderr string) {
	f.t.Helper()
	gotCode, gotOut, gotErr := runCLI(f.t, args, f.env, "")
	if gotCode != code {
		f.t.Errorf("livepatch-admin %q: exit %d, want %d (stderr %q)", args, gotCode, code, gotErr)
	}
	if diff := cmp.Diff(stdout, gotOut); diff != "" {
		f.t.Errorf("livepatch-admin %q: stdout (-want +got):\n%s", args, diff)
	}
	if diff := cmp.Diff(stderr, gotErr); diff != "" {
		f.t.Errorf("livepatch-admin %q: stderr (-want +got):\n%s", args, diff)
	}
}

// usage runs a command line that must be a usage error whose first line is want.
func (f *fleet) usage(args []string, want string) {
	f.t.Helper()
	code, stdout, stderr := runCLI(f.t, args, f.env, "")
	first, _, _ := strings.Cut(stderr, "\n")
	if code != cli.ExitUsage || stdout != "" || first != want {
		f.t.Errorf("livepatch-admin %q: exit %d, stdout %q, first line of stderr %q; want exit 2 with %q", args, code, stdout, first, want)
	}
}

func cliStatus(kernel, version, state string) server.Status {
	return server.Status{Kernel: kernel, Architecture: "amd64", PatchState: state, PatchVersion: version, ClientVersion: "10.8.3"}
}

// TestMachineCommands drives machines show, history, move, tag and delete and the
// filtered machines report against a real server and PostgreSQL.
func TestMachineCommands(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	tok := f.authToken("web", "beta", 2)
	const k = "5.15.0-107-generic"

	m1 := f.machine("m1", tok) // 09:00
	f.advance(time.Hour)
	st := cliStatus(k, "", server.StateNeedsCheck)
	st.Hostname = "web-1"
	st.Cloud = server.Cloud{Name: "aws", Region: "eu-west-1", Zone: "eu-west-1a"}
	m1(st) // 10:00
	f.advance(time.Hour)
	st.PatchState, st.PatchVersion = server.StateApplied, "107.1"
	m1(st) // 11:00
	f.advance(time.Hour)
	m1(st) // 12:00, no change

	f.expect([]string{"machines", "tag", "m1", "role=web", "site=par"}, 0, "Tags of machine m1: role=web,site=par\n", "")
	f.expect([]string{"machine", "tag", "m1", "site-"}, 0, "Tags of machine m1: role=web\n", "")

	f.expect([]string{"machine", "show", "m1"}, 0, `
machine:      m1
hostname:     web-1
cloud:        aws/eu-west-1/eu-west-1a
tags:         role=web
tier:         beta
token:        web
first seen:   2026-03-02 09:00
enabled:      2026-03-02 09:00
last seen:    2026-03-02 12:00
kernel:       5.15.0-107-generic amd64
client:       10.8.3
patch:        107.1
state:        applied
state since:  2026-03-02 11:00
history:
  TIME              CAUSE     TIER  KERNEL              PATCH  STATE
  2026-03-02 11:00  check-in  beta  5.15.0-107-generic  107.1  applied
  2026-03-02 10:00  check-in  beta  5.15.0-107-generic  -      needs-check
  2026-03-02 09:00  enable    beta  -                   -      -
`[1:], "")

	// Move, then the history shows it; --all lists every check-in.
	f.advance(time.Hour)
	f.expect([]string{"machine", "move", "m1", "stable"}, 0, "Moved machine m1 to stable\n", "")
	f.expect([]string{"machine", "history", "m1", "--limit", "2"}, 0, `
TIME              CAUSE     TIER    KERNEL              PATCH  STATE
2026-03-02 13:00  move      stable  5.15.0-107-generic  107.1  applied
2026-03-02 11:00  check-in  beta    5.15.0-107-generic  107.1  applied
`[1:], "")
	f.expect([]string{"machine", "history", "m1", "--all"}, 0, `
TIME              CAUSE     TIER  KERNEL              PATCH  STATE
2026-03-02 12:00  check-in  -     5.15.0-107-generic  107.1  applied
2026-03-02 11:00  check-in  -     5.15.0-107-generic  107.1  applied
2026-03-02 10:00  check-in  -     5.15.0-107-generic  -      needs-check
`[1:], "")
	code, stdout, _ := runCLI(t, []string{"machine", "history", "m1", "--format", "json"}, f.env, "")
	var events []server.MachineEvent
	if err := json.Unmarshal([]byte(stdout), &events); code != 0 || err != nil || len(events) != 4 || events[0].Cause != "move" {
		t.Errorf("history --format json: exit %d, %v, %q", code, err, stdout)
	}

	// A second machine, and the report's filters.
	m2 := f.machine("m2", tok)
	m2(cliStatus("6.8.0-40-generic", "", server.StateNothingToApply)) // 13:00
	f.advance(8 * 24 * time.Hour)
	f.expect([]string{"report", "machines", "--seen-before", "7d"}, 0, `
MACHINE  HOSTNAME  TIER    KERNEL              PATCH  STATE             LAST SEEN
m1       web-1     stable  5.15.0-107-generic  107.1  applied           2026-03-02 12:00
m2       -         beta    6.8.0-40-generic    -      nothing-to-apply  2026-03-02 13:00
`[1:], "")
	f.expect([]string{"report", "machines", "--seen-after", "1h"}, 0, "No machines.\n", "")
	f.expect([]string{"report", "machines", "--tag", "role=web", "--hostname", "web-1"}, 0, `
MACHINE  HOSTNAME  TIER    KERNEL              PATCH  STATE    LAST SEEN
m1       web-1     stable  5.15.0-107-generic  107.1  applied  2026-03-02 12:00
`[1:], "")
	code, stdout, _ = runCLI(t, []string{"report", "machines", "beta", "--kernel", "6.8.0-40-generic", "--format", "yaml"}, f.env, "")
	if code != 0 || !strings.HasPrefix(stdout, "- id: m2\n  tier: beta\n") || strings.Contains(stdout, "m1") {
		t.Errorf("report machines --format yaml: exit %d, stdout:\n%s", code, stdout)
	}

	// Bulk move by filter.
	f.expect([]string{"machines", "move", "--kernel", "6.8.0-40-generic", "edge"}, 0, "Moved 1 machine to edge\n", "")
	f.expect([]string{"machines", "move", "--tier", "edge", "--seen-before", "7d", "stable"}, 0, "Moved 1 machine to stable\n", "")
	f.expect([]string{"machines", "move", "--tier", "edge", "stable"}, 0, "Moved 0 machines to stable\n", "")

	// Errors: unknown machine and tier are errors (exit 1); bad input is a usage error.
	f.expect([]string{"machine", "show", "nope"}, 1, "", "error: machine \"nope\" not found\n")
	f.expect([]string{"machine", "history", "nope"}, 1, "", "error: machine \"nope\" not found\n")
	f.expect([]string{"machine", "move", "m1", "gold"}, 1, "", "error: tier \"gold\" does not exist\n")
	f.expect([]string{"machine", "move", "--state", "applied", "gold"}, 1, "", "error: tier \"gold\" does not exist\n")
	f.expect([]string{"report", "machines", "gold"}, 1, "", "error: tier \"gold\" does not exist\n")
	f.usage([]string{"report", "machines", "--seen-before", "7x"}, `error: invalid --seen-before "7x": want a duration such as 7d, 36h or 90m`)
	f.usage([]string{"report", "machines", "--seen-after", "-1h"}, `error: invalid --seen-after "-1h": want a duration such as 7d, 36h or 90m`)
	f.usage([]string{"report", "machines", "--tag", "role"}, `error: invalid --tag "role": want key=value`)
	f.usage([]string{"report", "machines", "--state", "fine"}, `error: invalid --state "fine": want one of `+strings.Join(server.PatchStates, ", "))
	f.usage([]string{"report", "machines", "beta", "--tier", "beta"}, "error: tier is given both as an argument and a flag")
	f.usage([]string{"machine", "move", "m1"}, "error: missing argument <tier>")
	f.usage([]string{"machine", "move", "m1", "--tier", "beta", "stable"}, `error: unexpected argument "m1": filter flags select the machines, name only the tier`)
	f.usage([]string{"machine", "tag", "m1", "role"}, `error: invalid tag "role": want key=value to set or key- to remove`)
	f.usage([]string{"machine", "history", "m1", "--limit", "0"}, "error: invalid --limit 0: want 1 to 100000")

	// Delete frees the token's quota (2 machines): another machine enrols, and m1
	// enrols again as a new machine when it comes back.
	f.expect([]string{"machine", "delete", "m1"}, 0, "Removed machine m1\n", "")
	f.expect([]string{"machine", "delete", "m1"}, 1, "", "error: machine \"m1\" not found\n")
	f.machine("m3", tok)
	f.expect([]string{"machine", "delete", "m3"}, 0, "Removed machine m3\n", "")
	f.machine("m1", tok)
	f.expect([]string{"machine", "history", "m1"}, 0, `
TIME              CAUSE   TIER  KERNEL  PATCH  STATE
2026-03-10 13:00  enable  beta  -       -      -
`[1:], "")
}
