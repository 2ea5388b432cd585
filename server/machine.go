package server

import (
	"regexp"
	"slices"
	"strings"
	"time"
)

// Patch states, as the real client reports them.
const (
	StateApplied               = "applied"
	StateApplyFailed           = "apply-failed"
	StateUnapplied             = "unapplied"
	StateNothingToApply        = "nothing-to-apply"
	StateCheckFailed           = "check-failed"
	StateNeedsCheck            = "needs-check"
	StateKernelUpgradeRequired = "kernel-upgrade-required"
	StateUnknown               = "unknown"
)

// PatchStates lists every valid patch state.
var PatchStates = []string{
	StateApplied, StateApplyFailed, StateUnapplied, StateNothingToApply,
	StateCheckFailed, StateNeedsCheck, StateKernelUpgradeRequired, StateUnknown,
}

// Status is what a machine reports at every check-in.
type Status struct {
	Kernel        string    `json:"kernel"` // release as uname -r: 5.15.0-107-generic
	Architecture  string    `json:"architecture"`
	CPUModel      string    `json:"cpu-model,omitempty"`
	BootTime      time.Time `json:"boot-time,omitzero"`
	Uptime        int64     `json:"uptime,omitempty"` // seconds
	ClientVersion string    `json:"client-version,omitempty"`
	PatchState    string    `json:"patch-state"`
	PatchVersion  string    `json:"patch-version,omitempty"`
	// Hostname is the machine's name, unless its client keeps it private.
	Hostname string `json:"hostname,omitempty"`
	// Cloud is where the machine runs, when its client can tell (cloud-init).
	Cloud Cloud `json:"cloud,omitzero"`
}

// Cloud is the cloud placement of a machine, as cloud-init knows it and the real client
// reports it (Cloud-Enabled: cloud, region, az).
type Cloud struct {
	Name   string `json:"cloud,omitempty"`
	Region string `json:"region,omitempty"`
	Zone   string `json:"az,omitempty"`
}

var (
	machineIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	hostnameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{0,253}$`)
	cloudRE     = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)
	archNameRE  = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
)

// CheckMachineID validates a machine id (the contents of /etc/machine-id, or similar).
func CheckMachineID(id string) error {
	if !machineIDRE.MatchString(id) {
		return Errorf(CodeInvalid, "invalid machine id %q: use 1-128 letters, digits, dashes and underscores", id)
	}
	return nil
}

// Check validates a status report.
func (s Status) Check() error {
	if _, _, err := SplitKernelRelease(s.Kernel); err != nil {
		return err
	}
	if !archNameRE.MatchString(s.Architecture) {
		return Errorf(CodeInvalid, "invalid architecture %q", s.Architecture)
	}
	if !slices.Contains(PatchStates, s.PatchState) {
		return Errorf(CodeInvalid, "invalid patch state %q: want one of %v", s.PatchState, PatchStates)
	}
	if s.PatchVersion != "" && !versionRE.MatchString(s.PatchVersion) {
		return Errorf(CodeInvalid, "invalid patch version %q", s.PatchVersion)
	}
	if len(s.CPUModel) > 256 || len(s.ClientVersion) > 64 || s.Uptime < 0 {
		return Errorf(CodeInvalid, "invalid status: cpu-model, client-version or uptime out of range")
	}
	// Check-ins are recorded together: a value the database would refuse must be refused
	// here, or it would fail the check-ins recorded with it.
	if strings.ContainsRune(s.CPUModel, 0) || strings.ContainsRune(s.ClientVersion, 0) {
		return Errorf(CodeInvalid, "invalid status: cpu-model and client-version must not contain NUL characters")
	}
	if err := s.CheckIdentity(); err != nil {
		return err
	}
	if !s.BootTime.IsZero() && (s.BootTime.Before(minBootTime) || s.BootTime.After(maxBootTime)) {
		return Errorf(CodeInvalid, "invalid status: boot-time %s is out of range", s.BootTime.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckIdentity validates the hostname and cloud placement of a status report.
func (s Status) CheckIdentity() error {
	if !hostnameRE.MatchString(s.Hostname) {
		return Errorf(CodeInvalid, "invalid hostname %q: use at most 253 letters, digits, dots, dashes and underscores", s.Hostname)
	}
	for _, v := range []string{s.Cloud.Name, s.Cloud.Region, s.Cloud.Zone} {
		if !cloudRE.MatchString(v) {
			return Errorf(CodeInvalid, "invalid cloud placement %q: use at most 64 letters, digits, dots, dashes and underscores", v)
		}
	}
	return nil
}

// The range of a plausible boot time.
var (
	minBootTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	maxBootTime = time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Machine is the latest known state of an enrolled machine.
type Machine struct {
	ID        string    `json:"id"`
	Tier      string    `json:"tier"`
	TokenID   string    `json:"token-id"` // the auth token label it enabled with
	EnabledAt time.Time `json:"enabled-at"`
	// FirstSeen is when the machine first enrolled (EnabledAt when it enrolled before
	// first enrolments were recorded).
	FirstSeen time.Time `json:"first-seen,omitzero"`
	LastSeen  time.Time `json:"last-seen,omitzero"`
	// StateSince is when its kernel, patch state or patch version last changed.
	StateSince time.Time         `json:"state-since,omitzero"`
	Tags       map[string]string `json:"tags,omitempty"`
	Status
}

// MachineFilter selects machines in reports and bulk moves; zero fields match every
// machine.
type MachineFilter struct {
	Tier         string
	PatchVersion string
	PatchState   string
	Kernel       string
	Hostname     string
	Tags         map[string]string // every tag must match
	SeenBefore   time.Time         // last seen before (never seen counts as before)
	SeenAfter    time.Time         // last seen at or after
	After        string            // machine id cursor: list machines with a greater id
	Limit        int               // 0: no limit
}

// KernelCount is one line of the kernels-in-use report.
type KernelCount struct {
	Kernel       string `json:"kernel"`
	Architecture string `json:"architecture"`
	Machines     int    `json:"machines"`
}

// Update is the answer to a check-in: the patch the machine should have, if any, and
// whether its kernel is covered.
type Update struct {
	Tier        string      `json:"tier"`
	Patch       *PatchOffer `json:"patch,omitempty"`
	KernelState string      `json:"kernel-state,omitempty"`
	Check       CheckAdvice `json:"check"`
}

// Kernel states a check-in answer carries, as the hosted service's kernel support query
// names them.
const (
	// KernelSupported: the server holds patches for this kernel, in some tier.
	KernelSupported = "supported"
	// KernelUpgradeRequired: no patch exists for this kernel but newer kernels of the same
	// flavour and architecture have patches: the machine should move to a newer kernel.
	KernelUpgradeRequired = "kernel-upgrade-required"
	// KernelUnknown: the server has no patches for this flavour and architecture.
	KernelUnknown = "unknown"
)

// CheckAdvice tells the client when to check in next.
type CheckAdvice struct {
	IntervalMinutes int `json:"interval-minutes,omitempty"`
}

// PatchOffer describes the patch a machine should download and apply.
type PatchOffer struct {
	Version  string `json:"version"`
	Filename string `json:"filename"`
	URL      string `json:"url"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Module   string `json:"module"`
	Fixes    []Fix  `json:"fixes,omitempty"`
	// Signature is the origin's signature of the file, for clients with a trusted key.
	Signature *PatchSignature `json:"signature,omitempty"`
	// Published is when the patch became available on this server, for the client's
	// cutoff-date and patch-delay.
	Published time.Time `json:"published,omitzero"`
}
