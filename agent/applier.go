package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Applier loads livepatch modules into the running kernel.
type Applier interface {
	// Enabled reports whether the named livepatch module is loaded and enabled.
	Enabled(module string) bool
	// Locked returns a *LockedError when a lockfile forbids applying module.
	Locked(module string) error
	// Apply loads the module in file (the module's .ko) and confirms that the kernel
	// enabled it. It returns a *LockedError without touching the kernel when a lockfile
	// says an earlier attempt at this module crashed or failed.
	Apply(ctx context.Context, module, version, file string) error
}

// Runner runs a command and returns its combined output; tests replace it.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs commands with os/exec.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// KernelApplier applies patches with insmod and checks them in sysfs. A lockfile
// LockDir/<module>.lock is written before insertion and removed once the kernel reports the
// module enabled: one left behind by a crash during insertion, or rewritten with the reason
// of a failed attempt, stops later attempts at that module (the crash-loop guard). Deleting
// the lockfile allows a new attempt.
type KernelApplier struct {
	SysfsDir string // /sys/kernel/livepatch
	LockDir  string
	Run      Runner
	Now      func() time.Time
}

// LockedError says a module is not applied because of its lockfile.
type LockedError struct {
	Module string
	Lock   string // the lockfile's path
	Reason string // what the lockfile says
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("not applying module %s again: %s (remove %s to retry)", e.Module, e.Reason, e.Lock)
}

// ErrNoLivepatch means the running kernel has no livepatch support.
var ErrNoLivepatch = errors.New("the running kernel has no livepatch support")

const lockStarted = "inserting"

// Enabled reports whether SysfsDir/<module>/enabled reads 1.
func (a *KernelApplier) Enabled(module string) bool {
	data, err := os.ReadFile(filepath.Join(a.SysfsDir, module, "enabled"))
	return err == nil && strings.TrimSpace(string(data)) == "1"
}

func (a *KernelApplier) lockPath(module string) string {
	return filepath.Join(a.LockDir, module+".lock")
}

// Locked implements Applier: it returns a *LockedError when the module's lockfile exists.
func (a *KernelApplier) Locked(module string) error {
	data, err := os.ReadFile(a.lockPath(module))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read lockfile: %w", err)
	}
	reason := strings.TrimSpace(string(data))
	if rest, ok := strings.CutPrefix(reason, lockStarted); ok {
		reason = "the client stopped while inserting it" + rest + ", which may have crashed the machine"
	}
	return &LockedError{Module: module, Lock: a.lockPath(module), Reason: reason}
}

// Apply implements Applier.
func (a *KernelApplier) Apply(ctx context.Context, module, version, file string) error {
	if err := a.Locked(module); err != nil {
		return err
	}
	if a.Enabled(module) {
		return nil
	}
	if fi, err := os.Stat(a.SysfsDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s is missing", ErrNoLivepatch, a.SysfsDir)
	}
	if err := os.MkdirAll(a.LockDir, 0o755); err != nil {
		return fmt.Errorf("cannot create lock directory: %w", err)
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	lock := a.lockPath(module)
	started := fmt.Sprintf("%s version %s at %s\n", lockStarted, version, now().UTC().Format(time.RFC3339))
	if err := writeSynced(lock, []byte(started)); err != nil {
		return err
	}
	fail := func(err error) error {
		// Keep the lockfile, now saying why: the module is not tried again.
		reason := fmt.Sprintf("applying version %s failed at %s: %v\n", version, now().UTC().Format(time.RFC3339), err)
		if werr := writeSynced(lock, []byte(reason)); werr != nil {
			return errors.Join(err, werr)
		}
		return err
	}
	out, err := a.Run(ctx, "insmod", file)
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return fail(fmt.Errorf("insmod %s: %w", filepath.Base(file), err))
	}
	if !a.Enabled(module) {
		status := "is missing"
		if data, err := os.ReadFile(filepath.Join(a.SysfsDir, module, "enabled")); err == nil {
			status = fmt.Sprintf("reads %q", string(bytes.TrimSpace(data)))
		}
		return fail(fmt.Errorf("module %s was inserted but %s %s, want 1", module, filepath.Join(a.SysfsDir, module, "enabled"), status))
	}
	if err := os.Remove(lock); err != nil {
		return fmt.Errorf("cannot remove lockfile: %w", err)
	}
	return nil
}

// writeSynced writes a small file and flushes it and its directory entry to disk, so
// that it survives a crash right after.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("cannot write lockfile: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot write lockfile: %w", err)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("cannot sync lock directory: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("cannot sync lock directory: %w", err)
	}
	return nil
}
