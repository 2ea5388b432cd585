// Package postgres is the PostgreSQL implementation of server.Store, using lib/pq and
// hand-written SQL. Every public method runs one transaction (CheckIn: one statement, one
// round trip, shared by the check-ins that arrive together) and is the only place where
// driver errors become server.Error codes. The schema is a numbered list of embedded
// migrations, applied by Migrate.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/livepatch-onprem/livepatch/server"
)

// Options tunes the connection pool.
type Options struct {
	// MaxConns caps open connections (config database.connection-pool-max); 0 means 15.
	MaxConns int
	// ConnMaxLifetime closes connections older than this (config
	// database.connection-lifetime-max), so that the pool follows failovers; 0 means never.
	ConnMaxLifetime time.Duration
	// SynchronousCheckIns makes every check-in wait for its WAL flush before it is
	// acknowledged (config machine-reports.synchronous-commit). Off, check-ins commit
	// asynchronously: a PostgreSQL crash (not a clean restart) can lose the last fraction
	// of a second of acknowledged check-ins, which machines report again at their next
	// check, and the database sustains several times the rate. Enrolments, tokens and
	// every admin write are always synchronous.
	SynchronousCheckIns bool
}

// DB is a PostgreSQL store. It is safe for concurrent use.
type DB struct {
	db *sql.DB

	mu           sync.Mutex // guards preparing the check-in statements
	checkIn      *sql.Stmt  // prepared on first use: the schema may not exist at Open
	checkInBatch *sql.Stmt  // likewise

	checkInCommit string       // synchronous_commit for check-ins: "on" or "off"
	queue         checkInQueue // check-ins waiting to be recorded

	// fileLocks bounds the connections LockPatchFile holds at once, so that the holders
	// of file locks always leave connections for the work they do under them.
	fileLocks chan struct{}
}

var _ server.Store = (*DB)(nil)

// Open connects to the database at dsn and checks that it answers. It does not migrate:
// see Migrate and SchemaVersion.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	connector, err := newConnector(dsn)
	if err != nil {
		// The driver's message can quote the connection string, password included.
		return nil, server.Errorf(server.CodeInvalid, "invalid database connection string: want postgres://user:password@host:port/dbname?sslmode=disable or key=value pairs")
	}
	db := sql.OpenDB(connector)
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = 15
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxLifetime(opts.ConnMaxLifetime)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, classify(fmt.Errorf("cannot connect to database: %w", err))
	}
	commit := "off"
	if opts.SynchronousCheckIns {
		commit = "on"
	}
	return &DB{db: db, checkInCommit: commit, fileLocks: make(chan struct{}, max(1, maxConns/4))}, nil
}

// Close closes every connection.
func (db *DB) Close() error {
	db.mu.Lock()
	for _, stmt := range []*sql.Stmt{db.checkIn, db.checkInBatch} {
		if stmt != nil {
			stmt.Close()
		}
	}
	db.mu.Unlock()
	return db.db.Close()
}

// SQL returns the connection pool, for adapters that keep their own tables in this
// database (patchstore.NewPostgres).
func (db *DB) SQL() *sql.DB { return db.db }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.db.PingContext(ctx); err != nil {
		return classify(fmt.Errorf("cannot reach database: %w", err))
	}
	return nil
}

// maxAttempts bounds how often a transaction that lost a serialization or deadlock race is
// run again.
const maxAttempts = 3

// inTx runs fn in a transaction and commits it, running it again when PostgreSQL reports a
// serialization failure or a deadlock. The error it returns is classified.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for range maxAttempts {
		err = db.tryTx(ctx, fn)
		if pq.As(err, pqerror.TRSerializationFailure, pqerror.TRDeadlockDetected) == nil {
			break
		}
	}
	return classify(err)
}

func (db *DB) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("cannot begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("cannot commit transaction: %w", err)
	}
	return nil
}

// errUnavailable is the error callers see when the database cannot be reached.
var errUnavailable = server.Errorf(server.CodeUnavailable, "database unavailable")

// classify returns err, wrapped so that it carries CodeUnavailable when it says the database
// cannot be reached, or CodeInvalid when PostgreSQL refused a value of the request (a data
// exception). *server.Error values pass unchanged. It is the only place that turns driver
// errors into codes.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*server.Error](err); ok {
		return err
	}
	if unreachable(err) {
		return fmt.Errorf("%w: %w", errUnavailable, err)
	}
	if pqErr := pq.As(err); pqErr != nil && pqErr.Code.Class() == "22" {
		// A data exception is a value the caller sent that the column cannot hold: a NUL
		// byte in a string, a time or number out of the column type's range.
		return fmt.Errorf("%w: %w", server.Errorf(server.CodeInvalid, "invalid value: %s", pqErr.Message), err)
	}
	return err
}

