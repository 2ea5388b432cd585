// Package offline writes and reads offline bundles: a tier of an upstream server carried
// to a server with no network path to it. A bundle is an uncompressed tar holding, first,
// the signed patch list exactly as the upstream's GET /v1/sync/patches answers it
// (ListName), then every listed patch file under PatchDir, in list order. The list's
// signature covers every entry's filename, size and SHA-256, so a bundle verifies as a
// whole (the signature, with the importing server's trusted keys) and entry by entry (each
// file's size, SHA-256 and archive, and its origin signature when the key is known).
//
// The patch files are bzip2 archives already; the bundle adds no compression.
package offline

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// Names of the entries of a bundle.
const (
	ListName = "livepatch-bundle/list.json"
	PatchDir = "livepatch-bundle/patches/"
)

// Bounds of what a bundle may hold; anything beyond is refused.
const (
	// MaxListSize bounds the signed list, as a synced list is bounded.
	MaxListSize = 64 << 20
	// MaxPatches bounds the patch files of one bundle.
	MaxPatches = 100_000
	// MaxSize bounds a whole bundle.
	MaxSize = 256 << 30
)

// ErrRefused marks an input that is not a complete, valid bundle: the message says why.
var ErrRefused = errors.New("refused offline bundle")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// header is the tar header of an entry: regular, 0644, the list's generation time.
func header(name string, size int64, at time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: at.UTC().Truncate(time.Second), Format: tar.FormatPAX,
	}
}

// encodeList is the list entry: the signed list as JSON, as the sync route answers it.
func encodeList(signed server.SignedSyncList) ([]byte, error) {
	data, err := json.Marshal(signed)
	if err != nil {
		return nil, fmt.Errorf("cannot encode the signed list: %w", err)
	}
	return data, nil
}

// Size returns the exact length of the bundle Write writes for signed, whose payload is
// list: for a Content-Length and a progress bar.
func Size(signed server.SignedSyncList, list server.SyncList) (int64, error) {
	data, err := encodeList(signed)
	if err != nil {
		return 0, err
	}
	var c counter
	n := int64(0)
	entry := func(name string, size int64) error {
		// Only the header is written, without its body: a fresh writer per entry.
		before := c.n
		if err := tar.NewWriter(&c).WriteHeader(header(name, size, list.GeneratedAt)); err != nil {
			return fmt.Errorf("cannot size the bundle entry %s: %w", name, err)
		}
		n += c.n - before + (size+511)/512*512
		return nil
	}
	if err := entry(ListName, int64(len(data))); err != nil {
		return 0, err
	}
	for _, p := range list.Patches {
		if err := entry(PatchDir+p.Filename, p.Size); err != nil {
			return 0, err
		}
	}
	return n + 1024, nil // the two zero blocks that end a tar
}

type counter struct{ n int64 }

func (c *counter) Write(b []byte) (int, error) { c.n += int64(len(b)); return len(b), nil }

