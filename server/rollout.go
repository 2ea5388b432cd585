package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RolloutPolicy says, for one tier, when its machines get a patch the tier has: the
// canaries first, then at a bounded rate and with a bounded number in flight, inside
// maintenance windows, until failures halt it. Zero fields impose nothing.
type RolloutPolicy struct {
	Tier string `json:"tier"`
	// Canaries is how many machines get a new patch first; CanaryPercent the same as a
	// percentage of the tier's machines (at least one). At most one of them is set.
	Canaries      int `json:"canaries,omitempty"`
	CanaryPercent int `json:"canary-percent,omitempty"`
	// Soak is how long after the last canary applied the patch the rest wait.
	Soak Duration `json:"soak,omitempty"`
	// RateLimit is the most machines offered the patch per RatePeriod.
	RateLimit  int      `json:"rate-limit,omitempty"`
	RatePeriod Duration `json:"rate-period,omitempty"`
	// MaxInFlight is the most machines offered the patch that have not applied it yet.
	MaxInFlight int `json:"max-in-flight,omitempty"`
	// FailureThreshold halts the rollout when this percentage of the machines offered the
	// patch failed to apply it or timed out (0: never halt).
	FailureThreshold int `json:"failure-threshold,omitempty"`
	// ApplyTimeout is how long an offered machine has to apply the patch before it counts
	// as timed out (default DefaultApplyTimeout).
	ApplyTimeout Duration `json:"apply-timeout,omitempty"`
	// Windows are the maintenance windows, in TimeZone (an IANA name, default UTC); none:
	// offers at any time.
	Windows  []Window `json:"windows,omitempty"`
	TimeZone string   `json:"time-zone,omitempty"`
}

// DefaultApplyTimeout is a policy's apply timeout when it sets none: two check-in
// intervals of the real client and some margin.
const DefaultApplyTimeout = 3 * time.Hour

// Bounds of a policy's values.
const (
	maxPolicyCount = 1_000_000
	maxPolicyTime  = 365 * 24 * time.Hour
	maxWindows     = 32
)

// Window is a maintenance window: on Days (mon..sun; none: every day), from Start to End
// ("HH:MM", End excluded; an End before Start runs past midnight).
type Window struct {
	Days  []string `json:"days,omitempty"`
	Start string   `json:"start"`
	End   string   `json:"end"`
}

var weekdays = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// Duration is a time.Duration written as Go writes durations ("90m", "2h0m0s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %.32q: write it as 30m, 2h or 1h30m", b)
	}
	*d = Duration(v)
	return nil
}

// Check validates a policy, naming the first value out of range.
func (p RolloutPolicy) Check() error {
	if err := CheckTierName(p.Tier); err != nil {
		return err
	}
	invalid := func(format string, args ...any) error {
		return Errorf(CodeInvalid, "invalid rollout policy for tier %q: "+format, append([]any{p.Tier}, args...)...)
	}
	for name, v := range map[string]int{"canaries": p.Canaries, "rate-limit": p.RateLimit, "max-in-flight": p.MaxInFlight} {
		if v < 0 || v > maxPolicyCount {
			return invalid("%s must be between 0 and %d, not %d", name, maxPolicyCount, v)
		}
	}
	for name, v := range map[string]int{"canary-percent": p.CanaryPercent, "failure-threshold": p.FailureThreshold} {
		if v < 0 || v > 100 {
			return invalid("%s must be a percentage between 0 and 100, not %d", name, v)
		}
	}
	if p.Canaries > 0 && p.CanaryPercent > 0 {
		return invalid("set canaries or canary-percent, not both")
	}
	for name, v := range map[string]Duration{"soak": p.Soak, "rate-period": p.RatePeriod, "apply-timeout": p.ApplyTimeout} {
		if v < 0 || time.Duration(v) > maxPolicyTime {
			return invalid("%s must be between 0 and %s, not %s", name, maxPolicyTime, time.Duration(v))
		}
	}
	if (p.RateLimit > 0) != (p.RatePeriod > 0) {
		return invalid("rate-limit and rate-period go together (such as 10 per 1h)")
	}
	if p.RatePeriod > 0 && time.Duration(p.RatePeriod) < time.Minute {
		return invalid("rate-period must be at least 1m, not %s", time.Duration(p.RatePeriod))
	}
	if len(p.Windows) > maxWindows {
		return invalid("at most %d windows, not %d", maxWindows, len(p.Windows))
	}
	if _, err := p.Location(); err != nil {
		return invalid("%v", err)
	}
	for i, w := range p.Windows {
		if _, _, err := w.minutes(); err != nil {
			return invalid("window %d: %v", i+1, err)
		}
		for _, d := range w.Days {
			if !slices.Contains(weekdays, d) {
				return invalid("window %d: day %.16q is not one of %s", i+1, d, strings.Join(weekdays, ", "))
			}
		}
	}
	return nil
}

