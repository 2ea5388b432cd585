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

// downloadPatch streams a recorded patch file with Range and ETag (the SHA-256) support.
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
	w.Header().Set("ETag", `"`+p.SHA256+`"`)
	w.Header().Set("Content-Type", "application/x-bzip2")
	w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
	key := fileKey{filename, p.SHA256}
	if s.cache != nil {
		if e, ok := s.cache.get(key); ok {
			s.metrics.cacheHits.Inc()
			http.ServeContent(w, r, filename, e.modTime, bytes.NewReader(e.data))
			return nil
		}
		s.metrics.cacheMisses.Inc()
	}
	f, err := s.files.Open(r.Context(), filename)
	if err != nil {
		return err
	}
	defer f.Close()
	st := f.Stat()
	if s.cache != nil && st.Size <= maxCachedFile && r.Header.Get("Range") == "" {
		data := make([]byte, st.Size)
		if _, err := io.ReadFull(f, data); err != nil {
			return fmt.Errorf("cannot read patch %s: %w", filename, err)
		}
		s.cache.put(key, data, st.ModTime)
		http.ServeContent(w, r, filename, st.ModTime, bytes.NewReader(data))
		return nil
	}
	http.ServeContent(w, r, filename, st.ModTime, f)
	return nil
}

type storedFile struct {
	server.StoredFile
	Recorded bool `json:"recorded"`
}

func (s *Server) storagePatches(w http.ResponseWriter, r *http.Request) error {
	files, err := s.files.List(r.Context())
	if err != nil {
		return err
	}
	recorded := s.recordedFiles(r)
	out := make([]storedFile, 0, len(files))
	for _, f := range files {
		_, ok := recorded[f.Filename]
		out = append(out, storedFile{StoredFile: f, Recorded: ok})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"files": out})
}

func (s *Server) recordedFiles(r *http.Request) map[string]server.Patch {
	if err := s.catalog.refresh(r.Context()); err != nil {
		s.log.Warn("Cannot refresh patch catalog", "error", err)
	}
	return s.catalog.get().byFile
}

type invalidFile struct {
	Filename string `json:"filename"`
	Error    string `json:"error"`
}

// mismatchedFile is a recorded file whose stored bytes are not the recorded ones: every
// client would refuse it.
type mismatchedFile struct {
	Filename       string `json:"filename"`
	RecordedSHA256 string `json:"recorded-sha256"`
	StoredSHA256   string `json:"stored-sha256"`
}

type refreshRequest struct {
	// Prune forgets the records whose file is gone from storage; without it they are only
	// reported.
	Prune bool `json:"prune"`
}

type refreshResponse struct {
	Added      []string         `json:"added"`
	Removed    []string         `json:"removed"`
	Missing    []string         `json:"missing"`
	Mismatched []mismatchedFile `json:"mismatched"`
	Invalid    []invalidFile    `json:"invalid"`
}

// storageRefresh reconciles storage with the records: files in storage that are not
// recorded are checked and recorded; recorded files are checked against their SHA-256;
// records whose file is gone are reported as missing, and forgotten only with prune.
// Storage that holds no patch file at all while patches are recorded looks unmounted:
// without prune the refresh refuses and changes nothing.
func (s *Server) storageRefresh(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
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
	out := refreshResponse{Added: []string{}, Removed: []string{}, Missing: []string{}, Mismatched: []mismatchedFile{}, Invalid: []invalidFile{}}
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
			out.Invalid = append(out.Invalid, invalidFile{sf.Filename, server.ErrorMessage(err)})
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
func (s *Server) checkStored(ctx context.Context, filename string) (*mismatchedFile, error) {
	var m *mismatchedFile
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
			m = &mismatchedFile{Filename: filename, RecordedSHA256: p.SHA256, StoredSHA256: sum}
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
