package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/server"
)

// MirrorTiers makes the tiers and the patches' tiers follow an upstream's
// (patch-sync.sync-tiers), in one transaction; see server.Store.
func (db *DB) MirrorTiers(ctx context.Context, m server.TierMirror) (_ server.TierMirrorResult, err error) {
	defer classifyInto(&err)
	if len(m.Tiers) == 0 {
		return server.TierMirrorResult{}, server.Errorf(server.CodeInvalid, "cannot mirror an empty list of tiers")
	}
	wanted := make(map[string]bool, len(m.Tiers))
	for _, name := range m.Tiers {
		if err := server.CheckTierName(name); err != nil {
			return server.TierMirrorResult{}, err
		}
		if wanted[name] {
			return server.TierMirrorResult{}, server.Errorf(server.CodeInvalid, "cannot mirror tier %q twice", name)
		}
		wanted[name] = true
	}
	var res server.TierMirrorResult
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		res = server.TierMirrorResult{}
		if err := lockTiers(ctx, tx); err != nil {
			return err
		}
		local, err := listTierRows(ctx, tx)
		if err != nil {
			return err
		}
		gone, err := unusedTiers(ctx, tx, local, wanted, &res)
		if err != nil {
			return err
		}
		order := mirrorOrder(local, m.Tiers, wanted, gone)
		ids, err := placeTiers(ctx, tx, local, order, &res)
		if err != nil {
			return err
		}
		moveTo := replacementTiers(local, gone, ids[order[0]])
		if err := mirrorPatches(ctx, tx, m, ids, moveTo, &res); err != nil {
			return err
		}
		return deleteTiers(ctx, tx, local, gone, moveTo, &res)
	})
	if err != nil {
		return server.TierMirrorResult{}, err
	}
	return res, nil
}

// unusedTiers returns the local tiers that are not wanted and that nothing uses, locked
// for deletion; the ones in use go to res.Kept.
func unusedTiers(ctx context.Context, tx *sql.Tx, local []tierRow, wanted map[string]bool, res *server.TierMirrorResult) (map[int64]bool, error) {
	var ids []int64
	for _, t := range local {
		if !wanted[t.name] {
			ids = append(ids, t.id)
		}
	}
	gone := map[int64]bool{}
	if len(ids) == 0 {
		return gone, nil
	}
	// As in DeleteTier: what starts to use a tier meanwhile waits for this transaction.
	if _, err := tx.ExecContext(ctx, `SELECT id FROM tiers WHERE id = ANY($1) ORDER BY id FOR UPDATE`, pq.Array(ids)); err != nil {
		return nil, fmt.Errorf("cannot lock tiers: %w", err)
	}
	for _, t := range local {
		if wanted[t.name] {
			continue
		}
		users, err := tierUsers(ctx, tx, t)
		if err != nil {
			return nil, err
		}
		if users != "" {
			res.Kept = append(res.Kept, server.KeptTier{Name: t.name, UsedBy: users})
			continue
		}
		gone[t.id] = true
	}
	return gone, nil
}

// mirrorOrder is the order of the tiers after mirroring: the upstream's, each local tier
// that is kept (not wanted but in use) placed right after the wanted tier it followed
// locally, or first when it followed none.
func mirrorOrder(local []tierRow, upstream []string, wanted map[string]bool, gone map[int64]bool) []string {
	after := map[string][]string{} // kept tiers by the wanted tier before them ("": none)
	prev := ""
	for _, t := range local {
		switch {
		case wanted[t.name]:
			prev = t.name
		case !gone[t.id]:
			after[prev] = append(after[prev], t.name)
		}
	}
	order := slices.Clone(after[""])
	for _, name := range upstream {
		order = append(order, name)
		order = append(order, after[name]...)
	}
	return order
}

