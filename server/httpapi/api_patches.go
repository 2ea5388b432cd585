package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/server/patchstore"
)

func (s *Server) listPatches(w http.ResponseWriter, r *http.Request) error {
	patches, err := s.store.Patches(r.Context(), server.PatchFilter{
		Tier: queryValue(r, "tier"), Kernel: queryValue(r, "kernel"), Version: queryValue(r, "version"),
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"patches": s.catalog.signer.signEach(nonNil(patches))})
}

func (s *Server) tierPatches(w http.ResponseWriter, r *http.Request) error {
	tier := r.PathValue("name")
	if err := s.checkTier(r, tier); err != nil {
		return err
	}
	patches, err := s.store.Patches(r.Context(), server.PatchFilter{Tier: tier})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"patches": s.catalog.signer.signEach(nonNil(patches))})
}

// checkTier answers not-found for an unknown tier, so listings of a misspelt tier do not
// look empty.
func (s *Server) checkTier(r *http.Request, tier string) error {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(tiers, func(t server.Tier) bool { return t.Name == tier }) {
		return server.Errorf(server.CodeNotFound, "tier %q does not exist", tier)
	}
	return nil
}

func (s *Server) showPatch(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	patches, err := s.store.Patches(r.Context(), server.PatchFilter{Version: version})
	if err != nil {
		return err
	}
	if len(patches) == 0 {
		return server.Errorf(server.CodeNotFound, "patch version %q does not exist", version)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"patches": patches})
}

// maxUpload bounds an uploaded archive.
const maxUpload = patchfile.MaxModuleSize + patchfile.MaxMetadataSize + 1<<20

// uploadPatch checks an archive (name and metadata agree, module present), stores it and
// records it in the first tier. The bytes are stored before the record, so a patch is
// never offered before its file can be downloaded, and both happen under the filename's
// cluster-wide lock, so that concurrent uploads of one filename never leave one upload's
// record with the other's bytes. Uploading a recorded file again stores its bytes again
// when the stored ones do not match the record.
func (s *Server) uploadPatch(w http.ResponseWriter, r *http.Request) error {
	filename := r.PathValue("filename")
	if _, err := server.ParsePatchFilename(filename); err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "livepatch-upload-*")
	if err != nil {
		return fmt.Errorf("cannot buffer upload: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	hash := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, hash), http.MaxBytesReader(w, r.Body, maxUpload))
	if err != nil {
		if _, ok := err.(*http.MaxBytesError); ok {
			return server.Errorf(server.CodeTooLarge, "patch file is larger than %d bytes", int64(maxUpload))
		}
		return server.Errorf(server.CodeInvalid, "cannot read upload: %v", err)
	}
	if r.ContentLength >= 0 && size != r.ContentLength {
		return server.Errorf(server.CodeInvalid, "upload is incomplete: got %d of %d bytes", size, r.ContentLength)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cannot rewind upload: %w", err)
	}
	info, err := patchfile.Check(tmp, filename)
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(hash.Sum(nil))
	var p server.Patch
	created, repaired := false, false
	err = s.store.LockPatchFile(r.Context(), filename, func(ctx context.Context) error {
		existing, ok, err := s.patchRecord(ctx, filename, info.Metadata.Version)
		if err != nil {
			return err
		}
		if ok {
			if existing.SHA256 != sum {
				return server.Errorf(server.CodeConflict, "patch %s is already recorded with different contents (sha256 %s)", filename, existing.SHA256)
			}
			p = existing
			stored, err := patchstore.SHA256(ctx, s.files, filename)
			if err == nil && stored == sum {
				return nil
			}
			if err != nil && server.ErrorCode(err) != server.CodeNotFound {
				return err
			}
			// The stored bytes are missing or not the recorded ones: store the right ones.
			repaired = true
			return s.storeFile(ctx, tmp, filename)
		}
		if err := s.storeFile(ctx, tmp, filename); err != nil {
			return err
		}
		m := info.Metadata
		p, err = s.store.AddPatch(ctx, server.Patch{
			Filename: filename, Version: m.Version, Kernel: m.Kernel, Flavour: m.Flavour,
			Architecture: m.Architecture, SHA256: sum, Size: size, Module: m.Module,
			Description: m.Description, Fixes: m.Fixes, Source: server.SourceUpload,
		})
		created = err == nil
		return err
	})
	if repaired {
		s.invalidateCached(filename) // before answering: the next download reads the new bytes
	}
	if err != nil {
		return err
	}
	switch {
	case created:
		s.adminWrite(r, "patch_upload", "filename", filename, "sha256", sum)
		return writeJSON(w, http.StatusCreated, p)
	case repaired:
		s.adminWrite(r, "patch_repair", "filename", filename, "sha256", sum)
	}
	return writeJSON(w, http.StatusOK, p)
}

// invalidateCached drops filename from the patch cache, when it is on.
func (s *Server) invalidateCached(filename string) {
	if s.cache != nil {
		s.cache.invalidate(filename)
	}
}

// patchRecord returns the record of filename, a file of version.
func (s *Server) patchRecord(ctx context.Context, filename, version string) (server.Patch, bool, error) {
	patches, err := s.store.Patches(ctx, server.PatchFilter{Version: version})
	if err != nil {
		return server.Patch{}, false, err
	}
	for _, p := range patches {
		if p.Filename == filename {
			return p, true, nil
		}
	}
	return server.Patch{}, false, nil
}

// storeFile stores the checked file f under filename, from its start.
func (s *Server) storeFile(ctx context.Context, f io.ReadSeeker, filename string) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cannot rewind patch: %w", err)
	}
	if _, err := s.files.Put(ctx, filename, f); err != nil {
		return fmt.Errorf("cannot store patch %s: %w", filename, err)
	}
	return nil
}

