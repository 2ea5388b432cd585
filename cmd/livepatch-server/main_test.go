package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/config"
)

func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	s3test.Stop()
	os.Exit(code)
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, dsn, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "livepatch-server.yaml")
	body := "server:\n  address: 127.0.0.1:0\n  url-template: http://127.0.0.1/patches/{filename}\n" +
		"database:\n  connection-string: " + dsn + "\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSchemaCommands(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg := writeConfig(t, dsn, "")

	code, out, _ := runCmd(t, "schema", "check", "--config", cfg)
	if code != 2 || out != "database not initialized\n" {
		t.Errorf("check on empty db: %d %q", code, out)
	}
	code, out, _ = runCmd(t, "schema", "version", "--db", dsn, "--format", "json")
	if code != 0 || !strings.HasPrefix(out, `{"current":0,"latest":`) {
		t.Errorf("version on empty db: %d %q", code, out)
	}
	code, out, errOut := runCmd(t, "schema", "upgrade", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "schema upgraded from version 0 to ") {
		t.Fatalf("upgrade: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCmd(t, "schema", "upgrade", "--config", cfg, "--format", "json")
	if code != 0 || !strings.HasPrefix(out, `{"from":`) {
		t.Errorf("second upgrade: %d %q", code, out)
	}
	code, out, _ = runCmd(t, "schema", "check", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "schema is current") {
		t.Errorf("check after upgrade: %d %q", code, out)
	}
	code, _, errOut = runCmd(t, "schema", "check", "--db", "postgres://nobody@127.0.0.1:1/x?sslmode=disable")
	if code != 1 || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("check on unreachable db: %d %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil, {"bogus"}, {"schema"}, {"schema", "drop"}, {"schema", "check"}, {"serve"},
		{"serve", "--nope"}, {"schema", "version", "--db", "x", "--format", "xml"},
	} {
		code, _, errOut := runCmd(t, args...)
		if code != 2 || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q; want 2 with usage", args, code, errOut)
		}
	}
}

func TestServeRefusesOldSchemaAndBadConfig(t *testing.T) {
	dsn := pgtest.DSN(t)
	code, _, errOut := runCmd(t, "serve", "--config", writeConfig(t, dsn, ""))
	if code != 1 || !strings.Contains(errOut, "schema upgrade") {
		t.Errorf("serve on empty db: %d %q", code, errOut)
	}
	bad := writeConfig(t, dsn, "bogus: 1\npatch-storage:\n  type: s4\n")
	code, _, errOut = runCmd(t, "serve", "--config", bad)
	if code != 1 || !strings.Contains(errOut, "bogus") {
		t.Errorf("serve with unknown key: %d %q", code, errOut)
	}
	c := config.Default()
	c.PatchStorage.Type = "s4"
	c.MachineReports.RetentionDays = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "s4") || !strings.Contains(err.Error(), "retention-days") ||
		!strings.Contains(err.Error(), "server.address is required") {
		t.Errorf("Validate lists every problem: %v", err)
	}
}

// TestServeDrains starts the server, holds a request open, cancels (as SIGTERM does) and
// checks the request completes and Run returns nil.
func TestServeDrains(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfgPath := writeConfig(t, dsn, "patch-storage:\n  type: filesystem\n  filesystem-path: "+t.TempDir()+"\n")
	if code, _, errOut := runCmd(t, "schema", "upgrade", "--config", cfgPath); code != 0 {
		t.Fatal(errOut)
	}
	enableMachine(t, dsn)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	listening := make(chan net.Addr, 1)
	m := &app.Main{Config: cfg, Listening: listening, Logger: app.NewLogger(io.Discard, "info")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	base := "http://" + addr.String()
	resp, err := http.Get(base + "/debug/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("debug/status: %d %s", resp.StatusCode, body)
	}
	// Put a request in flight: send its headers with Expect: 100-continue and hold the
	// body. The server answers "100 Continue" once the handler reads the body, so the
	// request is known to be in the handler before the server is told to stop.
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /v1/client/m1/updates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mt\r\n"+
		"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("before the body: %q, %v", line, err)
	}
	br.ReadString('\n') // the blank line ending the interim response
	cancel()
	io.WriteString(conn, "{}")
	reply, _ := io.ReadAll(br)
	if !strings.HasPrefix(string(reply), "HTTP/1.1 400") {
		t.Errorf("in-flight request answer: %q", reply)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}