// placeTiers creates the tiers of order that do not exist and gives every tier of order
// its position there. The tiers to delete keep theirs until they are deleted: positions
// are checked for uniqueness at commit. It returns the key of every tier of order.
func placeTiers(ctx context.Context, tx *sql.Tx, local []tierRow, order []string, res *server.TierMirrorResult) (map[string]int64, error) {
	byName := make(map[string]tierRow, len(local))
	for _, t := range local {
		byName[t.name] = t
	}
	ids := make(map[string]int64, len(order))
	var moveIDs []int64
	var movePositions []int64
	for i, name := range order {
		pos := i + 1
		t, ok := byName[name]
		if !ok {
			var id int64
			if err := tx.QueryRowContext(ctx, `INSERT INTO tiers (name, position) VALUES ($1, $2) RETURNING id`, name, pos).Scan(&id); err != nil {
				return nil, fmt.Errorf("cannot insert tier %q: %w", name, err)
			}
			ids[name] = id
			res.Created = append(res.Created, name)
			continue
		}
		ids[name] = t.id
		if t.position != pos {
			moveIDs, movePositions = append(moveIDs, t.id), append(movePositions, int64(pos))
		}
	}
	if len(moveIDs) > 0 {
		_, err := tx.ExecContext(ctx, `
			UPDATE tiers t SET position = u.position
			FROM unnest($1::bigint[], $2::bigint[]) AS u(id, position)
			WHERE t.id = u.id`, pq.Array(moveIDs), pq.Array(movePositions))
		if err != nil {
			return nil, fmt.Errorf("cannot reorder tiers: %w", err)
		}
	}
	// Reordered: the tiers that stay are not in the order they were.
	var before, now []string
	for _, t := range local {
		if _, ok := ids[t.name]; ok {
			before = append(before, t.name)
		}
	}
	for _, name := range order {
		if _, ok := byName[name]; ok {
			now = append(now, name)
		}
	}
	res.Reordered = !slices.Equal(before, now)
	return ids, nil
}

// replacementTiers maps each tier to delete to the tier its remaining patches move to:
// the tier before it that stays, as DeleteTier does, or the first tier when none does.
func replacementTiers(local []tierRow, gone map[int64]bool, first int64) map[int64]int64 {
	moveTo := map[int64]int64{}
	prev := first
	for _, t := range local {
		if gone[t.id] {
			moveTo[t.id] = prev
		} else {
			prev = t.id
		}
	}
	return moveTo
}

// mirroredPatch is the state of a patch that mirroring may change.
type mirroredPatch struct {
	tierID          int64
	blocked         bool
	blockReason     string
	upstreamBlocked bool
}

