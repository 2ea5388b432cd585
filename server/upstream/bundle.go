package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/offline"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// Import applies an offline bundle read from r as one sync run from a local source: the
// list is verified with patch-sync.trusted-key and checked against patch-sync.upstream-tier
// as a fetched list is, every file of the bundle is verified before anything is recorded,
// and then the run records tiers (patch-sync.sync-tiers), patches, origin signatures and
// a sync report exactly as a sync from the upstream does, under the same cluster-wide
// lock. Importing the same bundle again adds nothing. A bundle that is not complete and
// valid, does not verify, or is older than a list already applied for its tier is
// refused: the error (CodeInvalid) says why, nothing but a failed report is recorded.
// The returned report is recorded in every case but a refusal before the lock; Import
// works whether patch-sync.enabled is set or not.
func (s *Syncer) Import(ctx context.Context, r io.Reader) (server.SyncReport, error) {
	s.setRunning(true)
	defer s.setRunning(false)
	report := server.SyncReport{StartedAt: s.opts.Now(), Source: server.SyncFromBundle}
	// Our own messages: no secrets, no driver details.
	refused := func(err error) (server.SyncReport, error) {
		err = server.Errorf(server.ErrorCode(err), "cannot import the offline bundle: %s", err)
		return s.finish(ctx, report, []error{err}), err
	}
	if s.importProblem != nil {
		return refused(s.importProblem)
	}
	if err := s.checkLandingTier(ctx); err != nil {
		return refused(err)
	}
	dir, err := os.MkdirTemp(s.opts.TempDir, "livepatch-import-*")
	if err != nil {
		return refused(storeError("cannot buffer the bundle", err))
	}
	defer os.RemoveAll(dir)
	local, err := s.store.Patches(ctx, server.PatchFilter{})
	if err != nil {
		return refused(storeError("cannot read the local patches", err))
	}
	recorded := make(map[string]string, len(local))
	for _, p := range local {
		recorded[p.Filename] = p.SHA256
	}
	b, err := offline.Read(r, offline.Options{
		Verify: func(signed server.SignedSyncList) (server.SyncList, error) { return s.verifyBundle(ctx, signed) },
		Keep:   func(p server.SyncPatch) bool { return s.wanted(p) && recorded[p.Filename] != p.SHA256 },
		Dir:    dir,
	})
	if errors.Is(err, offline.ErrRefused) {
		err = server.Errorf(server.CodeInvalid, "%s", strings.TrimPrefix(err.Error(), offline.ErrRefused.Error()+": "))
	}
	if err != nil {
		return refused(err)
	}
	defer b.Remove()
	s.log.Info("Offline bundle verified", "tier", b.List.Tier, "generated-at", b.List.GeneratedAt,
		"key-id", b.Signed.KeyID, "patches", len(b.List.Patches), "bytes", b.Bytes)

	var errs []error
	var stale error
	ran, err := s.store.RunExclusive(ctx, LockName, func(ctx context.Context) error {
		// Another unit may have applied a newer list while this one read the bundle.
		if stale = s.checkFresh(ctx, b.List); stale != nil {
			return nil
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					errs = append(errs, fmt.Errorf("internal error: %v", p))
				}
			}()
			errs = s.apply(ctx, &report, b.List, origin{
				name: fmt.Sprintf("the offline bundle of tier %q generated at %s", b.List.Tier, b.List.GeneratedAt.UTC().Format(time.RFC3339)),
				file: func(_ context.Context, p server.SyncPatch) (*os.File, patchfile.Info, error) {
					return b.Open(p.Filename)
				},
			})
		}()
		return nil
	})
	switch {
	case err != nil && !ran:
		return refused(storeError("cannot take the sync lock", err))
	case !ran:
		report.Outcome = server.SyncSkipped
		report.Error = "another unit is running a sync or an import: import the bundle again when it ends"
		report = s.finish(ctx, report, nil)
		return report, server.Errorf(server.CodeConflict, "%s", report.Error)
	}
	if stale != nil {
		return refused(stale)
	}
	return s.finish(ctx, report, errs), nil
}

// verifyBundle verifies the signed list of a bundle as fetchList verifies a fetched one,
// and checks that it is not older than the newest list applied for its tier.
func (s *Syncer) verifyBundle(ctx context.Context, signed server.SignedSyncList) (server.SyncList, error) {
	list, err := s.verifyList(signed)
	if errors.Is(err, server.ErrBadSignature) {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "bad signature on its patch list: %s; check patch-sync.trusted-key against the signing.pub of the server that exported it",
			strings.TrimPrefix(err.Error(), server.ErrBadSignature.Error()+": "))
	}
	if err != nil {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "invalid patch list: %v", err)
	}
	if list.Tier != s.cfg.UpstreamTier {
		return server.SyncList{}, server.Errorf(server.CodeInvalid, "it holds tier %q, but patch-sync.upstream-tier is %q: export tier %q, or set patch-sync.upstream-tier to %q",
			list.Tier, s.cfg.UpstreamTier, s.cfg.UpstreamTier, list.Tier)
	}
	if err := s.checkFresh(ctx, list); err != nil {
		return server.SyncList{}, err
	}
	return list, nil
}

// checkFresh refuses a list generated before the newest list applied for its tier: a
// replayed older bundle would undo what newer ones did (with patch-sync.sync-tiers, block
// and move patches back).
func (s *Syncer) checkFresh(ctx context.Context, list server.SyncList) error {
	last, err := s.store.LastSyncList(ctx, list.Tier)
	if err != nil {
		return storeError("cannot read the last applied patch list", err)
	}
	// The database keeps microseconds, rounded: the same list read back is not older.
	if list.GeneratedAt.Round(time.Microsecond).Before(last) {
		return server.Errorf(server.CodeInvalid,
			"its list of tier %q was generated at %s, before the list already applied here (generated at %s): an older bundle is not imported; export a new one",
			list.Tier, list.GeneratedAt.UTC().Format(time.RFC3339Nano), last.UTC().Format(time.RFC3339Nano))
	}
	return nil
}
