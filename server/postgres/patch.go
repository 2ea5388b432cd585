package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// patchColumns are the columns scanPatch reads, from patches p joined with tiers t.
const patchColumns = `p.filename, p.version, p.kernel, p.flavour, p.architecture, p.sha256,
	p.size, p.module, p.description, p.fixes, t.name, p.blocked, p.block_reason, p.source, p.created_at,
	p.signature, p.signature_key_id`

// AddPatch records a patch file in p.Tier, or in the first tier when p.Tier is empty.
func (db *DB) AddPatch(ctx context.Context, p server.Patch) (_ server.Patch, err error) {
	defer classifyInto(&err)
	var added server.Patch
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		added, err = addPatch(ctx, tx, p)
		return err
	})
	return added, err
}

func addPatch(ctx context.Context, tx *sql.Tx, p server.Patch) (server.Patch, error) {
	var tier tierRow
	var err error
	if p.Tier == "" {
		tier, err = firstTier(ctx, tx)
	} else {
		tier, err = findTier(ctx, tx, p.Tier)
	}
	if err != nil {
		return server.Patch{}, err
	}
	fixes := p.Fixes
	if fixes == nil {
		fixes = []server.Fix{}
	}
	fixesJSON, err := json.Marshal(fixes)
	if err != nil {
		return server.Patch{}, fmt.Errorf("cannot encode fixes of %q: %w", p.Filename, err)
	}
	source := p.Source
	if source == "" {
		source = server.SourceUpload
	}
	created := p.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	sigBytes, sigKeyID := signatureColumns(p.Signature)
	row := tx.QueryRowContext(ctx, `
		WITH p AS (
			INSERT INTO patches (filename, version, kernel, flavour, architecture, sha256, size,
				module, description, fixes, tier_id, blocked, block_reason, source, created_at,
				signature, signature_key_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
			ON CONFLICT (filename) DO NOTHING
			RETURNING *
		)
		SELECT `+patchColumns+` FROM p JOIN tiers t ON t.id = p.tier_id`,
		p.Filename, p.Version, p.Kernel, p.Flavour, p.Architecture, p.SHA256, p.Size,
		p.Module, p.Description, string(fixesJSON), tier.id, p.Blocked, p.BlockReason, source, created,
		sigBytes, sigKeyID)
	added, err := scanPatch(row)
	if isForeignKey(err, "patches_tier_id_fkey") {
		return server.Patch{}, server.Errorf(server.CodeNotFound, "tier %q not found", tier.name)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		if err != nil {
			return server.Patch{}, fmt.Errorf("cannot insert patch %q: %w", p.Filename, err)
		}
		return added, nil
	}
	// The filename is taken: the same file again is fine, another is a conflict.
	existing, err := scanPatch(tx.QueryRowContext(ctx, `
		SELECT `+patchColumns+` FROM patches p JOIN tiers t ON t.id = p.tier_id
		WHERE p.filename = $1`, p.Filename))
	if err != nil {
		return server.Patch{}, fmt.Errorf("cannot read patch %q: %w", p.Filename, err)
	}
	if existing.SHA256 != p.SHA256 {
		return server.Patch{}, server.Errorf(server.CodeConflict, "patch %q already exists with a different SHA-256", p.Filename)
	}
	return existing, nil
}

