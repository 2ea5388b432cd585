package postgres

import (
	"context"
	"database/sql/driver"
	"net"
	"sync"
	"time"

	"github.com/lib/pq"
)

// connector opens connections with lib/pq, closing the sockets lib/pq leaves open on the
// way. With sslmode=prefer (the default, and what the charm renders when PostgreSQL does
// not say it takes TLS) lib/pq first asks the server for TLS and, when it is refused,
// dials again in plain text without closing the first socket; allow does the same the
// other way round. PostgreSQL keeps the backend of each such socket waiting for a startup
// packet until authentication_timeout (60s by default), and a fast shutdown waits for
// them: a server that connects often held PostgreSQL's restarts back by a minute. Of the
// sockets one Connect dialed, the last is the connection; the others are closed.
type connector struct {
	cfg pq.Config
}

func newConnector(dsn string) (*connector, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, err
	}
	return &connector{cfg: cfg}, nil
}

// Connect opens one connection.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	return c.connect(ctx, &dialer{})
}

// connect opens one connection with d, which records the sockets dialed.
func (c *connector) connect(ctx context.Context, d *dialer) (driver.Conn, error) {
	pc, err := pq.NewConnectorConfig(c.cfg)
	if err != nil {
		return nil, err
	}
	pc.Dialer(d)
	conn, err := pc.Connect(ctx)
	d.closeStray(err == nil)
	return conn, err
}

// Driver returns lib/pq's driver.
func (c *connector) Driver() driver.Driver { return &pq.Driver{} }

// dialer dials TCP and unix sockets as lib/pq's own dialer does, and records them.
type dialer struct {
	d net.Dialer

	mu    sync.Mutex
	conns []net.Conn
}

func (d *dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := d.d.DialContext(ctx, network, address)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, conn)
		d.mu.Unlock()
	}
	return conn, err
}

// closeStray closes the sockets dialed but the last one when connected (it is the
// connection), all of them when not. Closing a socket lib/pq closed already does nothing.
func (d *dialer) closeStray(connected bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keep := 0
	if connected {
		keep = 1
	}
	for _, c := range d.conns[:max(0, len(d.conns)-keep)] {
		c.Close()
	}
}
