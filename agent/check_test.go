package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestEnableNoApply(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoApply)
	offer, _ := e.offer(t, "107.1")
	res := e.enable(t)
	if res.CheckErr != nil || !res.Checked || res.Reenabled || res.Tier != "stable" {
		t.Fatalf("Enable result = %+v", res)
	}
	st, err := e.agent.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.PatchState != server.StateUnapplied || st.Waiting == nil || st.Waiting.Version != "107.1" || st.Applied != nil {
		t.Errorf("state after enable: patch state %q, waiting %+v, applied %+v", st.PatchState, st.Waiting, st.Applied)
	}
	if diff := cmp.Diff([]string{offer.Filename}, e.patchFiles(t)); diff != "" {
		t.Errorf("patch files (-want +got):\n%s", diff)
	}
	if len(e.kernel.calls) != 0 {
		t.Errorf("no-apply ran commands: %q", e.kernel.calls)
	}
	// The first check reported needs-check, the second what became of the offer.
	want := []server.Status{{
		Kernel: "5.15.0-107-generic", Architecture: "amd64", CPUModel: "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
		BootTime: time.Unix(1714550400, 0).UTC(), Uptime: 93600, ClientVersion: Version,
		PatchState: server.StateNeedsCheck,
	}}
	want = append(want, want[0])
	want[1].PatchState = server.StateUnapplied
	if diff := cmp.Diff(want, e.api.checkIns); diff != "" {
		t.Errorf("check-ins (-want +got):\n%s", diff)
	}
	if p := perm(t, filepath.Join(e.dir, tokenFile)); p != 0o600 {
		t.Errorf("token file mode %v, want 0600", p)
	}
	if p := perm(t, filepath.Join(e.dir, stateFile)); p != 0o644 {
		t.Errorf("state file mode %v, want 0644", p)
	}
	if data, _ := os.ReadFile(filepath.Join(e.dir, stateFile)); strings.Contains(string(data), e.api.machineToken) {
		t.Error("state.json holds the machine token")
	}

	// A second check keeps the verified file: no new download.
	if _, err := e.agent.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if e.api.downloads != 1 {
		t.Errorf("downloads = %d, want 1", e.api.downloads)
	}
}

func TestEnableAgainReregisters(t *testing.T) {
	e := newTestEnv(t)
	e.enable(t)
	first := e.api.machineToken
	res := e.enable(t)
	if !res.Reenabled {
		t.Error("Reenabled = false")
	}
	token, err := e.agent.readToken()
	if err != nil {
		t.Fatal(err)
	}
	if token == first || token != e.api.machineToken {
		t.Errorf("token after re-enable = %q (first %q, server %q)", token, first, e.api.machineToken)
	}
}

func TestEnableErrors(t *testing.T) {
	e := newTestEnv(t)
	_, err := e.agent.Enable(t.Context(), "wrong")
	if want := "the server refused the token: invalid auth token"; err == nil || err.Error() != want {
		t.Errorf("Enable with a bad token: %v, want %s", err, want)
	}
	e.api.unreachable = true
	_, err = e.agent.Enable(t.Context(), "auth-token")
	if err == nil || err.Error() != errUnreachable.Error() {
		t.Errorf("Enable with the server down: %v", err)
	}
	if _, err := e.agent.State(); !errors.Is(err, ErrNotEnabled) {
		t.Errorf("State after failed enables: %v, want ErrNotEnabled", err)
	}
	if _, err := e.agent.Refresh(t.Context()); !errors.Is(err, ErrNotEnabled) {
		t.Errorf("Refresh of a machine never enabled: %v, want ErrNotEnabled", err)
	}

	e.configure(t, "remote-server", "")
	if _, err := e.agent.Enable(t.Context(), "auth-token"); !errors.Is(err, ErrNoServer) {
		t.Errorf("Enable without remote-server: %v", err)
	}
	e.configure(t, "remote-server", e.serverURL)
	os.Remove(filepath.Join(e.root, "etc/machine-id"))
	_, err = e.agent.Enable(t.Context(), "auth-token")
	if err == nil || !strings.HasPrefix(err.Error(), "cannot find a machine id: ") {
		t.Errorf("Enable without machine id: %v", err)
	}
	e.configure(t, "machine-id", "container-1")
	e.api.unreachable = false
	e.enable(t)
}

