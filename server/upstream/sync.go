package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// result is what one pass of the scheduler did.
type result struct {
	report server.SyncReport // set when a run happened or was skipped
	locked bool              // a scheduled run found another unit syncing
	// notDue is set when a scheduled run found a recent success: how long until the
	// next one is due.
	notDue time.Duration
}

// recordTimeout bounds recording a report after the run's context ended.
const recordTimeout = 10 * time.Second

// run runs one sync under the cluster-wide lock. A scheduled run (forced false) first
// checks that the last success of any unit is an interval old.
func (s *Syncer) run(ctx context.Context, forced bool) (res result) {
	s.setRunning(true)
	defer s.setRunning(false)
	start := s.opts.Now()
	ran, err := s.store.RunExclusive(ctx, LockName, func(ctx context.Context) error {
		if !forced {
			last, err := s.store.SyncReports(ctx, server.SyncReportFilter{Outcome: server.SyncSuccess, Limit: 1})
			if err != nil {
				return err
			}
			if len(last) > 0 {
				if due := last[0].EndedAt.Add(s.cfg.Interval.D()); due.After(s.opts.Now()) {
					res.notDue = due.Sub(s.opts.Now())
					return nil
				}
			}
		}
		res.report = s.sync(ctx)
		return nil
	})
	switch {
	case err != nil && res.report.ID != 0:
		// The run is recorded; only releasing the lock failed (the session's end does).
		s.log.Warn("Cannot release the sync lock", "error", err)
	case err != nil:
		// The lock or the schedule check failed: the database is in trouble.
		res.notDue = 0
		res.report = s.finish(ctx, server.SyncReport{StartedAt: start},
			[]error{fmt.Errorf("cannot start a sync: %s", server.ErrorMessage(err))})
		s.log.Warn("Sync failed", "error", err)
	case !ran && forced:
		res.report = s.finish(ctx, server.SyncReport{StartedAt: start, Outcome: server.SyncSkipped,
			Error: "another unit is running a sync: this one was not started"}, nil)
	case !ran:
		res.locked = true
	}
	return res
}

// sync runs the steps of one sync and records its report.
func (s *Syncer) sync(ctx context.Context) (report server.SyncReport) {
	report = server.SyncReport{StartedAt: s.opts.Now()}
	s.log.Info("Sync started", "upstream", s.upstreamName(), "tier", s.cfg.UpstreamTier)
	var errs []error
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("Sync panicked", "panic", p, "stack", string(debug.Stack()))
				errs = append(errs, fmt.Errorf("internal error: %v", p))
			}
		}()
		errs = s.syncPatches(ctx, &report)
	}()
	return s.finish(ctx, report, errs)
}

// finish completes report with errs, records it, updates the metrics and logs it.
func (s *Syncer) finish(ctx context.Context, report server.SyncReport, errs []error) server.SyncReport {
	report.EndedAt = s.opts.Now()
	report.Unit = s.opts.Unit
	if len(errs) > 0 {
		report.Outcome = server.SyncFailed
		report.Error = joinErrors(errs)
	} else if report.Outcome == "" {
		report.Outcome = server.SyncSuccess
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if recorded, err := s.store.AddSyncReport(rctx, report); err != nil {
		s.log.Error("Cannot record sync report", "error", err, "outcome", report.Outcome, "report-error", report.Error)
	} else {
		report = recorded
	}
	s.metrics.runs.WithLabelValues(report.Outcome).Inc()
	switch report.Outcome {
	case server.SyncSuccess:
		s.metrics.lastSuccess.Set(float64(report.EndedAt.UnixNano()) / 1e9)
		s.log.Info("Sync succeeded", "patches-added", report.PatchesAdded, "bytes", report.Bytes)
	case server.SyncFailed:
		s.log.Warn("Sync failed", "error", report.Error, "patches-added", report.PatchesAdded)
	case server.SyncSkipped:
		s.log.Info("Sync skipped", "reason", report.Error)
	}
	return report
}

// maxReportedErrors bounds how many per-patch errors a report lists.
const maxReportedErrors = 5

func joinErrors(errs []error) string {
	var msgs []string
	for _, err := range errs[:min(len(errs), maxReportedErrors)] {
		msgs = append(msgs, err.Error()) // our own messages: no driver details
	}
	if n := len(errs) - maxReportedErrors; n > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more errors (see the server log)", n))
	}
	// Transport errors may quote a proxy or upstream URL: reports are shown to
	// administrators and on /debug/status, never with credentials.
	return config.Redact(strings.Join(msgs, "; "))
}