// mirrorPatches moves the listed patches to their listed tier, blocks the synced patches
// the list lacks, lifts the blocks sync set on patches listed again, and moves the other
// patches of the tiers to delete. A patch an administrator changed meanwhile is left for
// the next run.
func mirrorPatches(ctx context.Context, tx *sql.Tx, m server.TierMirror, ids map[string]int64, moveTo map[int64]int64, res *server.TierMirrorResult) error {
	listed := make(map[string]server.SyncPatch, len(m.Patches))
	for _, p := range m.Patches {
		listed[p.Filename] = p
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT filename, sha256, source, tier_id, blocked, block_reason, upstream_blocked
		FROM patches ORDER BY filename`)
	if err != nil {
		return fmt.Errorf("cannot list patches: %w", err)
	}
	defer rows.Close()
	var (
		filenames                 []string
		oldTiers, newTiers        []int64
		oldBlocked, newBlocked    []bool
		oldUpstream, newUpstream  []bool
		newReasons                []string
		moved, blocked, unblocked = map[string]bool{}, map[string]bool{}, map[string]bool{}
	)
	for rows.Next() {
		var filename, sha256, source string
		var cur mirroredPatch
		if err := rows.Scan(&filename, &sha256, &source, &cur.tierID, &cur.blocked, &cur.blockReason, &cur.upstreamBlocked); err != nil {
			return fmt.Errorf("cannot list patches: %w", err)
		}
		next := cur
		if p, ok := listed[filename]; !ok {
			if source == server.SourceSync && !cur.blocked {
				next.blocked, next.blockReason, next.upstreamBlocked = true, m.BlockReason, true
				blocked[filename] = true
			}
		} else if p.SHA256 == sha256 {
			id, ok := ids[p.Tier]
			if !ok {
				return server.Errorf(server.CodeInvalid, "cannot mirror patch %s in tier %q: it is not one of the tiers to mirror", filename, p.Tier)
			}
			next.tierID = id
			if cur.blocked && cur.upstreamBlocked {
				next.blocked, next.blockReason, next.upstreamBlocked = false, "", false
				unblocked[filename] = true
			}
		}
		if next.upstreamBlocked && !next.blocked {
			next.upstreamBlocked = false // an administrator unblocked it on an older server
		}
		if to, ok := moveTo[next.tierID]; ok {
			next.tierID = to
		}
		if next == cur {
			continue
		}
		if next.tierID != cur.tierID {
			moved[filename] = true
		}
		filenames = append(filenames, filename)
		oldTiers, newTiers = append(oldTiers, cur.tierID), append(newTiers, next.tierID)
		oldBlocked, newBlocked = append(oldBlocked, cur.blocked), append(newBlocked, next.blocked)
		oldUpstream, newUpstream = append(oldUpstream, cur.upstreamBlocked), append(newUpstream, next.upstreamBlocked)
		newReasons = append(newReasons, next.blockReason)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot list patches: %w", err)
	}
	rows.Close()
	if len(filenames) == 0 {
		return nil
	}
	// Each row changes only if it is still as read: an administrator's block meanwhile wins.
	updated, err := tx.QueryContext(ctx, `
		UPDATE patches p
		SET tier_id = u.new_tier, blocked = u.new_blocked, block_reason = u.new_reason,
			upstream_blocked = u.new_upstream
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[], $5::boolean[], $6::text[], $7::boolean[], $8::boolean[])
			AS u(filename, old_tier, new_tier, old_blocked, new_blocked, new_reason, old_upstream, new_upstream)
		WHERE p.filename = u.filename AND p.tier_id = u.old_tier AND p.blocked = u.old_blocked
			AND p.upstream_blocked = u.old_upstream
		RETURNING p.filename`,
		pq.Array(filenames), pq.Array(oldTiers), pq.Array(newTiers), pq.Array(oldBlocked), pq.Array(newBlocked),
		pq.Array(newReasons), pq.Array(oldUpstream), pq.Array(newUpstream))
	if err != nil {
		return fmt.Errorf("cannot mirror patches: %w", err)
	}
	defer updated.Close()
	done := map[string]bool{}
	for updated.Next() {
		var filename string
		if err := updated.Scan(&filename); err != nil {
			return fmt.Errorf("cannot mirror patches: %w", err)
		}
		done[filename] = true
	}
	if err := updated.Err(); err != nil {
		return fmt.Errorf("cannot mirror patches: %w", err)
	}
	for _, filename := range filenames { // in filename order
		if !done[filename] {
			continue
		}
		if moved[filename] {
			res.Moved = append(res.Moved, filename)
		}
		if blocked[filename] {
			res.Blocked = append(res.Blocked, filename)
		}
		if unblocked[filename] {
			res.Unblocked = append(res.Unblocked, filename)
		}
	}
	return nil
}

// deleteTiers deletes the tiers in gone, moving any patch still in one of them (one an
// administrator changed meanwhile) to its replacement first.
func deleteTiers(ctx context.Context, tx *sql.Tx, local []tierRow, gone map[int64]bool, moveTo map[int64]int64, res *server.TierMirrorResult) error {
	var from, to []int64
	var names []string
	for _, t := range local {
		if gone[t.id] {
			from, to, names = append(from, t.id), append(to, moveTo[t.id]), append(names, t.name)
		}
	}
	if len(from) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE patches p SET tier_id = u.to_id
		FROM unnest($1::bigint[], $2::bigint[]) AS u(from_id, to_id)
		WHERE p.tier_id = u.from_id`, pq.Array(from), pq.Array(to)); err != nil {
		return fmt.Errorf("cannot move patches of deleted tiers: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM tiers WHERE id = ANY($1)`, pq.Array(from)); err != nil {
		return fmt.Errorf("cannot delete tiers %v: %w", names, err)
	}
	res.Deleted = names
	return nil
}