func TestApplyNormal(t *testing.T) {
	e := newTestEnv(t)
	offer, _ := e.offer(t, "107.1")
	res := e.enable(t)
	if res.CheckErr != nil {
		t.Fatalf("first check: %v", res.CheckErr)
	}
	st := res.State
	if st.PatchState != server.StateApplied || st.Applied == nil || st.Applied.Version != "107.1" || st.Waiting != nil {
		t.Fatalf("state: %q applied %+v waiting %+v reason %q", st.PatchState, st.Applied, st.Waiting, st.Reason)
	}
	ko := filepath.Join(e.dir, patchesDir, offer.Module+".ko")
	if diff := cmp.Diff([]string{"insmod " + ko}, e.kernel.calls); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(ko); !errors.Is(err, os.ErrNotExist) {
		t.Error("extracted module left behind")
	}
	if got := e.api.lastCheckIn(); got.PatchState != server.StateApplied || got.PatchVersion != "107.1" {
		t.Errorf("last report: %q %q, want applied 107.1", got.PatchState, got.PatchVersion)
	}

	// A reboot unloads the module: the next check applies the stored archive again
	// without downloading it.
	os.RemoveAll(filepath.Join(e.kernel.sysfs, offer.Module))
	if st, err := e.agent.State(); err != nil || st.PatchState != server.StateUnapplied {
		t.Errorf("status after reboot: %v %+v", err, st)
	}
	st, err := e.agent.Refresh(t.Context())
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if st.PatchState != server.StateApplied || len(e.kernel.calls) != 2 || e.api.downloads != 1 {
		t.Errorf("after reboot: state %q, %d insmods, %d downloads", st.PatchState, len(e.kernel.calls), e.api.downloads)
	}

	// A newer patch replaces the archive of the old one.
	newer, _ := e.offer(t, "107.2")
	st, err = e.agent.Refresh(t.Context())
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if st.Applied.Version != "107.2" {
		t.Errorf("applied %s, want 107.2", st.Applied.Version)
	}
	if diff := cmp.Diff([]string{newer.Filename}, e.patchFiles(t)); diff != "" {
		t.Errorf("patch files (-want +got):\n%s", diff)
	}

	// An older offer (the newer patch was blocked) never downgrades a loaded patch.
	e.offer(t, "107.1")
	if st, err = e.agent.Refresh(t.Context()); err != nil || st.Applied.Version != "107.2" || st.PatchState != server.StateApplied {
		t.Errorf("after an older offer: %v, %+v", err, st.Applied)
	}
	// Nothing offered: the loaded patch stays applied.
	e.api.offer = nil
	if st, err = e.agent.Refresh(t.Context()); err != nil || st.PatchState != server.StateApplied {
		t.Errorf("nothing offered: %v, %q", err, st.PatchState)
	}
}

