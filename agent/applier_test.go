package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeKernel is a fake sysfs tree and an insmod that "loads" modules into it.
type fakeKernel struct {
	sysfs string
	calls []string
	// enabled is what insmod writes to <module>/enabled; "" makes insmod fail, printing
	// output.
	enabled string
	output  string
}

func newFakeKernel(t *testing.T, root string) *fakeKernel {
	t.Helper()
	k := &fakeKernel{sysfs: filepath.Join(root, "sys/kernel/livepatch"), enabled: "1"}
	if err := os.MkdirAll(k.sysfs, 0o755); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *fakeKernel) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	k.calls = append(k.calls, name+" "+strings.Join(args, " "))
	if name != "insmod" || len(args) != 1 {
		return nil, errors.New("unexpected command")
	}
	if k.enabled == "" {
		return []byte(k.output), errors.New("exit status 1")
	}
	module := strings.TrimSuffix(filepath.Base(args[0]), ".ko")
	if err := os.MkdirAll(filepath.Join(k.sysfs, module), 0o755); err != nil {
		return nil, err
	}
	return nil, os.WriteFile(filepath.Join(k.sysfs, module, "enabled"), []byte(k.enabled+"\n"), 0o644)
}

func fixedClock() time.Time { return time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC) }

func newTestApplier(t *testing.T) (*KernelApplier, *fakeKernel, string) {
	t.Helper()
	root := t.TempDir()
	k := newFakeKernel(t, root)
	a := &KernelApplier{SysfsDir: k.sysfs, LockDir: filepath.Join(root, "locks"), Run: k.run, Now: fixedClock}
	ko := filepath.Join(root, "lkp_test_1.ko")
	if err := os.WriteFile(ko, []byte("\x7fELF"), 0o600); err != nil {
		t.Fatal(err)
	}
	return a, k, ko
}

func TestApplierApplies(t *testing.T) {
	a, k, ko := newTestApplier(t)
	if a.Enabled("lkp_test_1") {
		t.Fatal("enabled before apply")
	}
	if err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !a.Enabled("lkp_test_1") {
		t.Error("not enabled after apply")
	}
	if _, err := os.Stat(filepath.Join(a.LockDir, "lkp_test_1.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lockfile left after success: %v", err)
	}
	// Applying an enabled module again does nothing.
	if err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if len(k.calls) != 1 || k.calls[0] != "insmod "+ko {
		t.Errorf("commands run: %q, want one insmod", k.calls)
	}
}

func TestApplierInsmodFails(t *testing.T) {
	a, k, ko := newTestApplier(t)
	k.enabled, k.output = "", "insmod: ERROR: could not insert module: Invalid module format\n"
	err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	want := "insmod lkp_test_1.ko: exit status 1: insmod: ERROR: could not insert module: Invalid module format"
	if err == nil || err.Error() != want {
		t.Fatalf("Apply error = %v, want %s", err, want)
	}
	// The failure is remembered: the next attempt does not run insmod.
	err = a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	locked, ok := errors.AsType[*LockedError](err)
	if !ok {
		t.Fatalf("second Apply error = %v, want a *LockedError", err)
	}
	wantReason := "applying version 1.1 failed at 2024-05-01T10:00:00Z: " + want
	if locked.Reason != wantReason {
		t.Errorf("reason = %q, want %q", locked.Reason, wantReason)
	}
	if len(k.calls) != 1 {
		t.Errorf("insmod ran %d times, want 1", len(k.calls))
	}
}

func TestApplierNotEnabled(t *testing.T) {
	a, k, ko := newTestApplier(t)
	k.enabled = "0"
	err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	want := `module lkp_test_1 was inserted but ` + filepath.Join(k.sysfs, "lkp_test_1/enabled") + ` reads "0", want 1`
	if err == nil || err.Error() != want {
		t.Fatalf("Apply error = %v, want %s", err, want)
	}
	if err := a.Locked("lkp_test_1"); err == nil {
		t.Error("no lock after a failed apply")
	}
}

func TestApplierCrashLock(t *testing.T) {
	a, k, ko := newTestApplier(t)
	// A crash during insertion leaves the lockfile as it was written before insmod.
	if err := os.MkdirAll(a.LockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(a.LockDir, "lkp_test_1.lock")
	if err := os.WriteFile(lock, []byte("inserting version 1.1 at 2024-04-30T09:00:00Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	want := "not applying module lkp_test_1 again: the client stopped while inserting it version 1.1 at 2024-04-30T09:00:00Z, which may have crashed the machine (remove " + lock + " to retry)"
	if err == nil || err.Error() != want {
		t.Fatalf("Apply error = %v\nwant %s", err, want)
	}
	if len(k.calls) != 0 {
		t.Errorf("insmod ran despite the lock: %q", k.calls)
	}
	// Removing the lockfile allows a new attempt.
	os.Remove(lock)
	if err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko); err != nil {
		t.Fatalf("Apply after removing the lock: %v", err)
	}
}

func TestApplierLockWrittenBeforeInsertion(t *testing.T) {
	a, _, ko := newTestApplier(t)
	var lockDuringInsmod string
	a.Run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		data, _ := os.ReadFile(filepath.Join(a.LockDir, "lkp_test_1.lock"))
		lockDuringInsmod = string(data)
		return nil, errors.New("killed") // as if the machine went down
	}
	a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	if want := "inserting version 1.1 at 2024-05-01T10:00:00Z\n"; lockDuringInsmod != want {
		t.Errorf("lockfile during insmod = %q, want %q", lockDuringInsmod, want)
	}
}

func TestApplierNoLivepatchSupport(t *testing.T) {
	a, k, ko := newTestApplier(t)
	os.RemoveAll(k.sysfs)
	err := a.Apply(t.Context(), "lkp_test_1", "1.1", ko)
	if !errors.Is(err, ErrNoLivepatch) {
		t.Fatalf("Apply error = %v, want ErrNoLivepatch", err)
	}
	if err := a.Locked("lkp_test_1"); err != nil {
		t.Errorf("a kernel without livepatch support locked the module: %v", err)
	}
}
