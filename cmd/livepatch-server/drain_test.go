package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/app"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/postgres"
)

// TestServeStopsDespiteTricklingClient stops the server while a client trickles a request
// body: after shutdown-timeout its connection is closed and Run returns nil (the exit
// status 0 of a clean stop), instead of waiting for the client.
func TestServeStopsDespiteTricklingClient(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfgPath := writeConfig(t, dsn, "patch-storage:\n  type: filesystem\n  filesystem-path: "+t.TempDir()+"\n")
	if code, _, errOut := runCmd(t, "schema", "upgrade", "--config", cfgPath); code != 0 {
		t.Fatal(errOut)
	}
	enableMachine(t, dsn)
	ctx := context.Background()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.RequestTimeout = config.Duration(time.Hour) // only the drain may end the request
	cfg.Server.ShutdownTimeout = config.Duration(50 * time.Millisecond)
	listening := make(chan net.Addr, 1)
	m := &app.Main{Config: cfg, Listening: listening, Logger: app.NewLogger(io.Discard, "info")}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /v1/client/m1/updates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mt\r\n"+
		"Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("before the body: %q, %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(conn, "{") // one byte of the body, and no more
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run with a trickling client: %v; want nil", err)
	}
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("the trickling client's connection: %v; want it closed by the server", err)
	}
}

// enableMachine enrols machine m1 with machine token "mt" in the database at dsn.
func enableMachine(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateAuthToken(ctx, server.NewAuthToken{ID: "t", Tier: "edge", Hash: server.HashToken("tok")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("tok"), MachineID: "m1", MachineTokenHash: server.HashToken("mt")}, time.Now()); err != nil {
		t.Fatal(err)
	}
}
