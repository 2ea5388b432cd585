package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// Tiers returns every tier in promotion order.
func (db *DB) Tiers(ctx context.Context) (_ []server.Tier, err error) {
	defer classifyInto(&err)
	var tiers []server.Tier
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		tiers, err = listTiers(ctx, tx)
		return err
	})
	return tiers, err
}

// AddTier inserts a tier after at.After, first, or last; the tiers after it move down.
func (db *DB) AddTier(ctx context.Context, name string, at server.TierPlacement) (_ server.Tier, err error) {
	defer classifyInto(&err)
	if err := server.CheckTierName(name); err != nil {
		return server.Tier{}, err
	}
	var tier server.Tier
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if err := lockTiers(ctx, tx); err != nil {
			return err
		}
		if _, err := findTier(ctx, tx, name); err == nil {
			return server.Errorf(server.CodeConflict, "tier %q already exists", name)
		} else if server.ErrorCode(err) != server.CodeNotFound {
			return err
		}
		var pos int
		switch {
		case at.First && at.After != "":
			return server.Errorf(server.CodeInvalid, "cannot place tier %q both first and after %q", name, at.After)
		case at.First:
			pos = 1
		case at.After != "":
			after, err := findTier(ctx, tx, at.After)
			if err != nil {
				return err
			}
			pos = after.position + 1
		default:
			if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(position), 0) + 1 FROM tiers`).Scan(&pos); err != nil {
				return fmt.Errorf("cannot find last tier: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tiers SET position = position + 1 WHERE position >= $1`, pos); err != nil {
			return fmt.Errorf("cannot make room for tier %q: %w", name, err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tiers (name, position) VALUES ($1, $2)`, name, pos)
		if isUnique(err, "tiers_name_key") {
			return server.Errorf(server.CodeConflict, "tier %q already exists", name)
		}
		if err != nil {
			return fmt.Errorf("cannot insert tier %q: %w", name, err)
		}
		tier = server.Tier{Name: name, Position: pos}
		return nil
	})
	return tier, err
}

// DeleteTier removes an unused tier, moving its patches to the previous tier.
func (db *DB) DeleteTier(ctx context.Context, name string) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if err := lockTiers(ctx, tx); err != nil {
			return err
		}
		// Locking the row first makes anything that starts to use the tier meanwhile
		// (a foreign key check locks the row too) either wait and fail, or finish first and
		// be counted below.
		t, err := findTier(ctx, tx, name, "FOR UPDATE")
		if err != nil {
			return err
		}
		var tiers, patches int
		err = tx.QueryRowContext(ctx, `
			SELECT (SELECT count(*) FROM tiers), (SELECT count(*) FROM patches WHERE tier_id = $1)`, t.id).
			Scan(&tiers, &patches)
		if err != nil {
			return fmt.Errorf("cannot check use of tier %q: %w", name, err)
		}
		if tiers == 1 {
			return server.Errorf(server.CodeConflict, "cannot delete tier %q: it is the only tier", name)
		}
		users, err := tierUsers(ctx, tx, t)
		if err != nil {
			return err
		}
		if users != "" {
			return server.Errorf(server.CodeConflict, "cannot delete tier %q: it is used by %s", name, users)
		}
		if t.position == 1 && patches > 0 {
			return server.Errorf(server.CodeConflict, "cannot delete tier %q: it is the first tier and holds %d patches", name, patches)
		}
		if patches > 0 {
			if _, err := tx.ExecContext(ctx, `
				UPDATE patches SET tier_id = (SELECT id FROM tiers WHERE position = $2)
				WHERE tier_id = $1`, t.id, t.position-1); err != nil {
				return fmt.Errorf("cannot move patches of tier %q: %w", name, err)
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM tiers WHERE id = $1`, t.id)
		if isForeignKey(err, "machines_tier_id_fkey") || isForeignKey(err, "patches_tier_id_fkey") {
			return server.Errorf(server.CodeConflict, "cannot delete tier %q: it is in use", name)
		}
		if err != nil {
			return fmt.Errorf("cannot delete tier %q: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tiers SET position = position - 1 WHERE position > $1`, t.position); err != nil {
			return fmt.Errorf("cannot close the gap of tier %q: %w", name, err)
		}
		return nil
	})
}