type promoteRequest struct {
	Tier string `json:"tier"`
}

func (s *Server) promotePatch(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkTiersLocal(); err != nil {
		return err
	}
	var req promoteRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	version := r.PathValue("version")
	n, err := s.store.PromotePatch(r.Context(), version, req.Tier)
	if err != nil {
		return err
	}
	s.adminWrite(r, "patch_promote", "version", version, "tier", req.Tier, "files", n)
	return writeJSON(w, http.StatusOK, map[string]int{"promoted": n})
}

type promoteAllRequest struct {
	To string `json:"to"`
}

func (s *Server) promoteAll(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkTiersLocal(); err != nil {
		return err
	}
	var req promoteAllRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	from := r.PathValue("name")
	n, err := s.store.PromoteAll(r.Context(), from, req.To)
	if err != nil {
		return err
	}
	s.adminWrite(r, "patch_promote_all", "from", from, "to", req.To, "files", n)
	return writeJSON(w, http.StatusOK, map[string]int{"promoted": n})
}

type blockRequest struct {
	Reason string `json:"reason"`
}

func (s *Server) blockPatch(w http.ResponseWriter, r *http.Request) error {
	var req blockRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	version := r.PathValue("version")
	n, err := s.store.SetBlocked(r.Context(), version, true, req.Reason)
	if err != nil {
		return err
	}
	s.adminWrite(r, "patch_block", "version", version, "files", n)
	return writeJSON(w, http.StatusOK, map[string]int{"blocked": n})
}

func (s *Server) unblockPatch(w http.ResponseWriter, r *http.Request) error {
	version := r.PathValue("version")
	n, err := s.store.SetBlocked(r.Context(), version, false, "")
	if err != nil {
		return err
	}
	s.adminWrite(r, "patch_unblock", "version", version, "files", n)
	return writeJSON(w, http.StatusOK, map[string]int{"unblocked": n})
}

// downloadPatch serves a recorded patch file with Range and ETag (the SHA-256) support:
// from the patch cache when it is on and the file fits (one storage read however many
// downloads want the file at once, see fileCache.load), else streamed from storage, which
// holds a bounded slice of the file per download. Every write has the stall deadline
// (progressWriter), so a reader that stops taking bytes is dropped and its memory freed.
func (s *Server) downloadPatch(w http.ResponseWriter, r *http.Request) error {
	filename := r.PathValue("filename")
	p, ok := s.catalog.get().byFile[filename]
	if !ok {
		// The catalog may lag a change made on another unit; ask the database once.
		if err := s.catalog.refresh(r.Context()); err != nil {
			return err
		}
		if p, ok = s.catalog.get().byFile[filename]; !ok {
			return server.Errorf(server.CodeNotFound, "patch file %q does not exist", filename)
		}
	}
	s.metrics.downloads.Inc()
	if s.opts.DownloadRedirect != nil {
		return s.redirectDownload(w, r, filename)
	}
	etag := `"` + p.SHA256 + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/x-bzip2")
	w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
	if s.cache != nil {
		e, started, err := s.cache.load(r.Context(), fileKey{filename, p.SHA256}, p.Size, func() ([]byte, time.Time, error) {
			// Not the request's context: the read serves every download waiting for it.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.RequestTimeout)
			defer cancel()
			return s.readRecorded(ctx, p)
		})
		if started {
			s.metrics.cacheMisses.Inc()
		}
		if err != nil {
			return err
		}
		if e != nil {
			if !started {
				s.metrics.cacheHits.Inc()
			}
			if err := checkRange(w, r, etag, int64(len(e.data))); err != nil {
				return err
			}
			http.ServeContent(w, r, filename, e.modTime, bytes.NewReader(e.data))
			return nil
		}
	}
	f, err := s.files.Open(r.Context(), filename)
	if err != nil {
		return err
	}
	defer f.Close()
	st := f.Stat()
	if err := checkRange(w, r, etag, st.Size); err != nil {
		return err
	}
	http.ServeContent(w, r, filename, st.ModTime, f)
	return nil
}

