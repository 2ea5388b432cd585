package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// CreateAuthToken records a new auth token for a tier.
func (db *DB) CreateAuthToken(ctx context.Context, t server.NewAuthToken) (_ server.AuthToken, err error) {
	defer classifyInto(&err)
	if err := server.CheckLabel("auth token id", t.ID); err != nil {
		return server.AuthToken{}, err
	}
	if t.MaxMachines < 0 {
		return server.AuthToken{}, server.Errorf(server.CodeInvalid, "invalid machine limit %d: want 0 (unlimited) or more", t.MaxMachines)
	}
	token := server.AuthToken{ID: t.ID, Tier: t.Tier, MaxMachines: t.MaxMachines}
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		tier, err := findTier(ctx, tx, t.Tier)
		if err != nil {
			return err
		}
		var expires sql.NullTime
		if t.ExpiresAt != nil {
			expires = sql.NullTime{Time: *t.ExpiresAt, Valid: true}
		}
		err = tx.QueryRowContext(ctx, `
			INSERT INTO auth_tokens (label, tier_id, token_hash, expires_at, max_machines)
			VALUES ($1, $2, $3, $4, $5)
			RETURNING created_at, expires_at`, t.ID, tier.id, t.Hash, expires, t.MaxMachines).
			Scan(&token.CreatedAt, &expires)
		switch {
		case isUnique(err, "auth_tokens_label_key"):
			return server.Errorf(server.CodeConflict, "auth token %q already exists", t.ID)
		case isUnique(err, "auth_tokens_token_hash_key"):
			return server.Errorf(server.CodeConflict, "auth token %q: the token value is already in use", t.ID)
		case isForeignKey(err, "auth_tokens_tier_id_fkey"):
			return server.Errorf(server.CodeNotFound, "tier %q not found", t.Tier)
		case err != nil:
			return fmt.Errorf("cannot insert auth token %q: %w", t.ID, err)
		}
		token.CreatedAt = utc(token.CreatedAt)
		token.ExpiresAt = timePtr(expires)
		return nil
	})
	if err != nil {
		return server.AuthToken{}, err
	}
	return token, nil
}

// AuthTokens lists every auth token, revoked ones included, with how many machines each
// enrolled.
func (db *DB) AuthTokens(ctx context.Context) (_ []server.AuthToken, err error) {
	defer classifyInto(&err)
	var tokens []server.AuthToken
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT a.label, coalesce(t.name, ''), a.created_at, a.expires_at, a.max_machines,
				a.revoked_at IS NOT NULL,
				(SELECT count(*) FROM machines m WHERE m.auth_token_id = a.id)
			FROM auth_tokens a LEFT JOIN tiers t ON t.id = a.tier_id
			ORDER BY a.label, a.created_at, a.id`)
		if err != nil {
			return fmt.Errorf("cannot list auth tokens: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var a server.AuthToken
			var expires sql.NullTime
			if err := rows.Scan(&a.ID, &a.Tier, &a.CreatedAt, &expires, &a.MaxMachines, &a.Revoked, &a.Machines); err != nil {
				return fmt.Errorf("cannot list auth tokens: %w", err)
			}
			a.CreatedAt = utc(a.CreatedAt)
			a.ExpiresAt = timePtr(expires)
			tokens = append(tokens, a)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list auth tokens: %w", err)
		}
		return nil
	})
	return tokens, err
}

// RevokeAuthToken revokes the unrevoked auth token with id. Machines it enrolled stay
// enrolled; no new machine can enable with it.
func (db *DB) RevokeAuthToken(ctx context.Context, id string) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `UPDATE auth_tokens SET revoked_at = now() WHERE label = $1 AND revoked_at IS NULL`, id)
		if err != nil {
			return fmt.Errorf("cannot revoke auth token %q: %w", id, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeNotFound, "auth token %q not found", id)
		}
		return nil
	})
}

// CreateSession records an admin session by the hash of its token, and forgets expired
// sessions.
func (db *DB) CreateSession(ctx context.Context, s server.Session, hash []byte) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < now()`); err != nil {
			return fmt.Errorf("cannot delete expired sessions: %w", err)
		}
		_, err := tx.ExecContext(ctx, `
			INSERT INTO sessions (token_hash, id, user_name, credential_hash, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, hash, s.ID, s.User, s.Credential, s.ExpiresAt)
		if isUnique(err, "sessions_pkey") || isUnique(err, "sessions_id_key") {
			return server.Errorf(server.CodeConflict, "session already exists")
		}
		if err != nil {
			return fmt.Errorf("cannot insert session of %q: %w", s.User, err)
		}
		return nil
	})
}

// sessionColumns are the columns scanSession reads.
const sessionColumns = `coalesce(id, ''), user_name, created_at, expires_at, credential_hash`

func scanSession(row interface{ Scan(...any) error }) (server.Session, error) {
	var s server.Session
	if err := row.Scan(&s.ID, &s.User, &s.CreatedAt, &s.ExpiresAt, &s.Credential); err != nil {
		return server.Session{}, err
	}
	s.CreatedAt, s.ExpiresAt = utc(s.CreatedAt), utc(s.ExpiresAt)
	return s, nil
}

// Session returns the session with that token hash if it has not expired at now;
// unauthorized otherwise.
func (db *DB) Session(ctx context.Context, hash []byte, now time.Time) (_ server.Session, err error) {
	defer classifyInto(&err)
	var s server.Session
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		s, err = scanSession(tx.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE token_hash = $1 AND expires_at > $2`, hash, now))
		if errors.Is(err, sql.ErrNoRows) {
			return server.Errorf(server.CodeUnauthorized, "invalid or expired session")
		}
		if err != nil {
			return fmt.Errorf("cannot read session: %w", err)
		}
		return nil
	})
	return s, err
}

// DeleteSession ends a session; ending an unknown session is not an error.
func (db *DB) DeleteSession(ctx context.Context, hash []byte) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = $1`, hash); err != nil {
			return fmt.Errorf("cannot delete session: %w", err)
		}
		return nil
	})
}

// Sessions lists the unexpired sessions that have an id, oldest first.
func (db *DB) Sessions(ctx context.Context, now time.Time) ([]server.Session, error) {
	var out []server.Session
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			SELECT `+sessionColumns+` FROM sessions
			WHERE expires_at > $1 AND id IS NOT NULL
			ORDER BY created_at, id`, now)
		if err != nil {
			return fmt.Errorf("cannot list sessions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			s, err := scanSession(rows)
			if err != nil {
				return fmt.Errorf("cannot list sessions: %w", err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot list sessions: %w", err)
		}
		return nil
	})
	return out, err
}

// RevokeSession ends the session with id; not-found when there is none.
func (db *DB) RevokeSession(ctx context.Context, id string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `DELETE FROM sessions WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("cannot revoke session %q: %w", id, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeNotFound, "session %q not found", id)
		}
		return nil
	})
}

// RevokeUserSessions ends every session of user, those made before sessions had ids
// included, and returns how many it ended.
func (db *DB) RevokeUserSessions(ctx context.Context, user string) (int, error) {
	var n int
	err := db.inTx(ctx, func(tx *sql.Tx) (err error) {
		n, err = execCount(ctx, tx, `DELETE FROM sessions WHERE user_name = $1`, user)
		if err != nil {
			return fmt.Errorf("cannot revoke the sessions of %q: %w", user, err)
		}
		return nil
	})
	return n, err
}