// tierUsers says what keeps a tier from being deleted: its machines, unrevoked auth tokens
// and unrevoked sync tokens, as "2 machines, 1 auth token"; "" when nothing does. Lock the
// tier's row first (FOR UPDATE) so that nothing starts to use it before it is deleted.
func tierUsers(ctx context.Context, tx *sql.Tx, t tierRow) (string, error) {
	var machines, authTokens, syncTokens int
	err := tx.QueryRowContext(ctx, `
		SELECT
			(SELECT count(*) FROM machines WHERE tier_id = $1),
			(SELECT count(*) FROM auth_tokens WHERE tier_id = $1 AND revoked_at IS NULL),
			(SELECT count(*) FROM sync_tokens WHERE tier_id = $1 AND revoked_at IS NULL)`, t.id).
		Scan(&machines, &authTokens, &syncTokens)
	if err != nil {
		return "", fmt.Errorf("cannot check use of tier %q: %w", t.name, err)
	}
	var users []string
	for _, u := range []struct {
		n    int
		what string
	}{{machines, "machine"}, {authTokens, "auth token"}, {syncTokens, "sync token"}} {
		if u.n == 1 {
			users = append(users, "1 "+u.what)
		} else if u.n > 1 {
			users = append(users, fmt.Sprintf("%d %ss", u.n, u.what))
		}
	}
	return strings.Join(users, ", "), nil
}

// tierRow is a tier with its key.
type tierRow struct {
	id       int64
	name     string
	position int
}

// lockTiers serialises changes to the tier order; readers are not blocked.
func lockTiers(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `LOCK TABLE tiers IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("cannot lock tiers: %w", err)
	}
	return nil
}

func listTiers(ctx context.Context, tx *sql.Tx) ([]server.Tier, error) {
	rows, err := listTierRows(ctx, tx)
	if err != nil {
		return nil, err
	}
	var tiers []server.Tier
	for _, t := range rows {
		tiers = append(tiers, server.Tier{Name: t.name, Position: t.position})
	}
	return tiers, nil
}

// listTierRows returns every tier with its key, in promotion order.
func listTierRows(ctx context.Context, tx *sql.Tx) ([]tierRow, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, name, position FROM tiers ORDER BY position`)
	if err != nil {
		return nil, fmt.Errorf("cannot list tiers: %w", err)
	}
	defer rows.Close()
	var tiers []tierRow
	for rows.Next() {
		var t tierRow
		if err := rows.Scan(&t.id, &t.name, &t.position); err != nil {
			return nil, fmt.Errorf("cannot list tiers: %w", err)
		}
		tiers = append(tiers, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list tiers: %w", err)
	}
	return tiers, nil
}

// findTier returns the named tier; not-found when there is none. lock is empty or a
// locking clause such as "FOR UPDATE".
func findTier(ctx context.Context, tx *sql.Tx, name string, lock ...string) (tierRow, error) {
	t := tierRow{name: name}
	err := tx.QueryRowContext(ctx, `SELECT id, position FROM tiers WHERE name = $1 `+strings.Join(lock, " "), name).Scan(&t.id, &t.position)
	if errors.Is(err, sql.ErrNoRows) {
		return tierRow{}, server.Errorf(server.CodeNotFound, "tier %q not found", name)
	}
	if err != nil {
		return tierRow{}, fmt.Errorf("cannot find tier %q: %w", name, err)
	}
	return t, nil
}

// firstTier returns the tier at position 1.
func firstTier(ctx context.Context, tx *sql.Tx) (tierRow, error) {
	var t tierRow
	err := tx.QueryRowContext(ctx, `SELECT id, name, position FROM tiers ORDER BY position LIMIT 1`).Scan(&t.id, &t.name, &t.position)
	if errors.Is(err, sql.ErrNoRows) {
		return tierRow{}, server.Errorf(server.CodeNotFound, "there are no tiers")
	}
	if err != nil {
		return tierRow{}, fmt.Errorf("cannot find first tier: %w", err)
	}
	return t, nil
}
