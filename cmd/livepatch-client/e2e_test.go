package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/testbin"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// buildServer builds livepatch-server, once per test run (internal/testbin).
func buildServer(t *testing.T) string {
	t.Helper()
	return testbin.Program(t, "./cmd/livepatch-server")
}

// patchFront serves patch downloads in front of the server (the server's url-template
// points at it): it passes them through, or with tamper set alters one byte of each.
type patchFront struct {
	*httptest.Server
	backend atomic.Pointer[url.URL]
	tamper  atomic.Bool
}

func newPatchFront(t *testing.T) *patchFront {
	f := &patchFront{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backend := f.backend.Load()
		if backend == nil {
			http.Error(w, "no backend yet", http.StatusServiceUnavailable)
			return
		}
		if !f.tamper.Load() {
			httputil.NewSingleHostReverseProxy(backend).ServeHTTP(w, r)
			return
		}
		resp, err := http.Get(backend.JoinPath(r.URL.Path).String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			http.Error(w, "backend failed", http.StatusBadGateway)
			return
		}
		data[len(data)/2] ^= 0xff
		w.Write(data)
	}))
	t.Cleanup(f.Close)
	return f
}

// startServer runs livepatch-server on a fresh database, with patch downloads going
// through front, and returns its URL.
func startServer(t *testing.T, front *patchFront, basicUser string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs livepatch-server on PostgreSQL: skipped with -short")
	}
	bin := buildServer(t)
	cfg := fmt.Sprintf(`server:
  address: 127.0.0.1:0
  url-template: %s/patches/{filename}
  log-level: info
database:
  connection-string: %s
auth:
  basic-users: [%q]
`, front.URL, pgtest.DSN(t), basicUser)
	cfgPath := filepath.Join(t.TempDir(), "livepatch-server.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "schema", "upgrade", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("schema upgrade: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	started := make(chan string, 1)
	go func() {
		// The log is JSON lines: the "Server started" one names the bound address.
		sc := bufio.NewScanner(stderr)
		var log strings.Builder
		found := false
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			var rec struct {
				Msg     string `json:"msg"`
				Address string `json:"address"`
			}
			if !found && json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "Server started" {
				found = true
				started <- rec.Address
			}
		}
		exited <- fmt.Errorf("livepatch-server exited: %v\n%s", cmd.Wait(), log.String())
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; !strings.Contains(err.Error(), "exited: <nil>") {
			t.Errorf("server did not stop cleanly: %v", err)
		}
	})
	select {
	case addr := <-started:
		base := "http://" + addr
		u, _ := url.Parse(base)
		front.backend.Store(u)
		return base
	case err := <-exited:
		t.Fatal(err)
	case <-time.After(time.Minute):
		t.Fatal("livepatch-server did not start within a minute")
	}
	return ""
}

// uploadPatch uploads a generated patch for 5.15.0-107 generic amd64 and promotes it.
func uploadPatch(t *testing.T, admin *client.Client, version, tier string) server.Patch {
	t.Helper()
	meta := patchfile.Metadata("5.15.0-107.117", "generic", version, "amd64")
	var buf bytes.Buffer
	if err := patchfile.Generate(&buf, meta, 64<<10); err != nil {
		t.Fatal(err)
	}
	name := server.PatchName{Kernel: meta.Kernel, Flavour: meta.Flavour, Version: version, Architecture: "amd64"}
	p, _, err := admin.UploadPatch(t.Context(), name.Filename(), bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatalf("upload %s: %v", name.Filename(), err)
	}
	if _, err := admin.PromotePatch(t.Context(), version, tier); err != nil {
		t.Fatalf("promote %s: %v", version, err)
	}
	return p
}