// syncPatches fetches and verifies the list, then adds each missing patch that passes the
// filters. It returns the errors that make the run a failure: one that stops the run, or
// one per patch that could not be added (the others are still added).
func (s *Syncer) syncPatches(ctx context.Context, report *server.SyncReport) []error {
	if s.problem != nil {
		return []error{s.problem}
	}
	if err := s.checkLandingTier(ctx); err != nil {
		return []error{err}
	}
	list, err := s.fetchList(ctx)
	if err != nil {
		return []error{err}
	}
	return s.apply(ctx, report, list, origin{
		name:     "the upstream at " + s.upstreamName(),
		file:     s.download,
		upstream: true,
	})
}

// origin is where the list of a run and its files come from: the upstream, or an
// offline bundle.
type origin struct {
	// name says it in messages: "the upstream at https://..." or "the offline bundle ...".
	name string
	// file returns the verified file of a listed patch, positioned at its start; the
	// caller closes and removes it.
	file func(context.Context, server.SyncPatch) (*os.File, patchfile.Info, error)
	// upstream is set for a sync from the upstream, which also gets machine reports.
	upstream bool
}

// apply applies a verified list: the tiers (when mirrored), then each missing patch that
// passes the filters, from o. It returns the errors that make the run a failure, as
// syncPatches does.
func (s *Syncer) apply(ctx context.Context, report *server.SyncReport, list server.SyncList, o origin) []error {
	if err := s.store.RecordSyncList(ctx, list.Tier, list.GeneratedAt); err != nil {
		return []error{storeError("cannot record the patch list", err)}
	}
	var errs []error
	if s.cfg.SyncTiers {
		if errs = s.mirrorTiers(ctx, list, o.name); len(errs) > 0 && fatal(ctx, errs[0]) {
			return errs
		}
	}
	local, err := s.store.Patches(ctx, server.PatchFilter{})
	if err != nil {
		return append(errs, storeError("cannot read the local patches", err))
	}
	recorded := make(map[string]server.Patch, len(local))
	for _, p := range local {
		recorded[p.Filename] = p
	}
	for _, p := range list.Patches {
		if !s.wanted(p) {
			continue
		}
		if q, ok := recorded[p.Filename]; ok {
			if q.SHA256 != p.SHA256 {
				errs = append(errs, server.Errorf(server.CodeConflict,
					"patch %s is recorded here with sha256 %s but the upstream lists sha256 %s: it was not replaced", p.Filename, q.SHA256, p.SHA256))
			} else if err := s.updateSignature(ctx, q, p); err != nil {
				errs = append(errs, err)
				if fatal(ctx, err) {
					return errs
				}
			}
			continue
		}
		size, err := s.addPatch(ctx, p, o)
		if err != nil {
			s.log.Warn("Cannot sync patch", "filename", p.Filename, "error", err)
			errs = append(errs, err)
			if fatal(ctx, err) {
				return errs
			}
			continue
		}
		recorded[p.Filename] = server.Patch{Filename: p.Filename, SHA256: p.SHA256, Size: p.Size, Signature: p.Signature}
		report.PatchesAdded++
		report.Bytes += size
		s.metrics.added.Inc()
		s.metrics.bytes.Add(float64(size))
		s.log.Info("Synced patch", "filename", p.Filename, "size", size)
	}
	if len(errs) == 0 && o.upstream && s.cfg.SendMachineReports && server.CheckDeploymentID(s.cfg.ID) == nil {
		if err := s.sendMachineReports(ctx); err != nil {
			// Reports are a courtesy to the upstream: the patches are what matter.
			s.log.Warn("Cannot send machine reports to the upstream", "error", err)
		}
	}
	return errs
}

