package agent

import (
	"bytes"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// statusNow is the clock of the status tests: 52 seconds after statusState's last check.
var statusNow = time.Date(2024, 5, 2, 12, 0, 52, 0, time.UTC)

// statusPatch is the patch of the status tests.
func statusPatch() *server.PatchOffer {
	return &server.PatchOffer{
		Version:  "107.1",
		Filename: "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2",
		URL:      "http://10.0.0.1/patches/livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2",
		SHA256:   "7d0e8cacb1a0c1d8c3c2c1e6f6f6b1a1d0e8cacb1a0c1d8c3c2c1e6f6f6b1a1d",
		Size:     4096,
		Module:   "lkp_Ubuntu_5_15_0_107_117_generic_107_1",
		Fixes: []server.Fix{
			{Name: "CVE-2024-1086", Description: "use-after-free in netfilter nf_tables", Bug: "LP: #2051000"},
			{Name: "CVE-2024-26581"},
		},
	}
}

// statusState returns the state of an enabled machine with patch 107.1 applied.
func statusState() *State {
	patch := statusPatch()
	return &State{
		Enabled:    true,
		Server:     "http://10.0.0.1",
		MachineID:  testMachineID,
		Tier:       "stable",
		EnabledAt:  time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC),
		LastCheck:  time.Date(2024, 5, 2, 12, 0, 0, 0, time.UTC),
		CheckState: CheckDone,
		System: server.Status{
			Kernel:        "5.15.0-107-generic",
			Architecture:  "amd64",
			CPUModel:      "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
			BootTime:      time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC),
			Uptime:        100852,
			ClientVersion: Version,
			PatchState:    server.StateApplied,
			PatchVersion:  "107.1",
		},
		Mode:       ModeNormal,
		PatchState: server.StateApplied,
		Offered:    patch,
		Applied:    patch,
	}
}

