package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/syncbuf"
	"github.com/livepatch-onprem/livepatch/internal/testbin"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// buildBinaries builds livepatch-server and livepatch-admin, once per test run
// (internal/testbin).
func buildBinaries(t *testing.T) (serverBin, adminBin string) {
	t.Helper()
	dir, err := testbin.Build(nil, "./cmd/livepatch-server", "./cmd/livepatch-admin")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "livepatch-server"), filepath.Join(dir, "livepatch-admin")
}

// startServer initialises the schema and runs livepatch-server serve on a free loopback
// port; it returns the server URL once the server accepts connections.
func startServer(t *testing.T, bin, dsn, user, password string) string {
	t.Helper()
	return startServerWith(t, bin, dsn, user, password, "")
}

// startServerWith is startServer with more top-level sections of the config file (YAML).
func startServerWith(t *testing.T, bin, dsn, user, password, extra string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
server:
  address: 127.0.0.1:0
  url-template: http://127.0.0.1/patches/{filename}
database:
  connection-string: %q
auth:
  basic-users: [%q]
patch-storage:
  type: postgres
`, dsn, user+":"+string(hash)) + extra
	cfgPath := filepath.Join(t.TempDir(), "livepatch-server.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), bin, "schema", "upgrade", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("schema upgrade: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logCopy syncbuf.Buffer
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(logs)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(&logCopy, sc.Text())
			var line struct {
				Msg     string `json:"msg"`
				Address string `json:"address"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Server started" {
				select {
				case addr <- line.Address:
				default:
				}
			}
		}
		io.Copy(io.Discard, logs)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-copied
		if err := cmd.Wait(); err != nil {
			t.Errorf("livepatch-server serve: %v; log:\n%s", err, logCopy.String())
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logCopy.String())
		}
	})
	select {
	case a := <-addr:
		return "http://" + a
	case <-copied:
		t.Fatalf("livepatch-server serve exited before it started; log:\n%s", logCopy.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("livepatch-server serve did not start within 2 minutes; log:\n%s", logCopy.String())
	}
	return ""
}

// adminCLI runs the built livepatch-admin binary against one server.
type adminCLI struct {
	t   *testing.T
	bin string
	env []string
}

// run runs livepatch-admin with args and stdin and returns its exit code and outputs.
func (a *adminCLI) run(stdin string, args ...string) (code int, stdout, stderr string) {
	a.t.Helper()
	cmd := exec.CommandContext(a.t.Context(), a.bin, args...)
	cmd.Env = a.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	}
	if err != nil {
		a.t.Fatalf("livepatch-admin %q: %v", args, err)
	}
	return 0, out.String(), errOut.String()
}

// ok runs a command that must succeed and returns its stdout.
func (a *adminCLI) ok(args ...string) string {
	a.t.Helper()
	code, stdout, stderr := a.run("", args...)
	if code != 0 || stderr != "" {
		a.t.Fatalf("livepatch-admin %q: exit %d, stderr:\n%s", args, code, stderr)
	}
	return stdout
}

// expect runs a command and checks its exit code and exact outputs.
func (a *adminCLI) expect(args []string, code int, stdout, stderr string) {
	a.t.Helper()
	gotCode, gotOut, gotErr := a.run("", args...)
	if gotCode != code {
		a.t.Errorf("livepatch-admin %q: exit %d, want %d (stderr %q)", args, gotCode, code, gotErr)
	}
	if diff := cmp.Diff(stdout, gotOut); diff != "" {
		a.t.Errorf("livepatch-admin %q: stdout (-want +got):\n%s", args, diff)
	}
	if diff := cmp.Diff(stderr, gotErr); diff != "" {
		a.t.Errorf("livepatch-admin %q: stderr (-want +got):\n%s", args, diff)
	}
}