func TestVerificationFailures(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte)
		reason func(o *server.PatchOffer, data []byte) string
	}{{
		name: "checksum",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			bad := slices.Clone(data)
			bad[len(bad)/2] ^= 0xff
			e.api.files[o.URL] = bad
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			bad := slices.Clone(data)
			bad[len(bad)/2] ^= 0xff
			return "patch 107.1 failed verification: checksum mismatch: got " + sha(bad) + " want " + o.SHA256
		},
	}, {
		name: "short",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			e.api.files[o.URL] = data[:100]
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return "patch 107.1 failed verification: size mismatch: got 100 bytes, want " + itoa(o.Size)
		},
	}, {
		name: "long",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			e.api.files[o.URL] = append(slices.Clone(data), 0)
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return "patch 107.1 failed verification: size mismatch: got more than " + itoa(o.Size) + " bytes"
		},
	}, {
		name: "other kernel",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			// A consistent archive for another kernel, offered with the right digest.
			other, otherData := makePatch(t, "5.15.0-108.118", "generic", "107.1", "amd64")
			*o = *other
			e.api.files[o.URL] = otherData
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return `patch 107.1 failed verification: its metadata does not match this machine and the offer: kernel is "5.15.0-108", want "5.15.0-107"`
		},
	}, {
		name: "not an archive",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			junk := []byte("this is not a patch")
			o.SHA256, o.Size = sha(junk), int64(len(junk))
			e.api.files[o.URL] = junk
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return "patch 107.1 failed verification: invalid patch archive: not a bzip2-compressed tar: bzip2 data invalid: bad magic value"
		},
	}, {
		name: "missing",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			delete(e.api.files, o.URL)
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return "cannot download patch 107.1: the server answered: no such patch"
		},
	}, {
		name: "path in module name",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			o.Module = "../../../etc/evil"
		},
		reason: func(o *server.PatchOffer, data []byte) string {
			return `the server's offer of patch "107.1" is invalid: module "../../../etc/evil" is not a kernel module name`
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			o, data := e.offer(t, "107.1")
			tt.tamper(t, e, o, data)
			want := tt.reason(o, data)
			res := e.enable(t)
			if res.CheckErr == nil || res.CheckErr.Error() != want {
				t.Fatalf("first check error:\n%v\nwant:\n%s", res.CheckErr, want)
			}
			st, err := e.agent.State()
			if err != nil {
				t.Fatal(err)
			}
			if st.PatchState != server.StateCheckFailed || st.Reason != want || st.Applied != nil || st.Waiting != nil {
				t.Errorf("state %q reason %q applied %+v waiting %+v", st.PatchState, st.Reason, st.Applied, st.Waiting)
			}
			if st.CheckState != CheckDone {
				t.Errorf("check state %q: the check-in itself succeeded", st.CheckState)
			}
			if files := e.patchFiles(t); len(files) != 0 {
				t.Errorf("files left in patches: %q", files)
			}
			if len(e.kernel.calls) != 0 {
				t.Errorf("a patch that failed verification was applied: %q", e.kernel.calls)
			}
			if got := e.api.lastCheckIn(); got.PatchState != server.StateCheckFailed {
				t.Errorf("reported %q, want check-failed", got.PatchState)
			}
		})
	}
}

func TestStoredArchiveCorrupted(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoApply)
	o, _ := e.offer(t, "107.1")
	e.enable(t)
	// Someone alters the stored archive: the next check downloads it again.
	path := filepath.Join(e.dir, patchesDir, o.Filename)
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := e.agent.Refresh(t.Context())
	if err != nil || st.PatchState != server.StateUnapplied || e.api.downloads != 2 {
		t.Errorf("after corruption: %v, state %q, %d downloads", err, st.PatchState, e.api.downloads)
	}
}

