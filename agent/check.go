package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// Refresh checks in now: it reports the machine's status, then downloads, verifies and
// (in mode normal) applies the patch the server offers. The returned state is the one
// saved, also when the error concerns the check or the patch.
func (a *Agent) Refresh(ctx context.Context) (*State, error) {
	c, err := a.LoadConfig()
	if err != nil {
		return nil, err
	}
	if mode := c.EffectiveMode(); mode == ModeNoRefresh || mode == ModeStop {
		return nil, fmt.Errorf("checks are off in mode %s: run livepatch-client config mode=normal to turn them on", mode)
	}
	st, token, unlock, err := a.lockEnabled()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return st, a.check(ctx, c, st, token)
}

// check runs one check-in on a locked state directory and saves the state.
func (a *Agent) check(ctx context.Context, c *Config, st *State, token string) error {
	mode := c.EffectiveMode()
	st.LastCheck, st.Mode = a.now().UTC(), mode
	kernel, err := a.kernel(c)
	if err != nil {
		return a.checkFailed(st, err)
	}
	api, err := a.api(c, st.Server)
	if err != nil {
		return a.checkFailed(st, err)
	}
	a.reconcile(st, kernel)
	status := a.sys.status(kernel, c.ReportsHostname())
	status.PatchState, status.PatchVersion = st.reportedPatchState(), st.reportedVersion()
	st.System = status
	upd, err := api.CheckIn(ctx, st.MachineID, token, status)
	if err != nil {
		err = explain(err)
		if apiErr, ok := errors.AsType[*client.APIError](err); ok && apiErr.Status == http.StatusUnauthorized {
			err = fmt.Errorf("%w: enable the machine again with livepatch-client enable <token>", err)
		}
		return a.checkFailed(st, err)
	}
	st.CheckState, st.CheckError = CheckDone, ""
	if upd.Tier != "" {
		st.Tier = upd.Tier
	}
	st.AdvisedInterval = upd.Check.IntervalMinutes
	st.Offered = upd.Patch
	patchErr := a.handleOffer(ctx, c, api, st, kernel, upd)
	if err := a.saveState(st); err != nil {
		return errors.Join(patchErr, err)
	}
	if st.reportedPatchState() != status.PatchState || st.reportedVersion() != status.PatchVersion {
		// Tell the server at once what became of its offer.
		report := status
		report.PatchState, report.PatchVersion = st.reportedPatchState(), st.reportedVersion()
		if _, err := api.CheckIn(ctx, st.MachineID, token, report); err != nil {
			a.log.Warn("Cannot report the new patch state", "error", explain(err))
		} else {
			st.System = report
			if err := a.saveState(st); err != nil {
				return errors.Join(patchErr, err)
			}
		}
	}
	return patchErr
}