// errStore marks errors of the local database or patch storage: they stop a run.
var errStore = errors.New("local storage error")

func storeError(what string, err error) error {
	return fmt.Errorf("%w: %s: %s", errStore, what, server.ErrorMessage(err))
}

// fatal reports whether err stops the run rather than only the patch.
func fatal(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, errStore) || errors.Is(err, errNoTiers)
}

// errNoTiers marks a list that a downstream cannot mirror: it stops the run before
// anything changes.
var errNoTiers = errors.New("the upstream's tiers cannot be mirrored")

// mirrorTiers makes the local tiers, and the tiers and blocking of the patches recorded
// here, follow the upstream's list (patch-sync.sync-tiers), in one store transaction. The
// patches still to download land in their tier when they are added. The errors are the
// tiers that could not be deleted, or one that stops the run.
func (s *Syncer) mirrorTiers(ctx context.Context, list server.SyncList, from string) []error {
	if len(list.Tiers) == 0 {
		return []error{fmt.Errorf("%w: %s does not list its tiers (a server without tier mirroring?): upgrade it, or turn patch-sync.sync-tiers off",
			errNoTiers, from)}
	}
	if err := list.CheckTiers(); err != nil {
		return []error{fmt.Errorf("%w: invalid patch list from %s: %s", errNoTiers, from, server.ErrorMessage(err))}
	}
	res, err := s.store.MirrorTiers(ctx, server.TierMirror{
		Tiers:   list.Tiers,
		Patches: list.Patches,
		BlockReason: fmt.Sprintf("%s no longer lists it in tier %q or later (blocked, removed or demoted there; patch-sync.sync-tiers)",
			from, list.Tier),
	})
	if err != nil {
		return []error{storeError("cannot mirror the upstream's tiers", err)}
	}
	if res.Changed() {
		s.log.Info("Mirrored the upstream's tiers", "tiers", list.Tiers, "created", res.Created, "deleted", res.Deleted,
			"reordered", res.Reordered, "moved", len(res.Moved), "blocked", res.Blocked, "unblocked", res.Unblocked)
	}
	var errs []error
	for _, k := range res.Kept {
		errs = append(errs, server.Errorf(server.CodeConflict,
			"tier %q is not on the upstream but was kept: it is used by %s; move them to a tier of the upstream (%s) and the next sync deletes it",
			k.Name, k.UsedBy, strings.Join(list.Tiers, ", ")))
	}
	return errs
}

// landingTier is the local tier a new synced patch is recorded in: its upstream tier when
// the tiers are mirrored, else patch-sync.tier ("": the first tier).
func (s *Syncer) landingTier(p server.SyncPatch) string {
	if s.cfg.SyncTiers {
		return p.Tier
	}
	return s.cfg.Tier
}

// checkLandingTier checks that patch-sync.tier names a local tier.
func (s *Syncer) checkLandingTier(ctx context.Context) error {
	if s.cfg.Tier == "" || s.cfg.SyncTiers {
		return nil
	}
	tiers, err := s.store.Tiers(ctx)
	if err != nil {
		return storeError("cannot read the tiers", err)
	}
	names := make([]string, len(tiers))
	for i, t := range tiers {
		if t.Name == s.cfg.Tier {
			return nil
		}
		names[i] = t.Name
	}
	return server.Errorf(server.CodeInvalid, "patch-sync.tier %q is not a tier of this server (tiers: %s)", s.cfg.Tier, strings.Join(names, ", "))
}

// wanted applies the filters: flavours, architectures, minimum kernel version.
func (s *Syncer) wanted(p server.SyncPatch) bool {
	if len(s.cfg.Flavors) > 0 && !slices.Contains(s.cfg.Flavors, p.Flavour) {
		return false
	}
	if len(s.cfg.Architectures) > 0 && !slices.Contains(s.cfg.Architectures, p.Architecture) {
		return false
	}
	return server.KernelAtLeast(p.Kernel, s.cfg.MinimumKernelVersion)
}