func TestCrashLockStopsApply(t *testing.T) {
	e := newTestEnv(t)
	o, _ := e.offer(t, "107.1")
	lock := filepath.Join(e.dir, locksDir, o.Module+".lock")
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, []byte("inserting version 107.1 at 2024-05-01T09:00:00Z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := e.enable(t)
	want := "not applying module " + o.Module + " again: the client stopped while inserting it version 107.1 at 2024-05-01T09:00:00Z, which may have crashed the machine (remove " + lock + " to retry)"
	if res.CheckErr == nil || res.CheckErr.Error() != want {
		t.Fatalf("check error:\n%v\nwant:\n%s", res.CheckErr, want)
	}
	if res.State.PatchState != server.StateApplyFailed || res.State.Reason != want {
		t.Errorf("state %q reason %q", res.State.PatchState, res.State.Reason)
	}
	if len(e.kernel.calls) != 0 || e.api.downloads != 0 {
		t.Errorf("locked module: %d commands, %d downloads", len(e.kernel.calls), e.api.downloads)
	}
}

func TestApplyFailureIsNotRetried(t *testing.T) {
	e := newTestEnv(t)
	e.offer(t, "107.1")
	e.kernel.enabled, e.kernel.output = "", "insmod: ERROR: could not insert module: Operation not permitted"
	res := e.enable(t)
	if res.State.PatchState != server.StateApplyFailed {
		t.Fatalf("state %q", res.State.PatchState)
	}
	if !strings.HasSuffix(res.State.Reason, "insmod: ERROR: could not insert module: Operation not permitted") {
		t.Errorf("reason %q", res.State.Reason)
	}
	e.kernel.enabled = "1"
	st, err := e.agent.Refresh(t.Context())
	var locked *LockedError
	if !errors.As(err, &locked) || st.PatchState != server.StateApplyFailed || len(e.kernel.calls) != 1 {
		t.Errorf("second check: %v, state %q, %d insmods", err, st.PatchState, len(e.kernel.calls))
	}
	if got := e.api.lastCheckIn(); got.PatchState != server.StateApplyFailed {
		t.Errorf("reported %q, want apply-failed", got.PatchState)
	}
}

func TestNoLivepatchSupport(t *testing.T) {
	e := newTestEnv(t)
	e.offer(t, "107.1")
	os.RemoveAll(e.kernel.sysfs)
	res := e.enable(t)
	if !errors.Is(res.CheckErr, ErrNoLivepatch) || res.State.PatchState != server.StateApplyFailed {
		t.Errorf("check error %v, state %q", res.CheckErr, res.State.PatchState)
	}
	// Switching to no-apply (what containers use) makes the verified patch wait.
	e.configure(t, "mode", ModeNoApply)
	st, err := e.agent.Refresh(t.Context())
	if err != nil || st.PatchState != server.StateUnapplied || st.Waiting == nil {
		t.Errorf("no-apply: %v, state %q", err, st.PatchState)
	}
}

func TestNothingToApply(t *testing.T) {
	e := newTestEnv(t)
	res := e.enable(t)
	if res.CheckErr != nil || res.State.PatchState != server.StateNothingToApply {
		t.Errorf("check error %v, state %q", res.CheckErr, res.State.PatchState)
	}
	if got := e.api.lastCheckIn(); got.PatchState != server.StateNothingToApply || len(e.api.checkIns) != 2 {
		t.Errorf("check-ins %d, last %q", len(e.api.checkIns), got.PatchState)
	}
	// Unchanged state: one check-in per check.
	e.agent.Refresh(t.Context())
	if len(e.api.checkIns) != 3 {
		t.Errorf("check-ins = %d, want 3", len(e.api.checkIns))
	}
}

// TestKernelUpgradeRequired: with no patch offered and the server saying newer kernels
// have patches, the machine reports kernel-upgrade-required and status says to upgrade.
func TestKernelUpgradeRequired(t *testing.T) {
	e := newTestEnv(t)
	e.api.kernelState = server.KernelUpgradeRequired
	res := e.enable(t)
	if res.CheckErr != nil || res.State.PatchState != server.StateKernelUpgradeRequired {
		t.Fatalf("check error %v, state %q", res.CheckErr, res.State.PatchState)
	}
	if got := e.api.lastCheckIn(); got.PatchState != server.StateKernelUpgradeRequired {
		t.Errorf("reported %q", got.PatchState)
	}
}

func TestCheckFailures(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoApply)
	e.offer(t, "107.1")
	e.enable(t)
	e.api.unreachable = true
	st, err := e.agent.Refresh(t.Context())
	if err == nil || st.CheckState != CheckFailed || st.CheckError != errUnreachable.Error() {
		t.Errorf("unreachable: %v, %q %q", err, st.CheckState, st.CheckError)
	}
	if st.PatchState != server.StateUnapplied {
		t.Errorf("a failed check-in changed the patch state to %q", st.PatchState)
	}
	e.api.unreachable = false
	e.api.machineToken = "revoked"
	_, err = e.agent.Refresh(t.Context())
	want := "the server refused the token: invalid machine token: enable the machine again with livepatch-client enable <token>"
	if err == nil || err.Error() != want {
		t.Errorf("refused token: %v, want %s", err, want)
	}
}