// Location returns the policy's time zone.
func (p RolloutPolicy) Location() (*time.Location, error) {
	if p.TimeZone == "" {
		return time.UTC, nil
	}
	if len(p.TimeZone) > 64 {
		return nil, fmt.Errorf("time-zone is longer than 64 characters")
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("unknown time-zone %q: use an IANA name such as Europe/Paris", p.TimeZone)
	}
	return loc, nil
}

func (w Window) minutes() (start, end int, err error) {
	parse := func(s string) (int, error) {
		t, err := time.Parse("15:04", s)
		if err != nil {
			return 0, fmt.Errorf("time %.16q is not HH:MM", s)
		}
		return t.Hour()*60 + t.Minute(), nil
	}
	if start, err = parse(w.Start); err != nil {
		return 0, 0, err
	}
	if end, err = parse(w.End); err != nil {
		return 0, 0, err
	}
	if start == end {
		return 0, 0, fmt.Errorf("start and end are both %s", w.Start)
	}
	return start, end, nil
}

// InWindow reports whether t is inside one of the policy's windows in loc (always, when
// it has none). A window that runs past midnight belongs to the day it starts.
func (p RolloutPolicy) InWindow(t time.Time, loc *time.Location) bool {
	if len(p.Windows) == 0 {
		return true
	}
	t = t.In(loc)
	now := t.Hour()*60 + t.Minute()
	today, yesterday := weekdays[t.Weekday()], weekdays[(t.Weekday()+6)%7]
	on := func(w Window, day string) bool { return len(w.Days) == 0 || slices.Contains(w.Days, day) }
	for _, w := range p.Windows {
		start, end, err := w.minutes()
		if err != nil {
			continue
		}
		if start < end {
			if on(w, today) && now >= start && now < end {
				return true
			}
			continue
		}
		if (on(w, today) && now >= start) || (on(w, yesterday) && now < end) {
			return true
		}
	}
	return false
}

// CanaryCount is how many canaries the policy asks for in a tier of machines machines.
func (p RolloutPolicy) CanaryCount(machines int) int {
	if p.CanaryPercent > 0 {
		return max(1, (machines*p.CanaryPercent+99)/100)
	}
	return p.Canaries
}

// Rollout states.
const (
	RolloutActive = "active"
	RolloutPaused = "paused"
	RolloutHalted = "halted"
)