// Patches lists patches matching f, newest version first.
func (db *DB) Patches(ctx context.Context, f server.PatchFilter) (_ []server.Patch, err error) {
	defer classifyInto(&err)
	var patches []server.Patch
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		minPos := 0
		if f.Tier != "" {
			t, err := findTier(ctx, tx, f.Tier)
			if err != nil {
				return err
			}
			minPos = t.position
		}
		kernel := ""
		if f.Kernel != "" {
			kernel = likeEscaper.Replace(f.Kernel)
		}
		rows, err := tx.QueryContext(ctx, `
			SELECT `+patchColumns+` FROM patches p JOIN tiers t ON t.id = p.tier_id
			WHERE t.position >= $1
				AND ($2 = '' OR p.kernel LIKE $2 OR p.kernel LIKE $2 || '.%' OR p.kernel LIKE $2 || '-%')
				AND ($3 = '' OR p.version = $3)
			ORDER BY p.filename`, minPos, kernel, f.Version)
		if err != nil {
			return fmt.Errorf("cannot list patches: %w", err)
		}
		patches, err = scanPatches(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(patches, func(a, b server.Patch) int {
		return server.CompareVersions(b.Version, a.Version) // newest first; then by filename
	})
	return patches, nil
}

// likeEscaper escapes the LIKE wildcards (with the default escape character \).
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// PromotePatch promotes every file of version to tier, leaving files already in a later
// tier where they are.
func (db *DB) PromotePatch(ctx context.Context, version, tier string) (_ int, err error) {
	defer classifyInto(&err)
	var n int
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		t, err := findTier(ctx, tx, tier)
		if err != nil {
			return err
		}
		var files int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM patches WHERE version = $1`, version).Scan(&files); err != nil {
			return fmt.Errorf("cannot find patch %q: %w", version, err)
		}
		if files == 0 {
			return server.Errorf(server.CodeNotFound, "patch %q not found", version)
		}
		n, err = execCount(ctx, tx, `
			UPDATE patches p SET tier_id = $2
			FROM tiers cur
			WHERE cur.id = p.tier_id AND p.version = $1 AND cur.position < $3`, version, t.id, t.position)
		if err != nil {
			return fmt.Errorf("cannot promote patch %q to tier %q: %w", version, tier, err)
		}
		return nil
	})
	return n, err
}

// PromoteAll promotes every patch whose tier is from to tier to, a later tier.
func (db *DB) PromoteAll(ctx context.Context, from, to string) (_ int, err error) {
	defer classifyInto(&err)
	var n int
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		src, err := findTier(ctx, tx, from)
		if err != nil {
			return err
		}
		dst, err := findTier(ctx, tx, to)
		if err != nil {
			return err
		}
		if dst.position <= src.position {
			return server.Errorf(server.CodeInvalid, "cannot promote from tier %q to tier %q: %q does not come after %q", from, to, to, from)
		}
		n, err = execCount(ctx, tx, `UPDATE patches SET tier_id = $2 WHERE tier_id = $1`, src.id, dst.id)
		if err != nil {
			return fmt.Errorf("cannot promote patches of tier %q to tier %q: %w", from, to, err)
		}
		return nil
	})
	return n, err
}

// SetBlocked blocks (with a reason) or unblocks every file of version. The block is the
// administrator's from then on: sync never lifts it (upstream_blocked is cleared).
func (db *DB) SetBlocked(ctx context.Context, version string, blocked bool, reason string) (_ int, err error) {
	defer classifyInto(&err)
	if !blocked {
		reason = ""
	}
	var n int
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		n, err = execCount(ctx, tx, `UPDATE patches SET blocked = $2, block_reason = $3, upstream_blocked = false WHERE version = $1`, version, blocked, reason)
		if err != nil {
			return fmt.Errorf("cannot block patch %q: %w", version, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeNotFound, "patch %q not found", version)
		}
		return nil
	})
	return n, err
}

// DeletePatchRecord forgets a patch file; not-found when there is no such record.
func (db *DB) DeletePatchRecord(ctx context.Context, filename string) (err error) {
	defer classifyInto(&err)
	return db.inTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `DELETE FROM patches WHERE filename = $1`, filename)
		if err != nil {
			return fmt.Errorf("cannot delete patch %q: %w", filename, err)
		}
		if n == 0 {
			return server.Errorf(server.CodeNotFound, "patch %q not found", filename)
		}
		return nil
	})
}

// CatalogVersion returns the counter that every change to tiers or patches bumps. Each
// bump is also announced with NOTIFY on channel livepatch_catalog.
func (db *DB) CatalogVersion(ctx context.Context) (_ int64, err error) {
	defer classifyInto(&err)
	var v int64
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT version FROM catalog_version`).Scan(&v); err != nil {
			return fmt.Errorf("cannot read catalog version: %w", err)
		}
		return nil
	})
	return v, err
}

// SetPatchSignature records the origin's signature of the patch file filename, if it is
// recorded with that SHA-256 and another signature or none. It reports whether it changed
// anything. A sync calls it for patches it already holds, so that patches synced before
// their upstream signed them (or before the origin rotated its key) get signed.
func (db *DB) SetPatchSignature(ctx context.Context, filename, sha256 string, sig *server.PatchSignature) (_ bool, err error) {
	defer classifyInto(&err)
	if sig == nil {
		return false, nil
	}
	sigBytes, sigKeyID := signatureColumns(sig)
	var n int
	err = db.inTx(ctx, func(tx *sql.Tx) (err error) {
		n, err = execCount(ctx, tx, `
			UPDATE patches SET signature = $3, signature_key_id = $4
			WHERE filename = $1 AND sha256 = $2
				AND (signature IS DISTINCT FROM $3 OR signature_key_id IS DISTINCT FROM $4)`,
			filename, sha256, sigBytes, sigKeyID)
		if err != nil {
			return fmt.Errorf("cannot record the signature of patch %q: %w", filename, err)
		}
		return nil
	})
	return n > 0, err
}

// signatureColumns returns the column values of a signature: NULLs for none.
func signatureColumns(sig *server.PatchSignature) (signature []byte, keyID sql.NullString) {
	if sig == nil {
		return nil, sql.NullString{}
	}
	return sig.Signature, sql.NullString{String: sig.KeyID, Valid: true}
}

func scanPatch(row interface{ Scan(...any) error }) (server.Patch, error) {
	var p server.Patch
	var fixes, sig []byte
	var sigKeyID sql.NullString
	err := row.Scan(&p.Filename, &p.Version, &p.Kernel, &p.Flavour, &p.Architecture, &p.SHA256,
		&p.Size, &p.Module, &p.Description, &fixes, &p.Tier, &p.Blocked, &p.BlockReason, &p.Source, &p.CreatedAt,
		&sig, &sigKeyID)
	if err != nil {
		return server.Patch{}, err
	}
	if sig != nil && sigKeyID.Valid {
		p.Signature = &server.PatchSignature{KeyID: sigKeyID.String, Signature: sig}
	}
	if err := json.Unmarshal(fixes, &p.Fixes); err != nil {
		return server.Patch{}, fmt.Errorf("cannot decode fixes of %q: %w", p.Filename, err)
	}
	if len(p.Fixes) == 0 {
		p.Fixes = nil
	}
	p.CreatedAt = utc(p.CreatedAt)
	return p, nil
}

func scanPatches(rows *sql.Rows) ([]server.Patch, error) {
	defer rows.Close()
	var patches []server.Patch
	for rows.Next() {
		p, err := scanPatch(rows)
		if err != nil {
			return nil, fmt.Errorf("cannot read patches: %w", err)
		}
		patches = append(patches, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read patches: %w", err)
	}
	return patches, nil
}

// execCount runs a statement and returns how many rows it changed.
func execCount(ctx context.Context, tx *sql.Tx, query string, args ...any) (int, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}