// checkFailed records a failed check-in and returns err.
func (a *Agent) checkFailed(st *State, err error) error {
	st.CheckState, st.CheckError = CheckFailed, err.Error()
	if serr := a.saveState(st); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// reconcile brings the state in line with the machine: a kernel other than the one of the
// last check (a reboot into a new kernel) voids everything patch-related, and an applied
// module that is no longer enabled (a reboot) makes its verified archive a waiting patch
// again.
func (a *Agent) reconcile(st *State, kernel string) {
	if st.System.Kernel != "" && st.System.Kernel != kernel {
		a.dropWaiting(st)
		if st.Applied != nil {
			a.removePatch(st.Applied.Filename)
		}
		st.Applied, st.Offered, st.Reason = nil, nil, ""
		st.PatchState = server.StateNeedsCheck
		return
	}
	if st.Applied != nil && !a.applier.Enabled(st.Applied.Module) {
		if st.Waiting == nil {
			st.Waiting = st.Applied
		} else {
			a.removePatch(st.Applied.Filename)
		}
		st.Applied = nil
		st.PatchState, st.Reason = server.StateUnapplied, ""
	}
}

// handleOffer acts on the server's answer and sets the patch state.
func (a *Agent) handleOffer(ctx context.Context, c *Config, api API, st *State, kernel string, upd server.Update) error {
	offer := upd.Patch
	held := c.holdBack(offer, a.now()) // delay.go
	if held != "" {
		a.log.Info("Patch held back", "version", offer.Version, "reason", held)
		offer = nil
	}
	if offer == nil {
		a.dropWaiting(st)
		st.PatchState, st.Reason = server.StateNothingToApply, held
		switch {
		case st.Applied != nil:
			st.PatchState = server.StateApplied // the module stays loaded until reboot
		case upd.KernelState == server.KernelUpgradeRequired:
			st.PatchState = server.StateKernelUpgradeRequired
		}
		return nil
	}
	if st.Applied != nil && server.CompareVersions(st.Applied.Version, offer.Version) >= 0 {
		// Applied already, or newer than the offer: a loaded patch is never downgraded.
		a.dropWaiting(st)
		st.PatchState, st.Reason = server.StateApplied, ""
		return nil
	}
	if err := checkOffer(offer); err != nil {
		a.dropWaiting(st)
		st.PatchState, st.Reason = server.StateCheckFailed, err.Error()
		return err
	}
	mode := c.EffectiveMode()
	if mode == ModeNormal {
		if err := a.applier.Locked(offer.Module); err != nil {
			a.dropWaiting(st)
			st.PatchState, st.Reason = server.StateApplyFailed, err.Error()
			return err
		}
	}
	if st.Waiting != nil && (st.Waiting.Filename != offer.Filename || st.Waiting.SHA256 != offer.SHA256) {
		a.dropWaiting(st)
	}
	file, err := a.fetch(ctx, c, api, offer, kernel)
	if err != nil {
		a.dropWaiting(st)
		st.PatchState, st.Reason = server.StateCheckFailed, err.Error()
		return err
	}
	st.Waiting = offer
	if mode == ModeNoApply {
		st.PatchState, st.Reason = server.StateUnapplied, ""
		return nil
	}
	return a.applyWaiting(ctx, st, file)
}

// applyWaiting applies the verified archive of st.Waiting and sets the patch state.
func (a *Agent) applyWaiting(ctx context.Context, st *State, file string) error {
	offer := st.Waiting
	if err := a.apply(ctx, file, offer); err != nil {
		// The archive stays verified and waiting: only the lockfile decides whether a
		// later attempt may load it.
		st.PatchState, st.Reason = server.StateApplyFailed, err.Error()
		return err
	}
	if st.Applied != nil && st.Applied.Filename != offer.Filename {
		a.removePatch(st.Applied.Filename)
	}
	st.Applied, st.Waiting = offer, nil
	st.PatchState, st.Reason = server.StateApplied, ""
	return nil
}

var (
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	moduleRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)
)

// checkOffer validates what the offer names before any of it becomes a path.
func checkOffer(o *server.PatchOffer) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("the server's offer of patch %q is invalid: "+format, append([]any{o.Version}, args...)...)
	}
	if _, err := server.ParsePatchFilename(o.Filename); err != nil {
		return bad("%v", err)
	}
	switch {
	case !moduleRE.MatchString(o.Module):
		return bad("module %q is not a kernel module name", o.Module)
	case !sha256RE.MatchString(o.SHA256):
		return bad("sha256 %q is not a SHA-256 digest", o.SHA256)
	case o.Size <= 0 || o.Size > patchfile.MaxModuleSize+patchfile.MaxMetadataSize+1<<20:
		return bad("size %d is out of range", o.Size)
	case o.URL == "":
		return bad("it has no URL")
	}
	return nil
}

// fetch returns the path of the verified archive of offer in the patches directory: the
// one already there if it still verifies, else a fresh download. A download goes to a
// temporary file whose size and SHA-256 are checked against the offer before anything
// opens it; then its metadata must match the offer and this machine. A file that fails
// is deleted.
func (a *Agent) fetch(ctx context.Context, c *Config, api API, offer *server.PatchOffer, kernel string) (string, error) {
	dir := a.path(patchesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", permission(dir, fmt.Errorf("cannot create patches directory: %w", err))
	}
	// The signature covers the offer's filename, size and SHA-256, which the bytes are
	// checked against: an offer that fails it is not worth a download.
	if err := verifySignature(c, offer); err != nil {
		return "", err
	}
	final := filepath.Join(dir, offer.Filename)
	if _, err := os.Stat(final); err == nil {
		if err := a.verifyFile(final, c, offer, kernel); err == nil {
			return final, nil
		}
		os.Remove(final) // corrupted or stale: download it again
	}
	tmp, err := atomicfile.Create(final, 0o600)
	if err != nil {
		return "", fmt.Errorf("cannot create download file: %w", err)
	}
	defer tmp.Close() // discards the download unless it is committed
	if err := a.download(ctx, api, offer, tmp.File); err != nil {
		return "", err
	}
	if err := a.verifyArchive(tmp.Name(), c, offer, kernel); err != nil {
		return "", err
	}
	if err := tmp.Commit(); err != nil {
		return "", fmt.Errorf("cannot store patch %s: %w", offer.Version, err)
	}
	return final, nil
}