// Rollout is where the rollout of one patch version in one tier stands.
type Rollout struct {
	Tier      string    `json:"tier"`
	Version   string    `json:"version"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	StartedAt time.Time `json:"started-at"`
	// CanariesDone is when every canary had applied the patch; zero while they have not.
	CanariesDone time.Time `json:"canaries-done,omitzero"`
	// Claimed counts the offer slots units claimed: offers made and slots a unit holds.
	Claimed int `json:"claimed"`
	// PeriodStart and PeriodClaimed count the slots claimed in the current rate period.
	PeriodStart   time.Time `json:"period-start,omitzero"`
	PeriodClaimed int       `json:"period-claimed"`
	// HaltBaseline is the failures and time-outs counted when the operator last resumed:
	// only those beyond it count toward the next halt.
	HaltBaseline int `json:"halt-baseline"`
	RolloutCounts
}

// RolloutCounts counts the machines offered a patch by update state.
type RolloutCounts struct {
	Canaries        int `json:"canaries"`
	CanariesApplied int `json:"canaries-applied"`
	Offered         int `json:"offered"`
	// Downloaded counts the machines that reported, after the offer, holding the patch
	// verified but not applied (patch state unapplied).
	Downloaded int `json:"downloaded"`
	Applied    int `json:"applied"`
	Failed     int `json:"failed"`
	TimedOut   int `json:"timed-out"`
	// Machines is how many machines the tier has.
	Machines int `json:"machines"`
}

// InFlight is how many machines were offered the patch and neither applied it nor failed.
func (c RolloutCounts) InFlight() int { return max(0, c.Offered-c.Applied-c.Failed) }

// Update states of a machine offered a patch (RolloutMachine.State), from what it
// reported since the offer: offered (nothing yet), downloaded (the patch verified, not
// applied), applied, failed (apply-failed or check-failed), timed out (not applied within
// the policy's apply timeout).
const (
	UpdateOffered    = "offered"
	UpdateDownloaded = "downloaded"
	UpdateApplied    = "applied"
	UpdateFailed     = "failed"
	UpdateTimedOut   = "timed-out"
)

// RolloutOffer is one machine offered a patch by a rollout.
type RolloutOffer struct {
	MachineID string    `json:"machine-id"`
	OfferedAt time.Time `json:"offered-at"`
}

// RolloutMachine is the update state of one machine offered a patch.
type RolloutMachine struct {
	RolloutOffer
	Canary       bool   `json:"canary,omitempty"`
	State        string `json:"state"`
	PatchState   string `json:"patch-state,omitempty"`
	PatchVersion string `json:"patch-version,omitempty"`
}

// SlotClaim asks for offer slots of a rollout: up to Want new ones, giving back Unused
// slots a unit held and did not use.
type SlotClaim struct {
	Tier, Version string
	Want, Unused  int
}

// RolloutStore keeps the rollout policies and the state of the rollouts. Its reads and
// claims run off the check-in path (package httpapi keeps the decision in memory).
type RolloutStore interface {
	// SetRolloutPolicy records a tier's policy, replacing any; not-found for no such tier.
	SetRolloutPolicy(ctx context.Context, p RolloutPolicy) error
	// DeleteRolloutPolicy forgets a tier's policy: its machines get patches at once again.
	DeleteRolloutPolicy(ctx context.Context, tier string) error
	// RolloutPolicies lists every policy by tier.
	RolloutPolicies(ctx context.Context) ([]RolloutPolicy, error)
	// Rollouts lists the rollouts with their counts at now, of tier when not empty.
	Rollouts(ctx context.Context, tier string, now time.Time) ([]Rollout, error)
	// RolloutsOf lists those of refs that have started, with their counts at now: what a
	// unit follows, without counting every rollout ever started.
	RolloutsOf(ctx context.Context, refs []RolloutRef, now time.Time) ([]Rollout, error)
	// RolloutMachines lists the machines offered version in tier with their update state.
	RolloutMachines(ctx context.Context, tier, version string, now time.Time) ([]RolloutMachine, error)
	// SetRolloutState pauses, resumes or halts a rollout, creating it when it has not
	// started; it reports whether the state changed. Resuming sets the halt baseline.
	SetRolloutState(ctx context.Context, tier, version, state, reason string, now time.Time) (bool, error)
	// HaltRollout halts the active rollout of version in p's tier when p.HaltReason holds
	// of it at now, counted under its row lock (not from an earlier read, which an
	// operator's resume may have overtaken); it returns the reason, "" when it did not.
	HaltRollout(ctx context.Context, p RolloutPolicy, version string, now time.Time) (string, error)
	// ClaimSlots starts the rollout when it has not started and grants up to c.Want offer
	// slots that the policy allows at now (canaries, rate, in flight), atomically across
	// units; it returns how many it granted.
	ClaimSlots(ctx context.Context, c SlotClaim, p RolloutPolicy, now time.Time) (int, error)
	// RecordOffers records offers made (a machine offered twice keeps its first time).
	RecordOffers(ctx context.Context, tier, version string, offers []RolloutOffer) error
	// RolloutOffers returns the machines offered version in tier (a unit that forgot a
	// rollout loads them again when the rollout matters again).
	RolloutOffers(ctx context.Context, tier, version string) ([]string, error)
	// OffersSince returns the offers recorded after the cursor, with the next cursor.
	OffersSince(ctx context.Context, cursor int64, limit int) (offers []RolloutOfferRecord, next int64, err error)
}

// RolloutRef names a rollout: the rollout of Version in Tier.
type RolloutRef struct{ Tier, Version string }

// RolloutOfferRecord is a recorded offer, as units load them.
type RolloutOfferRecord struct {
	Tier, Version, MachineID string
}

// Grant says how many of want new offer slots the policy allows for rollout r at now, and
// returns r as the grant leaves it (claimed counts, rate period, end of the canary phase).
// The store calls it holding the rollout's row, so that units never together exceed it.
func (p RolloutPolicy) Grant(r Rollout, want int, now time.Time) (int, Rollout) {
	if r.State != RolloutActive || want <= 0 {
		return 0, r
	}
	allowed := want
	if target := p.CanaryCount(r.Machines); target > 0 && r.CanariesDone.IsZero() {
		if r.Canaries < target || r.CanariesApplied < r.Canaries {
			// The canary phase: its slots only, the rate and in-flight bounds still apply.
			allowed = min(allowed, max(0, target-r.Claimed))
		} else {
			r.CanariesDone = now
		}
	}
	if !r.CanariesDone.IsZero() && now.Before(r.CanariesDone.Add(time.Duration(p.Soak))) {
		return 0, r
	}
	if p.RateLimit > 0 {
		// A period starts once, when the first unit's clock reaches it: a unit whose
		// clock is behind counts its claims in the period the row is in, never resets it.
		if start := now.UTC().Truncate(time.Duration(p.RatePeriod)); start.After(r.PeriodStart) {
			r.PeriodStart, r.PeriodClaimed = start, 0
		}
		allowed = min(allowed, max(0, p.RateLimit-r.PeriodClaimed))
	}
	if p.MaxInFlight > 0 {
		inFlight := r.Claimed - r.Applied - r.Failed
		allowed = min(allowed, max(0, p.MaxInFlight-inFlight))
	}
	r.Claimed += allowed
	r.PeriodClaimed += allowed
	return allowed, r
}

// HaltReason returns why the rollout must halt under p, or "" when it need not: the
// failures and time-outs beyond the halt baseline reached the policy's threshold.
func (p RolloutPolicy) HaltReason(r Rollout) string {
	bad := r.Failed + r.TimedOut - r.HaltBaseline
	if p.FailureThreshold == 0 || r.State != RolloutActive || r.Offered == 0 || bad <= 0 {
		return ""
	}
	if bad*100 < p.FailureThreshold*r.Offered {
		return ""
	}
	return fmt.Sprintf("%d failed and %d timed out of %d offered: at or above the %d%% failure threshold",
		r.Failed, r.TimedOut, r.Offered, p.FailureThreshold)
}

// CheckVersion validates a patch version such as "107.1".
func CheckVersion(v string) error {
	if len(v) > 64 || !versionRE.MatchString(v) {
		return Errorf(CodeInvalid, "invalid patch version %.64q: want numbers separated by dots, such as 107.1", v)
	}
	return nil
}

// SelectVersion returns the patch of version for a machine in tier running kernel release
// on arch, when the tier has it: what a machine that a rollout holds back keeps running.
func (c *Catalog) SelectVersion(tier, release, arch, version string) (p Patch, ok bool) {
	pos := c.positions[tier]
	abi, flavour, err := SplitKernelRelease(release)
	if pos == 0 || version == "" || err != nil {
		return Patch{}, false
	}
	for _, e := range c.byKey[catalogKey{abi, flavour, strings.ToLower(arch)}] {
		if e.position >= pos && e.patch.Version == version {
			return e.patch, true
		}
	}
	return Patch{}, false
}