// jsonOf runs a command with --format json and decodes its output into v.
func (a *adminCLI) jsonOf(v any, args ...string) {
	a.t.Helper()
	out := a.ok(append(args, "--format", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		a.t.Fatalf("livepatch-admin %q: cannot decode %q: %v", args, out, err)
	}
}

// writePatch generates a patch archive in dir and returns its path.
func writePatch(t *testing.T, dir, kernel, flavour, version, arch string, moduleSize int) string {
	t.Helper()
	name := server.PatchName{Kernel: kernel, Flavour: flavour, Version: version, Architecture: arch}.Filename()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := patchfile.Generate(f, patchfile.Metadata(kernel, flavour, version, arch), moduleSize); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestIntegration drives the built livepatch-admin binary against a real livepatch-server
// and PostgreSQL through the deployment guide's steps and every command.
func TestIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: builds and runs the server")
	}
	dsn := pgtest.DSN(t)
	serverBin, adminBin := buildBinaries(t)
	const user, password = "admin", "correct horse:battery"
	url := startServer(t, serverBin, dsn, user, password)
	configDir := filepath.Join(t.TempDir(), "config")
	a := &adminCLI{t: t, bin: adminBin, env: []string{
		envURL + "=" + url,
		envConfigDir + "=" + configDir,
		"HOME=" + t.TempDir(),
		"PATH=" + os.Getenv("PATH"),
	}}

	// Before login.
	a.expect([]string{"tier", "list"}, 1, "", notLoggedIn)
	code, _, stderr := a.run("wrong\n", "login", "-a", user)
	if code != 1 || stderr != "error: invalid username or password\n" {
		t.Errorf("login with a wrong password: exit %d, stderr %q", code, stderr)
	}

	// The deployment guide: login -a username:password, then auth-token.
	code, stdout, stderr := a.run("", "login", "-a", user+":"+password)
	if code != 0 || !strings.HasPrefix(stdout, "Logged in as admin; session valid until ") || stderr != "" {
		t.Fatalf("login: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if strings.Contains(stdout, password) {
		t.Errorf("login printed the password")
	}
	code, stdout, stderr = a.run("", "auth-token")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "\nTiers on "+url+": edge, beta, candidate, stable\n") {
		t.Errorf("auth-token without arguments: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}

	// Tiers.
	a.expect([]string{"tier", "list"}, 0, `
POSITION  NAME
1         edge
2         beta
3         candidate
4         stable
`[1:], "")
	a.expect([]string{"tier", "add", "qa", "--after", "beta"}, 0, "Added tier qa at position 3\n", "")
	a.expect([]string{"tier", "add", "canary", "--first"}, 0, "Added tier canary at position 1\n", "")
	a.expect([]string{"tier", "add", "archive"}, 0, "Added tier archive at position 7\n", "")
	var tiers []server.Tier
	a.jsonOf(&tiers, "tier", "list")
	wantTiers := []string{"canary", "edge", "beta", "qa", "candidate", "stable", "archive"}
	if diff := cmp.Diff(wantTiers, tierNames(tiers)); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}
	code, _, stderr = a.run("", "tier", "add", "qa")
	if code != 1 || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, "qa") {
		t.Errorf("tier add of an existing tier: exit %d, stderr %q", code, stderr)
	}
	for _, name := range []string{"qa", "canary", "archive"} {
		a.expect([]string{"tier", "delete", name}, 0, "Deleted tier "+name+"\n", "")
	}
	code, _, stderr = a.run("", "tier", "delete", "nosuch")
	if code != 1 || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, "nosuch") {
		t.Errorf("tier delete of a missing tier: exit %d, stderr %q", code, stderr)
	}

	// Patches: two files of 107.1 and one of 108.1 (over 1 MiB: stderr is not a terminal,
	// so no progress bar).
	dir := t.TempDir()
	p1 := writePatch(t, dir, "5.15.0-107.117", "generic", "107.1", "amd64", 4096)
	p2 := writePatch(t, dir, "5.15.0-107.117", "generic", "107.1", "arm64", 4096)
	p3 := writePatch(t, dir, "5.15.0-108.118", "generic", "108.1", "amd64", 2<<20)
	n1, n2, n3 := filepath.Base(p1), filepath.Base(p2), filepath.Base(p3)
	a.expect([]string{"patch", "upload", p1, p2, p3}, 0, ""+
		"Uploaded "+n1+" (version 107.1, tier edge)\n"+
		"Uploaded "+n2+" (version 107.1, tier edge)\n"+
		"Uploaded "+n3+" (version 108.1, tier edge)\n", "")
	a.expect([]string{"patch", "upload", p1}, 0, "Already uploaded: "+n1+" (version 107.1, tier edge)\n", "")

	var patches []server.Patch
	a.jsonOf(&patches, "patch", "list")
	if len(patches) != 3 || patches[0].Version != "108.1" {
		t.Errorf("patch list = %+v, want 3 files, 108.1 first", patches)
	}
	for _, p := range patches {
		if p.Tier != "edge" || p.Blocked || p.Source != server.SourceUpload {
			t.Errorf("patch %s: tier %q blocked %v source %q; want edge, unblocked, upload", p.Filename, p.Tier, p.Blocked, p.Source)
		}
	}
	a.expect([]string{"patch", "list", "--kernel", "5.15.0-108"}, 0, `
VERSION  KERNEL          FLAVOUR  ARCH   TIER  BLOCKED
108.1    5.15.0-108.118  generic  amd64  edge  no
`[1:], "")
	stdout = a.ok("patch", "show", "107.1")
	for _, want := range []string{"filename:      " + n1 + "\n", "filename:      " + n2 + "\n", "tier:          edge\n", "fixes:\n  - CVE-"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("patch show 107.1 lacks %q:\n%s", want, stdout)
		}
	}
	code, _, stderr = a.run("", "patch", "show", "99.9")
	if code != 1 || !strings.HasPrefix(stderr, "error: ") || !strings.Contains(stderr, "99.9") {
		t.Errorf("patch show of a missing version: exit %d, stderr %q", code, stderr)
	}

	a.expect([]string{"patch", "promote", "107.1", "beta"}, 0, "Promoted 2 files of patch 107.1 to beta\n", "")
	a.jsonOf(&patches, "tier", "patches", "beta")
	if len(patches) != 2 || patches[0].Version != "107.1" || patches[1].Version != "107.1" {
		t.Errorf("tier patches beta = %+v, want the two files of 107.1", patches)
	}
	a.expect([]string{"patch", "promote-all", "beta", "stable"}, 0, "Promoted 2 patch files from beta to stable\n", "")
	a.expect([]string{"patch", "block", "108.1", "--reason", "breaks nfs"}, 0, "Blocked 1 file of patch 108.1\n", "")
	a.jsonOf(&patches, "patch", "show", "108.1")
	if len(patches) != 1 || !patches[0].Blocked || patches[0].BlockReason != "breaks nfs" {
		t.Errorf("blocked patch = %+v", patches)
	}
	// Text from the server never drives the terminal: a reason with escape sequences (as
	// any admin, or an upstream's block, could set) prints escaped.
	a.ok("patch", "block", "108.1", "--reason", "\x1b]0;owned\x07\x1b[2Jcleared")
	if out := a.ok("patch", "show", "108.1"); strings.ContainsRune(out, 0x1b) || !strings.Contains(out, `\x1b]0;owned\x07\x1b[2Jcleared`) {
		t.Errorf("patch show prints control characters:\n%q", out)
	}
	a.expect([]string{"patch", "unblock", "108.1"}, 0, "Unblocked 1 file of patch 108.1\n", "")

	// Storage.
	var files []server.StorageFile
	a.jsonOf(&files, "storage", "patches")
	if len(files) != 3 {
		t.Errorf("storage patches = %+v, want 3 files", files)
	}
	for _, f := range files {
		if !f.Recorded {
			t.Errorf("stored file %s is not recorded", f.Filename)
		}
	}
	a.expect([]string{"storage", "refresh"}, 0, "Storage refreshed: 0 added, 0 removed, 0 missing, 0 mismatched, 0 invalid\n", "")

	// Auth tokens and an enrolled machine.
	token := strings.TrimSpace(a.ok("auth-token", "web", "stable", "--max-machines", "5", "--expires", "30d"))
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("auth-token printed %q, want one token", token)
	}
	var tokens []server.AuthToken
	a.jsonOf(&tokens, "auth-tokens", "list")
	if len(tokens) != 1 || tokens[0].ID != "web" || tokens[0].Tier != "stable" || tokens[0].Token != "" || tokens[0].MaxMachines != 5 || tokens[0].ExpiresAt == nil {
		t.Errorf("auth-tokens list = %+v", tokens)
	}

	ctx := t.Context()
	cl, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	const machineID = "4c4c4544003957108052b4c04f384e32"
	status := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateNothingToApply}
	machineToken, tier, err := cl.Enable(ctx, machineID, token, &status)
	if err != nil || tier != "stable" {
		t.Fatalf("Enable: tier %q, %v", tier, err)
	}
	update, err := cl.CheckIn(ctx, machineID, machineToken, status)
	if err != nil {
		t.Fatalf("CheckIn: %v", err)
	}
	if update.Patch == nil || update.Patch.Version != "107.1" || update.Patch.Filename != n1 {
		t.Errorf("CheckIn offered %+v, want %s", update.Patch, n1)
	}
	status.PatchState, status.PatchVersion = server.StateApplied, "107.1"
	if _, err := cl.CheckIn(ctx, machineID, machineToken, status); err != nil {
		t.Fatalf("CheckIn: %v", err)
	}

	// Reports.
	// The last column is the time of the check-in.
	lines := strings.Split(a.ok("report", "machines", "stable"), "\n")
	if len(lines) != 3 || lines[0] != "MACHINE                           HOSTNAME  TIER    KERNEL              PATCH  STATE    LAST SEEN" ||
		!strings.HasPrefix(lines[1], "4c4c4544003957108052b4c04f384e32  -         stable  5.15.0-107-generic  107.1  applied  20") {
		t.Errorf("report machines stable:\n%s", strings.Join(lines, "\n"))
	}
	var machines []server.Machine
	a.jsonOf(&machines, "report", "machines", "stable", "107.1", "applied")
	if len(machines) != 1 || machines[0].ID != machineID || machines[0].TokenID != "web" {
		t.Errorf("report machines stable 107.1 applied = %+v", machines)
	}
	a.expect([]string{"report", "machines", "edge"}, 0, "No machines.\n", "")
	a.expect([]string{"report", "patch-health", "stable", "107.1"}, 0, `
Patch 107.1 in tier stable: 1 machine
STATE    MACHINES
applied  1
`[1:], "")
	a.expect([]string{"report", "kernels"}, 0, `
KERNEL              ARCH   MACHINES
5.15.0-107-generic  amd64  1
`[1:], "")
	a.jsonOf(&tokens, "auth-tokens", "list")
	if len(tokens) != 1 || tokens[0].Machines != 1 {
		t.Errorf("auth-tokens list after enrolment = %+v, want 1 machine", tokens)
	}

	// An enrolled id is not taken over by another enable; an administrator frees it.
	if _, _, err := cl.Enable(ctx, machineID, token, nil); server.ErrorCode(err) != server.CodeConflict {
		t.Errorf("Enable of an enrolled id without its token: %v, want a conflict", err)
	}
	a.expect([]string{"machines", "remove", machineID}, 0, "Removed machine "+machineID+"\n", "")
	a.expect([]string{"machines", "remove", machineID}, 1, "", "error: machine \""+machineID+"\" not found\n")
	if machineToken, _, err = cl.Enable(ctx, machineID, token, &status); err != nil {
		t.Fatalf("Enable after removal: %v", err)
	}

	// Revocation stops new enrolments.
	a.expect([]string{"auth-tokens", "revoke", "web"}, 0, "Revoked auth token web\n", "")
	_, _, err = cl.Enable(ctx, "another-machine", token, nil)
	if apiErr, ok := errors.AsType[*client.APIError](err); !ok || apiErr.Status != 401 {
		t.Errorf("Enable with a revoked token: %v, want a 401", err)
	}
	code, _, stderr = a.run("", "auth-tokens", "revoke", "web")
	if code != 1 || !strings.HasPrefix(stderr, "error: ") {
		t.Errorf("second revoke: exit %d, stderr %q", code, stderr)
	}

	// Sync tokens for downstream servers; this server does not sync itself.
	syncToken := strings.TrimSpace(a.ok("sync-tokens", "add", "stable", "region-eu", "--valid-until", "30d"))
	if len(syncToken) != 36 {
		t.Errorf("sync-tokens add printed %q, want one token", syncToken)
	}
	var syncTokens []server.SyncToken
	a.jsonOf(&syncTokens, "sync-tokens", "list")
	if len(syncTokens) != 1 || syncTokens[0].Name != "region-eu" || syncTokens[0].Tier != "stable" || syncTokens[0].Token != "" || syncTokens[0].ValidUntil == nil {
		t.Errorf("sync-tokens list = %+v", syncTokens)
	}
	a.expect([]string{"sync-tokens", "revoke", "region-eu"}, 0, "Revoked sync token region-eu\n", "")
	a.expect([]string{"sync-tokens", "revoke", "region-eu"}, 1, "", "error: sync token \"region-eu\" not found\n")
	a.expect([]string{"sync", "status"}, 0, "enabled:       no\nlast run:      never\nlast success:  never\n", "")
	a.expect([]string{"sync", "reports"}, 0, "No sync reports.\n", "")
	a.expect([]string{"sync", "trigger", "--wait"}, 1, "", "error: upstream sync is not enabled on this server (patch-sync.enabled)\n")
	a.expect([]string{"report", "downstream"}, 0, "No downstream deployments.\n", "")
	a.expect([]string{"report", "downstream", "nosuch"}, 1, "",
		"error: downstream deployment \"nosuch\" not found: it has not synced or reported machines in the last 30 days\n")

	// Logout ends the session on the server too.
	cache := &sessionCache{dir: configDir}
	s, ok, err := cache.get(url)
	if err != nil || !ok {
		t.Fatalf("no cached session: %v", err)
	}
	a.expect([]string{"logout"}, 0, "Logged out of "+url+"\n", "")
	a.expect([]string{"tier", "list"}, 1, "", notLoggedIn)
	if _, err := cl.WithToken(s.Token).Tiers(ctx); server.ErrorCode(err) != server.CodeUnauthorized {
		t.Errorf("old session after logout: %v, want unauthorized", err)
	}

	// Sessions are listed and ended on the server.
	a.ok("login", "-a", user+":"+password)
	var sessions []server.Session
	a.jsonOf(&sessions, "sessions", "list")
	if len(sessions) != 1 || sessions[0].User != user || !sessions[0].Current || !sessions[0].Valid || sessions[0].ID == "" {
		t.Fatalf("sessions list = %+v", sessions)
	}
	if out := a.ok("sessions", "list"); !strings.Contains(out, sessions[0].ID+" *") || !strings.Contains(out, "active") {
		t.Errorf("sessions list:\n%s", out)
	}
	if code, _, stderr := a.run("", "sessions", "revoke", sessions[0].ID, "--user", user); code != 2 || !strings.HasPrefix(stderr, "error: give a session id or --user <name>, not both\n") {
		t.Errorf("sessions revoke with both an id and --user: exit %d, %q", code, stderr)
	}
	a.expect([]string{"sessions", "revoke", sessions[0].ID}, 0, "Ended session "+sessions[0].ID+"\n", "")
	a.expect([]string{"tier", "list"}, 1, "", notLoggedIn)
	a.ok("login", "-a", user+":"+password)
	a.expect([]string{"sessions", "revoke", "--user", user}, 0, "Ended 1 sessions of "+user+"\n", "")
	a.expect([]string{"tier", "list"}, 1, "", notLoggedIn)

	// A server that cannot be reached is named.
	a.expect([]string{"--url", "http://127.0.0.1:1", "login", "-a", "admin:x"}, 1, "",
		"error: cannot reach livepatch server at http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused\n")
}
