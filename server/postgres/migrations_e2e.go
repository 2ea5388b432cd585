//go:build e2emigration

package postgres

import "fmt"

// The e2emigration build tag adds one additive migration after the embedded ones, so the
// end-to-end tests (tests/e2e) can build a newer charm revision whose server needs a
// schema upgrade, as a real release with a new migration does.
func init() {
	v := len(migrations) + 1
	migrations = append(migrations, migration{
		version: v,
		name:    fmt.Sprintf("%04d_e2e_upgrade_marker.sql", v),
		sql: `CREATE TABLE e2e_upgrade_markers (
	id   integer CONSTRAINT e2e_upgrade_markers_pkey PRIMARY KEY,
	note text NOT NULL DEFAULT ''
);`,
	})
}
