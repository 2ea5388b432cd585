package deploy

import (
	"context"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
)

// Postgres is a PostgreSQL cluster for an upstream server outside a test (tests/demo): an
// internal/pgtest Cluster in a directory of the caller's. pg_ctl runs the server in the
// background, so the cluster outlives the process that started it until Stop or
// StopPostgres. Tests get their upstream's database from pgtest.DSN instead.
type Postgres struct {
	*pgtest.Cluster
}

// StartPostgres initialises a cluster in dir (created; it must be reachable by the
// postgres user when we are root) and starts it.
func StartPostgres(dir string) (*Postgres, error) {
	c, err := pgtest.Start(context.Background(), pgtest.Options{Dir: dir})
	if err != nil {
		return nil, err
	}
	return &Postgres{c}, nil
}

// CreateDatabase creates an empty database and returns its DSN.
func (p *Postgres) CreateDatabase(name string) (string, error) {
	return p.Cluster.CreateDatabase(context.Background(), name)
}

// StopPostgres stops a cluster StartPostgres started in dir, from any process. It is not
// an error when none runs.
func StopPostgres(dir string) error {
	return pgtest.StopDir(dir)
}