// readRecorded reads the stored file of p whole, and fails unless it is the recorded
// file (its size and SHA-256): the patch cache never holds bytes a machine would refuse.
func (s *Server) readRecorded(ctx context.Context, p server.Patch) ([]byte, time.Time, error) {
	f, err := s.files.Open(ctx, p.Filename)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	st := f.Stat()
	if st.Size != p.Size {
		return nil, time.Time{}, fmt.Errorf("stored patch file %s has %d bytes, its record %d: upload it again or refresh storage", p.Filename, st.Size, p.Size)
	}
	data := make([]byte, st.Size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, time.Time{}, fmt.Errorf("cannot read patch file %s: %w", p.Filename, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.SHA256 {
		return nil, time.Time{}, fmt.Errorf("stored patch file %s does not match its record's SHA-256: upload it again or refresh storage", p.Filename)
	}
	return data, st.ModTime, nil
}

// maxRanges bounds the ranges of one request: more are refused rather than served as
// many small multipart pieces.
const maxRanges = 8

// checkRange refuses the Range header of a download that http.ServeContent would answer
// with a plain-text error: a malformed one (400), and one none of whose ranges lies in the
// size bytes of the file, or with more than maxRanges ranges (416, with Content-Range
// "bytes */size"). Whether ranges lie in the file is only checked when the Range applies
// (no If-Range, or one naming the file's etag).
func checkRange(w http.ResponseWriter, r *http.Request, etag string, size int64) error {
	h := r.Header.Get("Range")
	if h == "" {
		return nil
	}
	invalid := server.Errorf(server.CodeInvalid, "invalid Range header %.64q: want bytes=FIRST-LAST, bytes=FIRST- or bytes=-LENGTH", h)
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return invalid
	}
	n, satisfiable := 0, false
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n++
		first, last, ok := strings.Cut(part, "-")
		if !ok || (first == "" && last == "") {
			return invalid
		}
		a, aok := parseRangeNumber(first)
		b, bok := parseRangeNumber(last)
		switch {
		case first == "": // the last b bytes
			if !bok {
				return invalid
			}
			satisfiable = satisfiable || (b > 0 && size > 0)
		case !aok || (last != "" && (!bok || b < a)):
			return invalid
		default:
			satisfiable = satisfiable || a < size
		}
	}
	if n == 0 {
		return invalid
	}
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		return nil // the whole file is served
	}
	if n > maxRanges || !satisfiable {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		if n > maxRanges {
			return server.Errorf(server.CodeRangeNotSatisfiable, "the Range header asks for %d ranges; at most %d are served", n, maxRanges)
		}
		return server.Errorf(server.CodeRangeNotSatisfiable, "the Range header %.64q asks for no byte of the file, which has %d bytes", h, size)
	}
	return nil
}

// parseRangeNumber parses a byte position of a Range header: decimal digits only.
func parseRangeNumber(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (s *Server) storagePatches(w http.ResponseWriter, r *http.Request) error {
	files, err := s.files.List(r.Context())
	if err != nil {
		return err
	}
	recorded := s.recordedFiles(r)
	out := make([]server.StorageFile, 0, len(files))
	for _, f := range files {
		_, ok := recorded[f.Filename]
		out = append(out, server.StorageFile{StoredFile: f, Recorded: ok})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"files": out})
}

func (s *Server) recordedFiles(r *http.Request) map[string]server.Patch {
	if err := s.catalog.refresh(r.Context()); err != nil {
		s.log.Warn("Cannot refresh patch catalog", "error", err)
	}
	return s.catalog.get().byFile
}