// classifyInto classifies *err in place; every exported method of DB defers it, so that
// no driver error leaves the package without its code.
func classifyInto(err *error) { *err = classify(*err) }

// unreachable reports whether err means the database is down, unreachable or refusing
// connections, as opposed to a bug or a bad request.
func unreachable(err error) bool {
	if pqErr := pq.As(err); pqErr != nil {
		switch pqErr.Code.Class() {
		case "08", // connection exception
			"53", // insufficient resources (too many connections, out of memory, disk full)
			"57": // operator intervention (shutdown, cannot connect now)
			return pqErr.Code != pqerror.QueryCanceled
		}
		// A write on a read-only session: the server it is connected to was the primary
		// and is a standby now (a switchover); the next connection finds the new primary.
		return pqErr.Code == pqerror.ReadOnlySQLTransaction
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, sql.ErrConnDone)
}

// isUnique reports whether err is a unique violation of the named constraint.
func isUnique(err error, constraint string) bool {
	pqErr := pq.As(err, pqerror.UniqueViolation)
	return pqErr != nil && pqErr.Constraint == constraint
}

// isForeignKey reports whether err is a foreign key violation of the named constraint.
func isForeignKey(err error, constraint string) bool {
	pqErr := pq.As(err, pqerror.ForeignKeyViolation)
	return pqErr != nil && pqErr.Constraint == constraint
}

// RunExclusive runs fn while this session holds the advisory lock named job, on a
// connection of its own, so that a background job runs on one unit at a time. It does not
// wait: ran is false when another session holds the lock. If the connection breaks while
// fn runs, PostgreSQL releases the lock early; jobs must tolerate an occasional overlap.
func (db *DB) RunExclusive(ctx context.Context, job string, fn func(ctx context.Context) error) (ran bool, err error) {
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return false, classify(fmt.Errorf("cannot get a connection for job %q: %w", job, err))
	}
	defer conn.Close()
	key := lockKey(job)
	var locked bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		return false, classify(fmt.Errorf("cannot lock job %q: %w", job, err))
	}
	if !locked {
		return false, nil
	}
	defer func() {
		if unlockErr := unlock(context.WithoutCancel(ctx), conn, key); unlockErr != nil {
			err = errors.Join(err, fmt.Errorf("cannot unlock job %q: %w", job, unlockErr))
		}
	}()
	return true, fn(ctx)
}

// LockPatchFile runs fn while this session holds the advisory lock of one patch filename,
// waiting for it (until ctx ends): storing a file's bytes and recording them is one act
// per filename on every unit. If the connection breaks while fn runs, PostgreSQL releases
// the lock early; the next upload or storage refresh of that file finds a mismatch.
func (db *DB) LockPatchFile(ctx context.Context, filename string, fn func(ctx context.Context) error) (err error) {
	select {
	case db.fileLocks <- struct{}{}:
	case <-ctx.Done():
		return classify(fmt.Errorf("cannot lock patch file %q: %w", filename, ctx.Err()))
	}
	defer func() { <-db.fileLocks }()
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return classify(fmt.Errorf("cannot get a connection to lock patch file %q: %w", filename, err))
	}
	defer conn.Close()
	key := lockKey("patch-file:" + filename)
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return classify(fmt.Errorf("cannot lock patch file %q: %w", filename, err))
	}
	defer func() {
		if unlockErr := unlock(context.WithoutCancel(ctx), conn, key); unlockErr != nil {
			err = errors.Join(err, fmt.Errorf("cannot unlock patch file %q: %w", filename, unlockErr))
		}
	}()
	return fn(ctx)
}

// unlock releases the session advisory lock key held on conn. When that fails, it
// discards the connection: closing the session releases the lock.
func unlock(ctx context.Context, conn *sql.Conn, key int64) error {
	var released bool
	err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&released)
	if err == nil && !released {
		err = errors.New("lock was not held")
	}
	if err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	return err
}

// lockKey maps a lock name to a PostgreSQL advisory lock key.
func lockKey(name string) int64 {
	h := fnv.New64a()
	io.WriteString(h, "livepatch:"+name)
	return int64(h.Sum64())
}

// utc returns t in UTC; lib/pq returns times in the session's zone.
func utc(t time.Time) time.Time { return t.UTC() }

// nullTime turns the zero time into SQL NULL.
func nullTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t, Valid: !t.IsZero()} }

// timePtr turns an optional time into a pointer in UTC.
func timePtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}