func TestKernelChange(t *testing.T) {
	e := newTestEnv(t)
	o, _ := e.offer(t, "107.1")
	e.enable(t)
	// Reboot into a new kernel: no patch for it yet.
	e.release = "5.15.0-108-generic"
	os.RemoveAll(filepath.Join(e.kernel.sysfs, o.Module))
	e.api.offer = nil
	st, err := e.agent.Refresh(t.Context())
	if err != nil || st.PatchState != server.StateNothingToApply || st.Applied != nil {
		t.Errorf("after kernel change: %v, %q, applied %+v", err, st.PatchState, st.Applied)
	}
	if files := e.patchFiles(t); len(files) != 0 {
		t.Errorf("old kernel's patches left: %q", files)
	}
	if got := e.api.checkIns[len(e.api.checkIns)-2]; got.Kernel != "5.15.0-108-generic" || got.PatchState != server.StateNeedsCheck {
		t.Errorf("first report on the new kernel: %q %q", got.Kernel, got.PatchState)
	}
}

func TestModes(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoRefresh)
	e.offer(t, "107.1")
	res := e.enable(t)
	if res.Checked || res.Mode != ModeNoRefresh || len(e.api.checkIns) != 0 {
		t.Errorf("no-refresh enable checked: %+v", res)
	}
	for _, mode := range []string{ModeNoRefresh, ModeStop} {
		e.configure(t, "mode", mode)
		_, err := e.agent.Refresh(t.Context())
		want := "checks are off in mode " + mode + ": run livepatch-client config mode=normal to turn them on"
		if err == nil || err.Error() != want {
			t.Errorf("Refresh in %s: %v", mode, err)
		}
	}
}

func TestNoRefreshAppliesVerifiedPatch(t *testing.T) {
	e := newTestEnv(t)
	o, _ := e.offer(t, "107.1")
	e.enable(t)
	// Reboot with mode no-refresh: the verified archive is applied again, offline.
	os.RemoveAll(filepath.Join(e.kernel.sysfs, o.Module))
	e.configure(t, "mode", ModeNoRefresh)
	checkIns := len(e.api.checkIns)
	c, err := e.agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.agent.applyCached(t.Context(), c)
	if err != nil || st.PatchState != server.StateApplied || len(e.kernel.calls) != 2 {
		t.Errorf("applyCached: %v, state %q, %d insmods", err, st.PatchState, len(e.kernel.calls))
	}
	if len(e.api.checkIns) != checkIns {
		t.Error("no-refresh contacted the server")
	}
}

func TestDisable(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoApply)
	e.offer(t, "107.1")
	e.enable(t)
	res, err := e.agent.Disable(t.Context())
	if err != nil || !res.WasEnabled || res.Refused != "" || e.api.disabled != 1 {
		t.Fatalf("Disable: %v %+v", err, res)
	}
	if _, err := os.Stat(filepath.Join(e.dir, tokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("token file left after disable")
	}
	if files := e.patchFiles(t); len(files) != 0 {
		t.Errorf("waiting patch left after disable: %q", files)
	}
	if _, err := e.agent.State(); !errors.Is(err, ErrNotEnabled) {
		t.Errorf("State after disable: %v", err)
	}
	// Disabling again is a no-op.
	if res, err := e.agent.Disable(t.Context()); err != nil || res.WasEnabled {
		t.Errorf("second Disable: %v %+v", err, res)
	}

	// The server no longer knows the machine: forget it locally anyway.
	e.enable(t)
	e.api.machineToken = "other"
	res, err = e.agent.Disable(t.Context())
	if err != nil || res.Refused != "invalid machine token" {
		t.Errorf("Disable with a refused token: %v %+v", err, res)
	}
	if _, err := e.agent.State(); !errors.Is(err, ErrNotEnabled) {
		t.Errorf("State after a refused disable: %v", err)
	}
	e.api.machineToken = "" // the server does not know the machine

	// The server is down: the machine stays enabled.
	e.enable(t)
	e.api.unreachable = true
	if _, err := e.agent.Disable(t.Context()); err == nil || !strings.HasSuffix(err.Error(), "(the machine is still enabled)") {
		t.Errorf("Disable with the server down: %v", err)
	}
}