// Write writes the bundle of signed, whose payload is list: the list, then each listed
// file as open returns it, which must be exactly the listed size.
func Write(w io.Writer, signed server.SignedSyncList, list server.SyncList, open func(server.SyncPatch) (io.ReadCloser, error)) error {
	data, err := encodeList(signed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(header(ListName, int64(len(data)), list.GeneratedAt)); err != nil {
		return fmt.Errorf("cannot write the bundle: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("cannot write the bundle: %w", err)
	}
	for _, p := range list.Patches {
		if err := writeFile(tw, p, list.GeneratedAt, open); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("cannot write the bundle: %w", err)
	}
	return nil
}

func writeFile(tw *tar.Writer, p server.SyncPatch, at time.Time, open func(server.SyncPatch) (io.ReadCloser, error)) error {
	f, err := open(p)
	if err != nil {
		return fmt.Errorf("cannot open patch %s: %w", p.Filename, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(header(PatchDir+p.Filename, p.Size, at)); err != nil {
		return fmt.Errorf("cannot write the bundle: %w", err)
	}
	n, err := io.Copy(tw, io.LimitReader(f, p.Size))
	if err != nil {
		return fmt.Errorf("cannot write patch %s to the bundle: %w", p.Filename, err)
	}
	if n != p.Size {
		return fmt.Errorf("cannot write patch %s to the bundle: the stored file has %d bytes, the list %d", p.Filename, n, p.Size)
	}
	return nil
}

// Options say how Read verifies and what it keeps.
type Options struct {
	// Verify checks the signature of the list and decodes it: with the importing
	// server's trusted keys, as a sync checks a fetched list. It is called before any
	// patch file is read; its error refuses the bundle.
	Verify func(server.SignedSyncList) (server.SyncList, error)
	// Keep says whether to keep a listed file once verified (nil: keep none). Files not
	// kept are verified all the same.
	Keep func(server.SyncPatch) bool
	// Dir holds the kept files (default os.TempDir()).
	Dir string
}

// Bundle is a verified bundle: its list and the files Read kept.
type Bundle struct {
	Signed server.SignedSyncList
	List   server.SyncList
	// Bytes is the size of the patch files, all verified.
	Bytes int64
	kept  map[string]keptFile
}

type keptFile struct {
	path string
	info patchfile.Info
}

// Read reads and verifies a whole bundle: the list (with Options.Verify), then every
// listed file, each exactly once, with its listed size and SHA-256 and a valid archive
// that agrees with its name. A bundle that ends early, lacks a listed file, holds an
// unlisted entry or a file that differs from its listing is refused with an error that
// wraps ErrRefused and says which; the files kept so far are removed. The caller removes
// the kept files of a verified bundle with Remove.
func Read(r io.Reader, o Options) (*Bundle, error) {
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	b := &Bundle{kept: map[string]keptFile{}}
	if err := b.read(r, o); err != nil {
		b.Remove()
		return nil, err
	}
	return b, nil
}

func (b *Bundle) read(r io.Reader, o Options) (err error) {
	tr := tar.NewReader(io.LimitReader(r, MaxSize+1))
	h, err := next(tr)
	if errors.Is(err, io.EOF) {
		return refuse("the bundle is empty")
	}
	if err != nil {
		return err
	}
	if h.Name != ListName {
		return refuse("not an offline bundle: its first entry is %q, not %s", h.Name, ListName)
	}
	if h.Size > MaxListSize {
		return refuse("its signed list is larger than %d bytes", MaxListSize)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return refuse("the bundle is truncated in its signed list: %v", err)
	}
	if err := json.Unmarshal(data, &b.Signed); err != nil || len(b.Signed.Payload) == 0 {
		return refuse("its first entry is not a signed patch list")
	}
	if b.List, err = o.Verify(b.Signed); err != nil {
		return err
	}
	if len(b.List.Patches) > MaxPatches {
		return refuse("its list has %d patches, more than %d", len(b.List.Patches), MaxPatches)
	}
	listed := make(map[string]server.SyncPatch, len(b.List.Patches))
	for _, p := range b.List.Patches {
		if err := patchfile.CheckEntry(p); err != nil {
			return refuse("%s", server.ErrorMessage(err))
		}
		if _, ok := listed[p.Filename]; ok {
			return refuse("its list names %s twice", p.Filename)
		}
		listed[p.Filename] = p
	}
	seen := make(map[string]bool, len(listed))
	for {
		h, err := next(tr)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name, ok := strings.CutPrefix(h.Name, PatchDir)
		p, listedOK := listed[name]
		switch {
		case !ok || !listedOK:
			return refuse("it holds %q, which its list does not name", h.Name)
		case seen[name]:
			return refuse("it holds %s twice", name)
		case h.Size != p.Size:
			return refuse("size mismatch for %s: the list has %d bytes, the bundle's file %d", name, p.Size, h.Size)
		}
		seen[name] = true
		keep := o.Keep != nil && o.Keep(p)
		if err := b.readFile(tr, p, keep, o.Dir); err != nil {
			return err
		}
		b.Bytes += p.Size
	}
	if missing := len(listed) - len(seen); missing > 0 {
		for _, p := range b.List.Patches {
			if !seen[p.Filename] {
				return refuse("the bundle is truncated: %d of its %d listed patch files are missing, from %s on", missing, len(listed), p.Filename)
			}
		}
	}
	return nil
}

// next reads the next tar header: a regular file, or io.EOF at the end of the bundle.
func next(tr *tar.Reader) (*tar.Header, error) {
	h, err := tr.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, refuse("the bundle is truncated")
	case err != nil:
		return nil, refuse("not an offline bundle (a tar file): %v", err)
	case h.Typeflag != tar.TypeReg:
		return nil, refuse("it holds %q, which is not a regular file", h.Name)
	}
	return h, nil
}

// readFile verifies the entry of p, keeping it in dir when keep is set.
func (b *Bundle) readFile(tr *tar.Reader, p server.SyncPatch, keep bool, dir string) (err error) {
	hash := sha256.New()
	var w io.Writer = hash
	var f *os.File
	if keep {
		if f, err = os.CreateTemp(dir, "livepatch-bundle-*"); err != nil {
			return fmt.Errorf("cannot buffer patch %s: %w", p.Filename, err)
		}
		defer func() {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("cannot buffer patch %s: %w", p.Filename, cerr)
			}
			if err != nil {
				os.Remove(f.Name())
			}
		}()
		w = io.MultiWriter(f, hash)
	}
	// The archive is checked as it streams; what it leaves unread is hashed after.
	in := io.TeeReader(tr, w)
	info, cerr := patchfile.Check(in, p.Filename)
	if _, err := io.Copy(io.Discard, in); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return refuse("the bundle is truncated in %s", p.Filename)
		}
		if _, ok := errors.AsType[*os.PathError](err); ok {
			return fmt.Errorf("cannot buffer patch %s: %w", p.Filename, err)
		}
		return refuse("cannot read %s: %v", p.Filename, err)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != p.SHA256 {
		return refuse("checksum mismatch for %s: the list has sha256 %s, the bundle's file %s", p.Filename, p.SHA256, got)
	}
	if cerr != nil {
		return refuse("its %s is not a valid patch: %s", p.Filename, server.ErrorMessage(cerr))
	}
	if keep {
		b.kept[p.Filename] = keptFile{path: f.Name(), info: info}
	}
	return nil
}

// Open opens a kept file, positioned at its start, with what its archive holds; the
// caller closes it. Not-found when Read did not keep it.
func (b *Bundle) Open(filename string) (*os.File, patchfile.Info, error) {
	k, ok := b.kept[filename]
	if !ok {
		return nil, patchfile.Info{}, server.Errorf(server.CodeNotFound, "the offline bundle's %s was not kept for import", filename)
	}
	f, err := os.Open(k.path)
	if err != nil {
		return nil, patchfile.Info{}, fmt.Errorf("cannot open the buffered %s: %w", filename, err)
	}
	return f, k.info, nil
}

// Kept reports whether Read kept a file.
func (b *Bundle) Kept(filename string) bool {
	_, ok := b.kept[filename]
	return ok
}

// Remove removes the kept files.
func (b *Bundle) Remove() {
	for name, k := range b.kept {
		os.Remove(k.path)
		delete(b.kept, name)
	}
}
