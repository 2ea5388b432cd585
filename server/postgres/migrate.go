package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
)

// migrationFiles holds the schema migrations, named NNNN_description.sql and numbered
// 1, 2, 3, ... without gaps. Each is applied in its own transaction.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists every migration in order.
var migrations = mustLoadMigrations(migrationFiles)

func mustLoadMigrations(fsys fs.FS) []migration {
	ms, err := loadMigrations(fsys)
	if err != nil {
		panic(err)
	}
	return ms
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for i, name := range names { // fs.Glob sorts
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 {
			return nil, fmt.Errorf("invalid migration file name %q: want NNNN_description.sql", base)
		}
		if version != i+1 {
			return nil, fmt.Errorf("migration %q has number %d, want %d (no gaps or duplicates)", base, version, i+1)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: version, name: base, sql: string(data)})
	}
	return ms, nil
}

// LatestVersion returns the number of the newest migration this binary knows.
func LatestVersion() int { return len(migrations) }

// migrateLock names the advisory lock that serialises migrations across units.
const migrateLock = "schema-migrate"

// Migrate applies the pending migrations in order, each in its own transaction and all
// under an advisory lock, so that several units starting at once are safe. It returns the
// schema version before and after. A database newer than this binary is left alone.
func (db *DB) Migrate(ctx context.Context) (from, to int, err error) {
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return 0, 0, classify(fmt.Errorf("cannot get a connection to migrate: %w", err))
	}
	defer conn.Close()
	key := lockKey(migrateLock)
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return 0, 0, classify(fmt.Errorf("cannot lock schema for migration: %w", err))
	}
	defer func() {
		if unlockErr := unlock(context.WithoutCancel(ctx), conn, key); unlockErr != nil && err == nil {
			err = fmt.Errorf("cannot unlock schema after migration: %w", unlockErr)
		}
	}()
	if _, err := conn.ExecContext(ctx, `
		CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer NOT NULL CONSTRAINT schema_migrations_pkey PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
		return 0, 0, classify(fmt.Errorf("cannot create schema_migrations: %w", err))
	}
	if err := conn.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&from); err != nil {
		return 0, 0, classify(fmt.Errorf("cannot read schema version: %w", err))
	}
	to = from
	for _, m := range migrations[min(from, len(migrations)):] {
		if err := applyMigration(ctx, conn, m); err != nil {
			return from, to, classify(err)
		}
		to = m.version
	}
	return from, to, nil
}

func applyMigration(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("cannot begin migration %s: %w", m.name, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("cannot apply migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
		return fmt.Errorf("cannot record migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("cannot commit migration %s: %w", m.name, err)
	}
	return nil
}

// SchemaVersion returns the newest applied migration and the newest this binary knows.
// current is 0 for an empty database (no schema_migrations table); current > latest means
// the schema is newer than the binary, which migrations keep compatible.
func (db *DB) SchemaVersion(ctx context.Context) (current, latest int, err error) {
	err = db.db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current)
	if pq.As(err, pqerror.UndefinedTable) != nil {
		return 0, LatestVersion(), nil
	}
	if err != nil {
		return 0, 0, classify(fmt.Errorf("cannot read schema version: %w", err))
	}
	return current, LatestVersion(), nil
}
