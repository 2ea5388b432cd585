package postgres

import (
	"database/sql/driver"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

// TestConnectorClosesStraySockets connects with sslmode=prefer: against a server without
// TLS lib/pq dials twice and leaves the first socket open; the connector closes it and
// keeps the connection's.
func TestConnectorClosesStraySockets(t *testing.T) {
	dsn := strings.Replace(pgtest.DSN(t), "sslmode=disable", "sslmode=prefer", 1)
	if !strings.Contains(dsn, "sslmode=prefer") {
		t.Fatalf("cannot make a sslmode=prefer connection string of the test database's")
	}
	c, err := newConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	d := &dialer{}
	conn, err := c.connect(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var ssl string
	rows, err := conn.(driver.QueryerContext).QueryContext(t.Context(), "SHOW ssl", nil)
	if err != nil {
		t.Fatal(err)
	}
	vals := []driver.Value{nil}
	if err := rows.Next(vals); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	ssl, _ = vals[0].(string)
	want := 1
	if ssl == "off" {
		want = 2 // TLS asked for and refused, then plain text
	}
	if len(d.conns) != want {
		t.Fatalf("dialed %d sockets with ssl %s, want %d", len(d.conns), ssl, want)
	}
	for i, s := range d.conns {
		err := s.SetDeadline(time.Time{})
		switch last := i == len(d.conns)-1; {
		case last && err != nil:
			t.Errorf("the connection's socket: %v", err)
		case !last && !errors.Is(err, net.ErrClosed):
			t.Errorf("stray socket %d is open (%v)", i, err)
		}
	}
}
