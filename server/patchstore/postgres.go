package patchstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// ChunkSize is the size of the pieces the Postgres store keeps a file in, so that writing
// a file holds no more than one piece in memory.
const ChunkSize = 1 << 20

// ReadSize is the most an open file of the Postgres store holds in memory: reads fetch
// the stored chunks in slices of this size, so that a download whose reader is slow pins
// no more than this (the column is stored uncompressed, so a slice is read alone).
const ReadSize = 256 << 10

// fetchTimeout bounds opening a file and each fetch of a slice, waiting for a pooled
// connection included.
const fetchTimeout = 30 * time.Second

// Postgres stores patch files in the tables patch_files and patch_file_data of the
// server's database (created by the server/postgres migrations). A file is a head row
// naming its current generation, and the chunks of that generation.
type Postgres struct {
	db *sql.DB
}

var _ server.PatchFiles = (*Postgres)(nil)

// NewPostgres returns a store in the database behind db.
func NewPostgres(db *sql.DB) *Postgres {
	return &Postgres{db: db}
}

// Put writes r as a new generation of filename in one transaction, one chunk at a time,
// and drops the previous generation: readers see the old or the new file, never a mix.
func (s *Postgres) Put(ctx context.Context, filename string, r io.Reader) (int64, error) {
	if err := checkName(filename); err != nil {
		return 0, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	defer tx.Rollback()
	size, err := put(ctx, tx, filename, r)
	if err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("cannot store patch file %q: %w", filename, err)
	}
	return size, nil
}

func put(ctx context.Context, tx *sql.Tx, filename string, r io.Reader) (int64, error) {
	// Upserting the head first also locks it: concurrent Puts of one file take turns.
	var gen int64
	err := tx.QueryRowContext(ctx, `
		INSERT INTO patch_files (filename, generation, size, chunk_size, modified_at)
		VALUES ($1, nextval('patch_file_generations'), 0, $2, now())
		ON CONFLICT (filename) DO UPDATE SET generation = EXCLUDED.generation, size = 0,
			chunk_size = EXCLUDED.chunk_size, modified_at = EXCLUDED.modified_at
		RETURNING generation`, filename, ChunkSize).Scan(&gen)
	if err != nil {
		return 0, err
	}
	insert, err := tx.PrepareContext(ctx, `INSERT INTO patch_file_data (filename, generation, chunk, data) VALUES ($1, $2, $3, $4)`)
	if err != nil {
		return 0, err
	}
	defer insert.Close()
	buf := make([]byte, ChunkSize)
	var size int64
	for chunk := 0; ; chunk++ {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, err := insert.ExecContext(ctx, filename, gen, chunk, buf[:n]); err != nil {
				return 0, err
			}
			size += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE patch_files SET size = $2 WHERE filename = $1`, filename, size); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM patch_file_data WHERE filename = $1 AND generation <> $2`, filename, gen); err != nil {
		return 0, err
	}
	return size, nil
}

// Open opens a stored file. Reads fetch one slice of ReadSize at a time, using ctx. When
// the file is replaced while it is being read, the next fetch fails rather than mixing
// contents.
func (s *Postgres) Open(ctx context.Context, filename string) (server.PatchFile, error) {
	if err := checkName(filename); err != nil {
		return nil, err
	}
	f := &pgFile{ctx: ctx, db: s.db, start: -1}
	f.info.Filename = filename
	qctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	err := s.db.QueryRowContext(qctx, `SELECT generation, size, chunk_size, modified_at FROM patch_files WHERE filename = $1`, filename).
		Scan(&f.gen, &f.info.Size, &f.chunkSize, &f.info.ModTime)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(filename)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open patch file %q: %w", filename, err)
	}
	f.info.ModTime = f.info.ModTime.UTC()
	return f, nil
}

// List lists every stored file by name.
func (s *Postgres) List(ctx context.Context) ([]server.StoredFile, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT filename, size, modified_at FROM patch_files ORDER BY filename`)
	if err != nil {
		return nil, fmt.Errorf("cannot list patch files: %w", err)
	}
	defer rows.Close()
	var files []server.StoredFile
	for rows.Next() {
		var f server.StoredFile
		if err := rows.Scan(&f.Filename, &f.Size, &f.ModTime); err != nil {
			return nil, fmt.Errorf("cannot list patch files: %w", err)
		}
		f.ModTime = f.ModTime.UTC()
		files = append(files, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list patch files: %w", err)
	}
	return files, nil
}

// Delete removes a stored file and its chunks; a missing file is not an error.
func (s *Postgres) Delete(ctx context.Context, filename string) error {
	if err := checkName(filename); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM patch_files WHERE filename = $1`, filename); err != nil {
		return fmt.Errorf("cannot delete patch file %q: %w", filename, err)
	}
	return nil
}

// pgFile is an open file of a Postgres store. It holds at most one slice of ReadSize in
// memory.
type pgFile struct {
	cursor
	ctx       context.Context
	db        *sql.DB
	gen       int64
	chunkSize int64
	start     int64  // file offset of data, -1 for none
	data      []byte // the slice fetched last
}

// Read reads from the current offset, fetching the slice it falls in when needed.
func (f *pgFile) Read(p []byte) (int, error) {
	if idle, err := f.idle(p); idle {
		return 0, err
	}
	if f.start < 0 || f.pos < f.start || f.pos >= f.start+int64(len(f.data)) {
		if err := f.fetch(); err != nil {
			return 0, err
		}
	}
	n := copy(p, f.data[f.pos-f.start:])
	f.pos += int64(n)
	return n, nil
}

// fetch reads the slice of ReadSize that the current offset falls in, within its chunk.
func (f *pgFile) fetch() error {
	f.start = -1
	chunk := f.pos / f.chunkSize
	off := f.pos - chunk*f.chunkSize
	off -= off % ReadSize
	want := min(ReadSize, f.chunkSize-off, f.info.Size-chunk*f.chunkSize-off)
	ctx, cancel := context.WithTimeout(f.ctx, fetchTimeout)
	defer cancel()
	rows, err := f.db.QueryContext(ctx, `SELECT substring(data FROM $4 FOR $5) FROM patch_file_data
		WHERE filename = $1 AND generation = $2 AND chunk = $3`,
		f.info.Filename, f.gen, chunk, off+1, want)
	if err != nil {
		return fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, err)
		}
		return fmt.Errorf("cannot read patch file %q: it was replaced or deleted while being read", f.info.Filename)
	}
	// RawBytes points into the driver's buffer: copy it into this file's own buffer,
	// reused from slice to slice, rather than allocating a copy per slice.
	var raw sql.RawBytes
	if err := rows.Scan(&raw); err != nil {
		return fmt.Errorf("cannot read patch file %q: %w", f.info.Filename, err)
	}
	if int64(len(raw)) != want {
		return fmt.Errorf("cannot read patch file %q: chunk %d is shorter than expected", f.info.Filename, chunk)
	}
	f.data = append(f.data[:0], raw...)
	f.start = chunk*f.chunkSize + off
	return rows.Close()
}

// Seek sets the offset of the next Read; no data is fetched until then.
func (f *pgFile) Seek(offset int64, whence int) (int64, error) {
	abs, err := f.seekTo(offset, whence)
	if err == nil {
		f.pos = abs
	}
	return abs, err
}

// Close releases the slice in memory.
func (f *pgFile) Close() error {
	if f.closed {
		return fs.ErrClosed
	}
	f.closed, f.data = true, nil
	return nil
}