// checkSignature verifies the origin's signature of a listed patch when the origin is the
// upstream itself (its key is a trusted key). A signature by a server further up a
// chain cannot be checked here: it is kept and passed on for the clients that trust that
// server's key.
func (s *Syncer) checkSignature(p server.SyncPatch) error {
	if p.Signature == nil {
		return nil
	}
	key := server.KeyFor(s.trusted, p.Signature.KeyID)
	if key == nil {
		return nil
	}
	if err := server.VerifyPatch(key, p.Signature, p.Filename, p.SHA256, p.Size); err != nil {
		return server.Errorf(server.CodeInvalid, "the upstream lists %s with a bad signature: %v", p.Filename, err)
	}
	return nil
}

// updateSignature records the listed origin signature of a patch already held with the
// same contents, when it differs from the recorded one: patches synced before their
// upstream signed them, or before the origin rotated its key. A listing without a
// signature leaves the recorded one.
func (s *Syncer) updateSignature(ctx context.Context, q server.Patch, p server.SyncPatch) error {
	if p.Signature == nil || q.Size != p.Size || sameSignature(q.Signature, p.Signature) {
		return nil
	}
	if err := patchfile.CheckEntry(p); err != nil {
		return err
	}
	if err := s.checkSignature(p); err != nil {
		return err
	}
	if _, err := s.store.SetPatchSignature(ctx, p.Filename, p.SHA256, p.Signature); err != nil {
		return storeError("cannot record the signature of patch "+p.Filename, err)
	}
	s.log.Info("Recorded the upstream's signature of a patch", "filename", p.Filename, "key-id", p.Signature.KeyID)
	return nil
}

func sameSignature(a, b *server.PatchSignature) bool {
	return a != nil && b != nil && a.KeyID == b.KeyID && bytes.Equal(a.Signature, b.Signature)
}

// addPatch downloads and verifies p, stores the file, and records it in its landing
// tier, in that order: a patch is never recorded before its verified file is stored, so
// an interrupted run leaves nothing half-recorded and the next run resumes. It returns
// the file's size.
func (s *Syncer) addPatch(ctx context.Context, p server.SyncPatch, o origin) (int64, error) {
	if err := patchfile.CheckEntry(p); err != nil {
		return 0, err
	}
	if err := s.checkSignature(p); err != nil {
		return 0, err
	}
	f, info, err := o.file(ctx, p)
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// Store and record under the filename's lock, looking again first: never overwrite a
	// file recorded meanwhile (an upload on another unit).
	err = s.store.LockPatchFile(ctx, p.Filename, func(ctx context.Context) error {
		same, err := s.store.Patches(ctx, server.PatchFilter{Version: p.Version})
		if err != nil {
			return storeError("cannot read the local patches", err)
		}
		for _, q := range same {
			if q.Filename == p.Filename && q.SHA256 != p.SHA256 {
				return server.Errorf(server.CodeConflict,
					"patch %s is recorded here with sha256 %s but the upstream lists sha256 %s: it was not replaced", p.Filename, q.SHA256, p.SHA256)
			}
		}
		if _, err := s.files.Put(ctx, p.Filename, f); err != nil {
			return storeError("cannot store patch "+p.Filename, err)
		}
		m := info.Metadata
		_, err = s.store.AddPatch(ctx, server.Patch{
			Filename: p.Filename, Version: m.Version, Kernel: m.Kernel, Flavour: m.Flavour,
			Architecture: m.Architecture, SHA256: p.SHA256, Size: p.Size, Module: m.Module,
			Description: m.Description, Fixes: m.Fixes, Tier: s.landingTier(p), Source: server.SourceSync,
			Signature: p.Signature,
		})
		if err != nil && server.ErrorCode(err) != server.CodeConflict {
			return storeError("cannot record patch "+p.Filename, err)
		}
		return err
	})
	if server.ErrorCode(err) == server.CodeConflict || errors.Is(err, errStore) {
		return 0, err
	}
	if err != nil {
		return 0, storeError("cannot lock patch "+p.Filename, err)
	}
	return p.Size, nil
}