// download streams the offer's file into f, checking its size and SHA-256.
func (a *Agent) download(ctx context.Context, api API, offer *server.PatchOffer, f *os.File) error {
	body, size, err := api.Download(ctx, offer.URL, client.MaxSize(offer.Size))
	if err != nil {
		return fmt.Errorf("cannot download patch %s: %w", offer.Version, explain(err))
	}
	defer body.Close()
	if size >= 0 && size != offer.Size {
		return verifyFailed(offer, "size mismatch: the server sends %d bytes, want %d", size, offer.Size)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, offer.Size+1))
	if _, ok := errors.AsType[*client.TooLargeError](err); ok {
		return verifyFailed(offer, "size mismatch: got more than %d bytes", offer.Size)
	}
	if err != nil {
		return fmt.Errorf("cannot download patch %s: %w", offer.Version, err)
	}
	if n != offer.Size {
		if n > offer.Size {
			return verifyFailed(offer, "size mismatch: got more than %d bytes", offer.Size)
		}
		return verifyFailed(offer, "size mismatch: got %d bytes, want %d", n, offer.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != offer.SHA256 {
		return verifyFailed(offer, "checksum mismatch: got %s want %s", got, offer.SHA256)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot download patch %s: %w", offer.Version, err)
	}
	return nil
}

func verifyFailed(offer *server.PatchOffer, format string, args ...any) error {
	return fmt.Errorf("patch %s failed verification: "+format, append([]any{offer.Version}, args...)...)
}

// verifyFile checks a stored archive as a download is checked.
func (a *Agent) verifyFile(path string, c *Config, offer *server.PatchOffer, kernel string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open patch %s: %w", offer.Version, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, offer.Size+1))
	f.Close()
	switch {
	case err != nil:
		return fmt.Errorf("cannot read patch %s: %w", offer.Version, err)
	case n != offer.Size:
		return verifyFailed(offer, "size mismatch: the stored file has %d bytes, want %d", n, offer.Size)
	case hex.EncodeToString(h.Sum(nil)) != offer.SHA256:
		return verifyFailed(offer, "checksum mismatch: got %s want %s", hex.EncodeToString(h.Sum(nil)), offer.SHA256)
	}
	if err := verifySignature(c, offer); err != nil {
		return err
	}
	return a.verifyArchive(path, c, offer, kernel)
}

// verifyArchive checks the contents of an archive whose bytes are verified: its metadata
// must agree with its filename, the offer and this machine, and hold the offered module.
func (a *Agent) verifyArchive(path string, c *Config, offer *server.PatchOffer, kernel string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open patch %s: %w", offer.Version, err)
	}
	defer f.Close()
	info, err := patchfile.Check(f, offer.Filename)
	if err != nil {
		return verifyFailed(offer, "%v", err)
	}
	m := info.Metadata
	abi, flavour, _ := server.SplitKernelRelease(kernel)
	arch := a.sys.Architecture()
	var problems []string
	differ := func(what, got, want string) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s is %q, want %q", what, got, want))
		}
	}
	differ("version", m.Version, offer.Version)
	differ("module", m.Module, offer.Module)
	differ("kernel", server.KernelABI(m.Kernel), abi)
	differ("flavour", m.Flavour, flavour)
	differ("architecture", m.Architecture, arch)
	if len(problems) > 0 {
		return verifyFailed(offer, "its metadata does not match this machine and the offer: %s", strings.Join(problems, "; "))
	}
	return nil
}

// verifySignature checks, when trusted-key is set, that the offer carries the signature
// of one of its keys (those of the server the patches originate from, at the top of a sync
// chain) over its filename, SHA-256 and size. Together with the size and SHA-256 checks of
// the bytes, a server that does not hold such a key cannot get a patch of its own making
// applied. Without trusted-key, nothing is checked.
func verifySignature(c *Config, offer *server.PatchOffer) error {
	if c.TrustedKey == "" {
		return nil
	}
	keys, err := parseTrustedKeys(c.TrustedKey)
	if err != nil {
		return err
	}
	key := keys[0]
	if sig := offer.Signature; sig != nil && len(keys) > 1 {
		if key = server.KeyFor(keys, sig.KeyID); key == nil {
			return verifyFailed(offer, "%v: the patch is signed by key %s, not by a trusted key (%s)", server.ErrBadSignature, sig.KeyID, server.KeyIDs(keys))
		}
	}
	if err := server.VerifyPatch(key, offer.Signature, offer.Filename, offer.SHA256, offer.Size); err != nil {
		return verifyFailed(offer, "%v", err)
	}
	return nil
}