// storageRefresh reconciles storage with the records: files in storage that are not
// recorded are checked and recorded; recorded files are checked against their SHA-256;
// records whose file is gone are reported as missing, and forgotten only with prune.
// Storage that holds no patch file at all while patches are recorded looks unmounted:
// without prune the refresh refuses and changes nothing.
func (s *Server) storageRefresh(w http.ResponseWriter, r *http.Request) error {
	var req server.RefreshRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	ctx := r.Context()
	files, err := s.files.List(ctx)
	if err != nil {
		return err
	}
	recorded := s.recordedFiles(r)
	if len(files) == 0 && len(recorded) > 0 && !req.Prune {
		return server.Errorf(server.CodeConflict,
			"patch storage holds no patch files but %d are recorded: it looks unmounted or emptied; nothing was changed (refresh with prune to forget the %d records)",
			len(recorded), len(recorded))
	}
	out := server.RefreshResult{Added: []string{}, Removed: []string{}, Missing: []string{}, Mismatched: []server.MismatchedFile{}, Invalid: []server.InvalidFile{}}
	inStorage := make(map[string]bool, len(files))
	for _, sf := range files {
		inStorage[sf.Filename] = true
		if _, ok := recorded[sf.Filename]; ok {
			m, err := s.checkStored(ctx, sf.Filename)
			if err != nil {
				return err
			}
			if m != nil {
				out.Mismatched = append(out.Mismatched, *m)
			}
			continue
		}
		if err := s.recordStored(ctx, sf.Filename); err != nil {
			if server.ErrorCode(err) != server.CodeInvalid && server.ErrorCode(err) != server.CodeConflict {
				return err
			}
			out.Invalid = append(out.Invalid, server.InvalidFile{Filename: sf.Filename, Error: server.ErrorMessage(err)})
			continue
		}
		out.Added = append(out.Added, sf.Filename)
	}
	for name := range recorded {
		if inStorage[name] {
			continue
		}
		if !req.Prune {
			out.Missing = append(out.Missing, name)
			continue
		}
		removed, err := s.forgetMissing(ctx, name)
		if err != nil {
			return err
		}
		if removed {
			out.Removed = append(out.Removed, name)
		}
	}
	slices.Sort(out.Removed)
	slices.Sort(out.Missing)
	if len(out.Mismatched) > 0 {
		s.log.Warn("Patch files do not match their records", "files", len(out.Mismatched))
	}
	s.adminWrite(r, "storage_refresh", "added", len(out.Added), "removed", len(out.Removed),
		"missing", len(out.Missing), "mismatched", len(out.Mismatched))
	return writeJSON(w, http.StatusOK, out)
}

// checkStored compares the stored bytes of a recorded file with its record, under the
// file's lock (an upload may be repairing it); nil when they match or the file is no
// longer recorded.
func (s *Server) checkStored(ctx context.Context, filename string) (*server.MismatchedFile, error) {
	var m *server.MismatchedFile
	err := s.store.LockPatchFile(ctx, filename, func(ctx context.Context) error {
		if err := s.catalog.refresh(ctx); err != nil {
			return err
		}
		p, ok := s.catalog.get().byFile[filename]
		if !ok {
			return nil
		}
		sum, err := patchstore.SHA256(ctx, s.files, filename)
		if server.ErrorCode(err) == server.CodeNotFound {
			return nil // deleted meanwhile: the next refresh reports it missing
		}
		if err != nil {
			return err
		}
		if sum != p.SHA256 {
			m = &server.MismatchedFile{Filename: filename, RecordedSHA256: p.SHA256, StoredSHA256: sum}
			s.invalidateCached(filename)
		}
		return nil
	})
	return m, err
}

// forgetMissing forgets the record of filename when, under the file's lock, its file is
// still missing from storage; it reports whether it did.
func (s *Server) forgetMissing(ctx context.Context, filename string) (bool, error) {
	removed := false
	err := s.store.LockPatchFile(ctx, filename, func(ctx context.Context) error {
		f, err := s.files.Open(ctx, filename)
		if err == nil {
			f.Close()
			return nil // stored meanwhile
		}
		if server.ErrorCode(err) != server.CodeNotFound {
			return err
		}
		err = s.store.DeletePatchRecord(ctx, filename)
		if server.ErrorCode(err) == server.CodeNotFound {
			return nil
		}
		removed = err == nil
		if removed {
			s.invalidateCached(filename)
		}
		return err
	})
	return removed, err
}

// recordStored checks a file already in storage and records it, under the file's lock.
func (s *Server) recordStored(ctx context.Context, filename string) error {
	return s.store.LockPatchFile(ctx, filename, func(ctx context.Context) error {
		f, err := s.files.Open(ctx, filename)
		if err != nil {
			return err
		}
		defer f.Close()
		hash := sha256.New()
		info, err := patchfile.Check(io.TeeReader(f, hash), filename)
		if err != nil {
			return err
		}
		if _, err := io.Copy(hash, f); err != nil { // the tar reader may stop before the end
			return fmt.Errorf("cannot read %s: %w", filename, err)
		}
		m := info.Metadata
		_, err = s.store.AddPatch(ctx, server.Patch{
			Filename: filename, Version: m.Version, Kernel: m.Kernel, Flavour: m.Flavour,
			Architecture: m.Architecture, SHA256: hex.EncodeToString(hash.Sum(nil)), Size: f.Stat().Size,
			Module: m.Module, Description: m.Description, Fixes: m.Fixes, Source: server.SourceUpload,
		})
		return err
	})
}