func TestStatusHumane(t *testing.T) {
	tests := []struct {
		name    string
		state   func(st *State)
		verbose bool
		want    string
	}{{
		name: "applied",
		want: `
last check: 52 seconds ago
kernel: 5.15.0-107-generic
server check-in: succeeded
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ✓ all applicable livepatch modules inserted
patch version: 107.1
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}, {
		name:    "applied verbose",
		verbose: true,
		want: `
last check: 52 seconds ago
kernel: 5.15.0-107-generic
server check-in: succeeded
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ✓ all applicable livepatch modules inserted
patch version: 107.1
tier: stable
machine id: 0123456789abcdef0123456789abcdef
server: http://10.0.0.1
mode: normal
client version: 0.1.0
architecture: amd64
cpu model: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
boot time: 2024-05-01T08:00:00Z
uptime: 28h0m52s
fixes:
  * CVE-2024-1086: use-after-free in netfilter nf_tables (LP: #2051000)
  * CVE-2024-26581
`[1:],
	}, {
		name: "no-apply waiting",
		state: func(st *State) {
			st.Mode, st.PatchState, st.Waiting, st.Applied = ModeNoApply, server.StateUnapplied, st.Applied, nil
		},
		verbose: true,
		want: `
last check: 52 seconds ago
kernel: 5.15.0-107-generic
server check-in: succeeded
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ⧗ livepatches are installed, but the module is not yet applied
waiting patch: 107.1 (downloaded and verified; not applied in mode no-apply)
tier: stable
machine id: 0123456789abcdef0123456789abcdef
server: http://10.0.0.1
mode: no-apply
client version: 0.1.0
architecture: amd64
cpu model: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
boot time: 2024-05-01T08:00:00Z
uptime: 28h0m52s
fixes (not applied):
  * CVE-2024-1086: use-after-free in netfilter nf_tables (LP: #2051000)
  * CVE-2024-26581
`[1:],
	}, {
		name: "tampered download",
		state: func(st *State) {
			st.Applied, st.PatchState = nil, server.StateCheckFailed
			st.Reason = "patch 107.1 failed verification: checksum mismatch: got 0a0b want 7d0e"
		},
		want: `
last check: 52 seconds ago
kernel: 5.15.0-107-generic
server check-in: succeeded
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ✗ patch 107.1 failed verification: checksum mismatch: got 0a0b want 7d0e
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}, {
		name: "apply failed",
		state: func(st *State) {
			st.Applied, st.PatchState = nil, server.StateApplyFailed
			st.Reason = "insmod lkp.ko: exit status 1"
		},
		want: `
last check: 52 seconds ago
kernel: 5.15.0-107-generic
server check-in: succeeded
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ✗ applying patch 107.1 failed: insmod lkp.ko: exit status 1
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}, {
		name: "nothing to apply",
		state: func(st *State) {
			st.Applied, st.Offered, st.PatchState = nil, nil, server.StateNothingToApply
			st.LastCheck = statusNow.Add(-37 * time.Minute)
		},
		want: `
last check: 37 minutes ago
kernel: 5.15.0-107-generic
server check-in: succeeded
patch state: ✓ no livepatches needed for this kernel yet
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}, {
		name: "server unreachable",
		state: func(st *State) {
			st.CheckState = CheckFailed
			st.CheckError = "cannot reach livepatch server at http://10.0.0.1: connection refused"
			st.LastCheck = statusNow.Add(-3 * time.Hour)
		},
		want: `
last check: 3 hours ago
kernel: 5.15.0-107-generic
server check-in: failed: cannot reach livepatch server at http://10.0.0.1: connection refused
kernel state: ✓ kernel series 5.15 is covered by Livepatch
patch state: ✓ all applicable livepatch modules inserted
patch version: 107.1
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}, {
		name: "just enabled",
		state: func(st *State) {
			st.Applied, st.Offered, st.PatchState, st.CheckState = nil, nil, "", CheckNeeded
			st.LastCheck = time.Time{}
		},
		want: `
last check: never
kernel: 5.15.0-107-generic
server check-in: not yet
patch state: ⧗ not checked yet
tier: stable
machine id: 0123456789abcdef0123456789abcdef
`[1:],
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := statusState()
			if tt.state != nil {
				tt.state(st)
			}
			var buf bytes.Buffer
			if err := WriteStatus(&buf, st, FormatHumane, tt.verbose, statusNow); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("status:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	st := statusState()
	st.Mode, st.PatchState, st.Waiting, st.Applied = ModeNoApply, server.StateUnapplied, st.Applied, nil
	want := `
{
  "Architecture": "amd64",
  "Boot-Time": "2024-05-01T08:00:00Z",
  "CPU-Model": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
  "Client-Version": "0.1.0",
  "Last-Check": "2024-05-02T12:00:00Z",
  "Machine-Id": "0123456789abcdef0123456789abcdef",
  "Mode": "no-apply",
  "Server": "http://10.0.0.1",
  "Status": [
    {
      "Kernel": "5.15.0-107-generic",
      "Livepatch": {
        "CheckState": "checked",
        "Fixes": [
          {
            "Bug": "LP: #2051000",
            "Description": "use-after-free in netfilter nf_tables",
            "Name": "CVE-2024-1086",
            "Patched": false
          },
          {
            "Bug": "",
            "Description": "",
            "Name": "CVE-2024-26581",
            "Patched": false
          }
        ],
        "State": "unapplied",
        "Version": "",
        "WaitingVersion": "107.1"
      },
      "Running": true
    }
  ],
  "Uptime": "28h0m52s",
  "tier": "stable"
}
`[1:]
	for _, verbose := range []bool{false, true} {
		var buf bytes.Buffer
		if err := WriteStatus(&buf, st, FormatJSON, verbose, statusNow); err != nil {
			t.Fatal(err)
		}
		if got := buf.String(); got != want {
			t.Errorf("verbose=%v:\n%s\nwant:\n%s", verbose, got, want)
		}
	}

	// A failed check says why.
	st = statusState()
	st.Applied, st.Offered, st.PatchState = nil, nil, server.StateNeedsCheck
	st.CheckState, st.CheckError = CheckFailed, "cannot reach livepatch server at http://10.0.0.1: connection refused"
	st.System.CPUModel, st.System.BootTime, st.System.Uptime = "", time.Time{}, 0
	want = `
{
  "Architecture": "amd64",
  "Check-Error": "cannot reach livepatch server at http://10.0.0.1: connection refused",
  "Client-Version": "0.1.0",
  "Last-Check": "2024-05-02T12:00:00Z",
  "Machine-Id": "0123456789abcdef0123456789abcdef",
  "Mode": "normal",
  "Server": "http://10.0.0.1",
  "Status": [
    {
      "Kernel": "5.15.0-107-generic",
      "Livepatch": {
        "CheckState": "check-failed",
        "Fixes": [],
        "State": "needs-check",
        "Version": ""
      },
      "Running": true
    }
  ],
  "tier": "stable"
}
`[1:]
	var buf bytes.Buffer
	if err := WriteStatus(&buf, st, FormatJSON, false, statusNow); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("failed check:\n%s\nwant:\n%s", got, want)
	}
}

func TestStatusYAML(t *testing.T) {
	want := `
client-version: 0.1.0
machine-id: 0123456789abcdef0123456789abcdef
architecture: amd64
cpu-model: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
last-check: 2024-05-02T12:00:00Z
boot-time: 2024-05-01T08:00:00Z
uptime: 28h0m52s
server: http://10.0.0.1
server-check-in: succeeded
mode: normal
status:
  - kernel: 5.15.0-107-generic
    running: true
    livepatch:
      checkState: checked
      patchState: applied
      version: "107.1"
      fixes: |-
        * CVE-2024-1086
        * CVE-2024-26581
tier: stable
`[1:]
	var buf bytes.Buffer
	if err := WriteStatus(&buf, statusState(), FormatYAML, true, statusNow); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("yaml:\n%s\nwant:\n%s", got, want)
	}

	st := statusState()
	st.Applied, st.PatchState = nil, server.StateCheckFailed
	st.Reason = "patch 107.1 failed verification: checksum mismatch: got 0a0b want 7d0e"
	st.System.BootTime, st.System.CPUModel, st.System.Uptime = time.Time{}, "", 0
	want = `
client-version: 0.1.0
machine-id: 0123456789abcdef0123456789abcdef
architecture: amd64
last-check: 2024-05-02T12:00:00Z
server: http://10.0.0.1
server-check-in: succeeded
mode: normal
status:
  - kernel: 5.15.0-107-generic
    running: true
    livepatch:
      checkState: checked
      patchState: check-failed
      version: ""
      reason: 'patch 107.1 failed verification: checksum mismatch: got 0a0b want 7d0e'
      fixes: ""
tier: stable
`[1:]
	buf.Reset()
	if err := WriteStatus(&buf, st, FormatYAML, false, statusNow); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("yaml:\n%s\nwant:\n%s", got, want)
	}
}

func TestAgo(t *testing.T) {
	now := statusNow
	for d, want := range map[time.Duration]string{
		0:                "just now",
		time.Second:      "1 second ago",
		59 * time.Second: "59 seconds ago",
		time.Minute:      "1 minute ago",
		90 * time.Minute: "1 hour ago",
		47 * time.Hour:   "47 hours ago",
		72 * time.Hour:   "3 days ago",
	} {
		if got := ago(now.Add(-d), now); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}
