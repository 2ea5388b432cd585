package deploy

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// ServerConfig returns the server configuration the charm rendered on a livepatch unit.
func (d *Deployment) ServerConfig(t testing.TB, unit string) config.Config {
	t.Helper()
	root, err := d.Model.UnitRoot(unit)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(root, livepatch.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// OpenDatabase connects to the deployment's database as the livepatch units do, with the
// connection string of the first unit's rendered server configuration. It is closed when
// the test ends.
func (d *Deployment) OpenDatabase(t testing.TB) *sql.DB {
	t.Helper()
	cfg := d.ServerConfig(t, d.Units("livepatch")[0])
	db, err := sql.Open("postgres", cfg.Database.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