func TestConfigChangeForgetsToken(t *testing.T) {
	e := newTestEnv(t)
	e.enable(t)
	c, err := e.agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	c.Set("remote-server", "http://other.test")
	notes, err := e.agent.SaveConfig(c)
	if err != nil || len(notes) != 1 || !strings.HasPrefix(notes[0], "remote-server changed: ") {
		t.Errorf("SaveConfig: %v %q", err, notes)
	}
	if _, err := e.agent.State(); !errors.Is(err, ErrNotEnabled) {
		t.Errorf("State after changing server: %v", err)
	}
}

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// originKey is the key of the server the test patches originate from; trusted-key holds
// its public half in the signature tests.
var originKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func originPub() string {
	return base64.StdEncoding.EncodeToString(originKey.Public().(ed25519.PublicKey))
}

func signOffer(key ed25519.PrivateKey, o *server.PatchOffer) {
	o.Signature = server.SignPatch(key, o.Filename, o.SHA256, o.Size)
}

func TestTrustedKeyAcceptsSignedPatch(t *testing.T) {
	e := newTestEnv(t)
	e.configure(t, "mode", ModeNoApply, "trusted-key", originPub())
	o, _ := e.offer(t, "107.1")
	signOffer(originKey, o)
	res := e.enable(t)
	if res.CheckErr != nil {
		t.Fatalf("first check: %v", res.CheckErr)
	}
	st, err := e.agent.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.PatchState != server.StateUnapplied || st.Waiting == nil || st.Waiting.Signature == nil {
		t.Fatalf("state %q reason %q waiting %+v", st.PatchState, st.Reason, st.Waiting)
	}
	var out strings.Builder
	if err := WriteStatus(&out, st, "humane", true, e.now); err != nil {
		t.Fatal(err)
	}
	if want := "patch signed by: key " + server.KeyID(originKey.Public().(ed25519.PublicKey)) + "\n"; !strings.Contains(out.String(), want) {
		t.Errorf("status --verbose lacks %q:\n%s", want, out.String())
	}
	// The waiting patch is checked again, signature included, before it is applied from
	// the cache; a signature that no longer verifies (the key changed) stops it.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	e.configure(t, "mode", ModeNoRefresh, "trusted-key", base64.StdEncoding.EncodeToString(other.Public().(ed25519.PublicKey)))
	c, err := e.agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	st, err = e.agent.applyCached(t.Context(), c)
	want := "patch 107.1 failed verification: bad signature: the patch is signed by key " + server.KeyID(originKey.Public().(ed25519.PublicKey)) + ", not by the trusted key " + server.KeyID(other.Public().(ed25519.PublicKey))
	if err == nil || err.Error() != want || st.PatchState != server.StateCheckFailed || st.Reason != want || st.Waiting != nil {
		t.Fatalf("applyCached with another trusted key: %v; state %q reason %q waiting %+v", err, st.PatchState, st.Reason, st.Waiting)
	}
	if len(e.kernel.calls) != 0 || len(e.patchFiles(t)) != 0 {
		t.Errorf("kernel calls %q, files %q: a patch signed by an untrusted key must be dropped, not applied", e.kernel.calls, e.patchFiles(t))
	}
}