// apply extracts the offer's module from a verified archive and loads it.
func (a *Agent) apply(ctx context.Context, archive string, offer *server.PatchOffer) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("cannot open patch %s: %w", offer.Version, err)
	}
	data, err := patchfile.Module(f, offer.Module)
	f.Close()
	if err != nil {
		return fmt.Errorf("cannot extract module of patch %s: %w", offer.Version, err)
	}
	ko := a.path(filepath.Join(patchesDir, offer.Module+".ko"))
	if err := os.WriteFile(ko, data, 0o600); err != nil {
		return fmt.Errorf("cannot extract module of patch %s: %w", offer.Version, err)
	}
	defer os.Remove(ko)
	// A stop request must not interrupt an insertion half-way.
	return a.applier.Apply(context.WithoutCancel(ctx), offer.Module, offer.Version, ko)
}

// dropWaiting forgets the waiting patch and deletes its archive.
func (a *Agent) dropWaiting(st *State) {
	if st.Waiting == nil {
		return
	}
	if st.Applied == nil || st.Applied.Filename != st.Waiting.Filename {
		a.removePatch(st.Waiting.Filename)
	}
	st.Waiting = nil
}

// removePatch deletes an archive from the patches directory.
func (a *Agent) removePatch(filename string) {
	if filename != "" && filename == filepath.Base(filename) {
		os.Remove(a.path(filepath.Join(patchesDir, filename)))
	}
}

// applyCached applies the waiting verified patch without contacting the server, after
// checking its archive again (mode no-refresh, after a reboot).
func (a *Agent) applyCached(ctx context.Context, c *Config) (*State, error) {
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := a.loadState()
	if err != nil {
		return nil, err
	}
	kernel, err := a.kernel(c)
	if err != nil {
		return st, err
	}
	a.reconcile(st, kernel)
	var applyErr error
	if st.Waiting != nil {
		file := a.path(filepath.Join(patchesDir, st.Waiting.Filename))
		if err := a.verifyFile(file, c, st.Waiting, kernel); err != nil {
			a.dropWaiting(st)
			st.PatchState, st.Reason = server.StateCheckFailed, err.Error()
			applyErr = err
		} else if err := a.applier.Locked(st.Waiting.Module); err != nil {
			st.PatchState, st.Reason = server.StateApplyFailed, err.Error()
			applyErr = err
		} else {
			applyErr = a.applyWaiting(ctx, st, file)
		}
	}
	return st, errors.Join(applyErr, a.saveState(st))
}

// Run is the daemon: it checks at once, then every check interval and whenever hup
// receives, until ctx is done (SIGTERM), when it returns nil. Failed checks are logged
// and do not stop it. The interval is check-interval when set, else what the server
// advises, else 60 minutes; 0 turns periodic checks off. The configuration is read again
// before every check, so config changes need no restart.
func (a *Agent) Run(ctx context.Context, hup <-chan os.Signal) error {
	a.log.Info("Livepatch client started", "version", Version, "state-dir", a.dir)
	for {
		interval := a.tick(ctx)
		var (
			timer *time.Timer
			fire  <-chan time.Time
		)
		if interval > 0 {
			timer = time.NewTimer(interval)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			a.log.Info("Livepatch client stopped")
			return nil
		case <-hup:
			a.log.Info("Checking now: SIGHUP received")
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// tick does what the mode says once and returns the time until the next tick (0: none).
func (a *Agent) tick(ctx context.Context) time.Duration {
	c, err := a.LoadConfig()
	if err != nil {
		a.log.Error("Cannot load config", "error", err)
		return DefaultCheckInterval * time.Minute
	}
	var st *State
	switch mode := c.EffectiveMode(); mode {
	case ModeStop:
		a.log.Debug("Mode stop: doing nothing")
	case ModeNoRefresh:
		st, err = a.applyCached(ctx, c)
		if err != nil {
			a.log.Error("Cannot apply the verified patch", "error", err)
		}
	default:
		st, err = a.Refresh(ctx)
		switch {
		case errors.Is(err, ErrNotEnabled):
			a.log.Info("Machine is not enabled: waiting for livepatch-client enable")
		case err != nil:
			a.log.Error("Check failed", "error", err)
		default:
			a.log.Info("Checked", "patch-state", st.PatchState, "version", st.reportedVersion(), "tier", st.Tier)
		}
	}
	minutes, explicit := c.IntervalMinutes()
	if !explicit && st != nil && st.AdvisedInterval > 0 {
		minutes = st.AdvisedInterval
	}
	return time.Duration(minutes) * time.Minute
}