// reportOf returns the server's report of the machine.
func reportOf(t *testing.T, admin *client.Client) server.Machine {
	t.Helper()
	machines, _, err := admin.ReportMachines(t.Context(), server.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range machines {
		if m.ID == testMachineID {
			return m
		}
	}
	t.Fatalf("machine %s not in the server's report: %+v", testMachineID, machines)
	return server.Machine{}
}

// statusJSON runs status --format json and decodes what the tests look at.
func statusJSON(t *testing.T, m *machine) (st struct {
	Server string
	Tier   string `json:"tier"`
	Status []struct {
		Kernel    string
		Livepatch struct {
			CheckState, State, Version, WaitingVersion, Reason string
		}
	}
}) {
	t.Helper()
	out := m.mustRun("", "status", "--format", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --format json: %v\n%s", err, out)
	}
	return st
}

func TestEndToEnd(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	front := newPatchFront(t)
	base := startServer(t, front, "admin:"+string(hash))
	anon, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	admin := anon.WithBasicAuth("admin", "s3cret")
	p1 := uploadPatch(t, admin, "107.1", "stable")
	tok, err := admin.CreateAuthToken(t.Context(), server.AuthTokenRequest{ID: "web", Tier: "stable"})
	if err != nil {
		t.Fatalf("create auth token: %v", err)
	}

	m := newMachine(t)
	m.mustRun("", "config", "remote-server="+base, "mode=no-apply")

	// A wrong token is refused with the server's reason.
	code, _, errOut := m.run("", "enable", "not-a-token")
	if code != cli.ExitError || !strings.HasPrefix(errOut, "error: the server refused the token: ") {
		t.Errorf("enable with a bad token: exit %d, %q", code, errOut)
	}

	// Enable: registered, first check, patch downloaded and verified, not applied.
	out := m.mustRun("", "enable", tok.Token)
	want := "Successfully enabled this machine with " + base + ": tier stable.\n" +
		"Patch 107.1 is downloaded and verified; not applied in mode no-apply.\n"
	if out != want {
		t.Errorf("enable:\n%s\nwant:\n%s", out, want)
	}
	st := statusJSON(t, m)
	if lp := st.Status[0].Livepatch; st.Tier != "stable" || st.Server != base || lp.State != server.StateUnapplied ||
		lp.WaitingVersion != "107.1" || lp.Version != "" || lp.CheckState != "checked" {
		t.Errorf("status after enable: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(m.stateDir, "patches", p1.Filename)); err != nil {
		t.Errorf("verified patch not stored: %v", err)
	}
	if len(m.insmods) != 0 {
		t.Errorf("no-apply loaded modules: %q", m.insmods)
	}
	rep := reportOf(t, admin)
	if rep.Tier != "stable" || rep.TokenID != "web" || rep.PatchState != server.StateUnapplied || rep.Kernel != "5.15.0-107-generic" ||
		rep.Architecture != "amd64" || rep.CPUModel != "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz" || rep.Uptime != 93600 ||
		!rep.BootTime.Equal(time.Unix(1714550400, 0)) || rep.ClientVersion == "" ||
		rep.Hostname != "web-7" || rep.Cloud != (server.Cloud{Name: "openstack", Region: "RegionOne", Zone: "nova"}) {
		t.Errorf("server's report after enable: %+v", rep)
	}
	// A site that keeps hostnames private: the next check-in clears it.
	m.mustRun("", "config", "report-hostname=false")
	m.mustRun("", "refresh")
	if rep := reportOf(t, admin); rep.Hostname != "" || rep.Cloud.Name != "openstack" {
		t.Errorf("server's report with report-hostname=false: %+v", rep)
	}
	m.mustRun("", "config", "report-hostname=")

	// The humane status shows the waiting version.
	out = m.mustRun("", "status", "--verbose")
	t.Logf("status --verbose:\n%s", out)
	for _, line := range []string{
		"server check-in: succeeded\n",
		"patch state: ⧗ livepatches are installed, but the module is not yet applied\n",
		"waiting patch: 107.1 (downloaded and verified; not applied in mode no-apply)\n",
		"tier: stable\n",
		"machine id: " + testMachineID + "\n",
		"server: " + base + "\n",
		"fixes (not applied):\n  * " + p1.Fixes[0].Name,
	} {
		if !strings.Contains(out, line) {
			t.Errorf("status --verbose lacks %q:\n%s", line, out)
		}
	}

	// Enabling again re-registers cleanly.
	out = m.mustRun("", "enable", tok.Token)
	if !strings.HasPrefix(out, "Successfully re-enabled this machine with "+base+": tier stable.\n") {
		t.Errorf("second enable: %q", out)
	}

	// A tampered download of a new patch is rejected and never kept.
	front.tamper.Store(true)
	p2 := uploadPatch(t, admin, "107.2", "stable")
	code, out, errOut = m.run("", "refresh")
	tamperedPrefix := "error: patch 107.2 failed verification: checksum mismatch: got "
	if code != cli.ExitError || out != "" || !strings.HasPrefix(errOut, tamperedPrefix) || !strings.HasSuffix(errOut, " want "+p2.SHA256+"\n") {
		t.Errorf("refresh with a tampered download: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	st = statusJSON(t, m)
	if lp := st.Status[0].Livepatch; lp.State != server.StateCheckFailed || !strings.HasPrefix(lp.Reason, strings.TrimPrefix(tamperedPrefix, "error: ")) {
		t.Errorf("status after the tampered download: %+v", lp)
	}
	if entries, _ := os.ReadDir(filepath.Join(m.stateDir, "patches")); len(entries) != 0 {
		t.Errorf("patches directory after the tampered download: %v", entries)
	}
	if rep := reportOf(t, admin); rep.PatchState != server.StateCheckFailed {
		t.Errorf("server's report after the tampered download: %q", rep.PatchState)
	}

	// The genuine file is verified and, in mode normal, applied (to the fake sysfs).
	front.tamper.Store(false)
	m.mustRun("", "config", "mode=normal")
	if out := m.mustRun("", "refresh"); out != "Patch 107.2 is applied.\n" {
		t.Errorf("refresh: %q", out)
	}
	if want := []string{"insmod " + filepath.Join(m.stateDir, "patches", p2.Module+".ko")}; strings.Join(m.insmods, ",") != strings.Join(want, ",") {
		t.Errorf("insmods: %q, want %q", m.insmods, want)
	}
	st = statusJSON(t, m)
	if lp := st.Status[0].Livepatch; lp.State != server.StateApplied || lp.Version != "107.2" {
		t.Errorf("status after apply: %+v", lp)
	}
	if rep := reportOf(t, admin); rep.PatchState != server.StateApplied || rep.PatchVersion != "107.2" {
		t.Errorf("server's report after apply: %q %q", rep.PatchState, rep.PatchVersion)
	}
	health, err := admin.PatchHealth(t.Context(), "stable", "107.2")
	if err != nil || health.States[server.StateApplied] != 1 {
		t.Errorf("patch health: %+v, %v", health, err)
	}

	// Disable: the server forgets the machine token, and so does the client.
	if out := m.mustRun("", "disable"); out != "Successfully disabled this machine.\n" {
		t.Errorf("disable: %q", out)
	}
	code, _, errOut = m.run("", "status")
	if code != cli.ExitError || errOut != "error: machine is not enabled: run livepatch-client enable <token>\n" {
		t.Errorf("status after disable: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(m.stateDir, "machine-token")); !os.IsNotExist(err) {
		t.Errorf("machine token kept after disable: %v", err)
	}

	// A machine the server no longer knows is forgotten locally when disabled.
	m.mustRun("", "enable", tok.Token)
	token, err := os.ReadFile(filepath.Join(m.stateDir, "machine-token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := anon.Disable(t.Context(), testMachineID, strings.TrimSpace(string(token))); err != nil {
		t.Fatalf("disable behind the client's back: %v", err)
	}
	code, _, errOut = m.run("", "refresh")
	if code != cli.ExitError || !strings.HasPrefix(errOut, "error: the server refused the token: ") {
		t.Errorf("refresh with a forgotten machine: exit %d, %q", code, errOut)
	}
	out = m.mustRun("", "disable")
	if !strings.HasPrefix(out, "The server refused the machine token (") || !strings.HasSuffix(out, "); forgot it locally: this machine is disabled.\n") {
		t.Errorf("disable of a forgotten machine: %q", out)
	}
}

// TestEndToEndDaemon runs the daemon against the server: it checks at once and on
// SIGHUP, and stops cleanly.
func TestEndToEndDaemon(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	front := newPatchFront(t)
	base := startServer(t, front, "admin:"+string(hash))
	anon, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	admin := anon.WithBasicAuth("admin", "pw")
	tok, err := admin.CreateAuthToken(t.Context(), server.AuthTokenRequest{ID: "fleet", Tier: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	m := newMachine(t)
	m.mustRun("", "config", "remote-server="+base, "mode=no-apply")
	if out := m.mustRun("", "enable", tok.Token); !strings.HasSuffix(out, "No patch for this kernel yet.\n") {
		t.Errorf("enable: %q", out)
	}

	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		g, _, _ := m.global("")
		g.hup = hup
		done <- run(ctx, g, []string{"--state-dir", m.stateDir, "run"})
	}()

	// A patch appears; SIGHUP makes the daemon fetch it without waiting for the interval.
	uploadPatch(t, admin, "107.1", "edge")
	hup <- syscall.SIGHUP
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	timeout := time.After(time.Minute)
	for reportOf(t, admin).PatchState != server.StateUnapplied {
		select {
		case <-poll.C:
		case <-timeout:
			t.Fatal("the daemon did not fetch the patch within a minute of SIGHUP")
		}
	}
	cancel()
	if code := <-done; code != cli.ExitOK {
		t.Errorf("run exited %d on stop, want 0", code)
	}
}