// TestTrustedKeysDuringRotation: with two trusted keys (an origin rotating its signing
// key), a patch signed by either is accepted; one signed by neither names them both.
func TestTrustedKeysDuringRotation(t *testing.T) {
	newKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	newPub := base64.StdEncoding.EncodeToString(newKey.Public().(ed25519.PublicKey))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, ed25519.SeedSize))
	for _, tt := range []struct {
		name   string
		signer ed25519.PrivateKey
		reason string
	}{
		{"old key", originKey, ""},
		{"new key", newKey, ""},
		{"neither", other, "patch 107.1 failed verification: bad signature: the patch is signed by key " +
			server.KeyID(other.Public().(ed25519.PublicKey)) + ", not by a trusted key (" +
			server.KeyID(originKey.Public().(ed25519.PublicKey)) + ", " + server.KeyID(newKey.Public().(ed25519.PublicKey)) + ")"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(t, "mode", ModeNoApply, "trusted-key", originPub()+","+newPub)
			o, _ := e.offer(t, "107.1")
			signOffer(tt.signer, o)
			res := e.enable(t)
			if tt.reason == "" {
				if res.CheckErr != nil {
					t.Fatalf("first check: %v", res.CheckErr)
				}
				return
			}
			if res.CheckErr == nil || res.CheckErr.Error() != tt.reason {
				t.Fatalf("first check error:\n%v\nwant:\n%s", res.CheckErr, tt.reason)
			}
		})
	}
}

func TestSignatureFailures(t *testing.T) {
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	keyID := server.KeyID(originKey.Public().(ed25519.PublicKey))
	tests := []struct {
		name   string
		tamper func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte)
		reason string
	}{{
		name:   "unsigned",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {},
		reason: "patch 107.1 failed verification: bad signature: the patch is not signed, and the trusted key " + keyID + " requires a signature",
	}, {
		name: "another key",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			signOffer(other, o)
		},
		reason: "patch 107.1 failed verification: bad signature: the patch is signed by key " + server.KeyID(other.Public().(ed25519.PublicKey)) + ", not by the trusted key " + keyID,
	}, {
		name: "another key under the trusted key's id",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			signOffer(other, o)
			o.Signature.KeyID = keyID
		},
		reason: "patch 107.1 failed verification: bad signature: the patch signature does not verify with the trusted key " + keyID,
	}, {
		// A server that holds another file under the name of a signed one cannot reuse
		// the signature: it covers the SHA-256.
		name: "signature of other contents",
		tamper: func(t *testing.T, e *testEnv, o *server.PatchOffer, data []byte) {
			signOffer(originKey, o)
			evil, evilData := makePatch(t, "5.15.0-107.118", "generic", "107.1", "amd64")
			o.SHA256, o.Size = evil.SHA256, evil.Size
			e.api.files[o.URL] = evilData
		},
		reason: "patch 107.1 failed verification: bad signature: the patch signature does not verify with the trusted key " + keyID,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(t, "trusted-key", originPub())
			o, data := e.offer(t, "107.1")
			tt.tamper(t, e, o, data)
			res := e.enable(t)
			if res.CheckErr == nil || res.CheckErr.Error() != tt.reason {
				t.Fatalf("first check error:\n%v\nwant:\n%s", res.CheckErr, tt.reason)
			}
			st, err := e.agent.State()
			if err != nil {
				t.Fatal(err)
			}
			if st.PatchState != server.StateCheckFailed || st.Reason != tt.reason || st.Applied != nil || st.Waiting != nil {
				t.Errorf("state %q reason %q applied %+v waiting %+v", st.PatchState, st.Reason, st.Applied, st.Waiting)
			}
			if e.api.downloads != 0 {
				t.Errorf("%d downloads of an offer whose signature fails", e.api.downloads)
			}
			if files := e.patchFiles(t); len(files) != 0 || len(e.kernel.calls) != 0 {
				t.Errorf("files %q, kernel calls %q after a signature failure", files, e.kernel.calls)
			}
		})
	}
}
