package httpapi_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// slowRequest opens a connection, sends the headers of a request whose body is length
// bytes and returns the connection's reader. With admitted, it waits for the server's
// "100 Continue" (sent when the body is first read, after admission) and sends the first
// byte of the body only; without, it sends no body.
func slowRequest(t *testing.T, e *env, method, path, auth string, length int, admitted bool) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n", method, path, length)
	if auth != "" {
		fmt.Fprintf(conn, "Authorization: %s\r\n", auth)
	}
	io.WriteString(conn, "\r\n")
	br := bufio.NewReader(conn)
	if admitted {
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("%s %s: %q, %v; want 100 Continue", method, path, line, err)
		}
		br.ReadString('\n')
		io.WriteString(conn, "{")
	}
	return conn, br
}

// answer reads the status of the answer on a connection, waiting at most a minute (a
// bound for a broken server, not a timing assertion).
func answer(t *testing.T, conn net.Conn, br *bufio.Reader) int {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSlowBodiesDoNotHoldTheAPI holds more slow request bodies open than the API has
// slots, from callers with and without valid credentials: calls that need a slot still
// get one, callers with bad credentials are refused before their body is read, and every
// slow body is cut off at the request timeout.
func TestSlowBodiesDoNotHoldTheAPI(t *testing.T) {
	e := newEnv(t, func(o *httpapi.Options) {
		o.ConcurrencyLimit, o.BurstLimit = 2, 0
		o.RequestTimeout = 5 * time.Second // room for bcrypt under the race detector
	})
	tok := e.authToken("lab", "edge", 0)
	machineTok := e.enable("m1", tok)
	session := "Bearer " + e.login()

	// Refused before the body, which is never sent.
	for _, tt := range []struct{ path, auth string }{
		{"/v1/client/m1/updates", "Bearer wrong-token"},
		{"/v1/client/m1/updates", ""},
		{"/v1/admin/tiers", "Bearer wrong-session"},
		{"/v1/admin/tiers", ""},
	} {
		conn, br := slowRequest(t, e, "POST", tt.path, tt.auth, 1000, false)
		if got := answer(t, conn, br); got != 401 {
			t.Errorf("POST %s with %q and a held body: %d, want 401 before the body", tt.path, tt.auth, got)
		}
	}

	// Verified callers that hold their bodies hold no slot.
	var held []func() int
	for range 4 {
		for _, tt := range []struct{ path, auth string }{
			{"/v1/client/m1/updates", "Bearer " + machineTok},
			{"/v1/admin/tiers", session},
		} {
			conn, br := slowRequest(t, e, "POST", tt.path, tt.auth, 1000, true)
			held = append(held, func() int { return answer(t, conn, br) })
		}
	}
	e.must(200, "GET", "/v1/admin/tiers", "session", nil, nil)
	e.must(200, "POST", "/v1/client/m1/updates", "Bearer "+machineTok, status("5.15.0-107-generic"), nil)

	// The request timeout ends every held body.
	for _, wait := range held {
		if got := wait(); got != 400 {
			t.Errorf("held body at the request timeout: %d, want 400", got)
		}
	}
}
