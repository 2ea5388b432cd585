package server

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Causes of a machine's history events.
const (
	// CauseCheckIn: a check-in changed the kernel, patch state or patch version (in the
	// compact history), or any check-in (in the full one).
	CauseCheckIn = "check-in"
	// CauseMove: an administrator moved the machine to another tier.
	CauseMove = "move"
	// CauseEnable: the machine enrolled, or enrolled again.
	CauseEnable = "enable"
)

// MachineEvent is one row of a machine's history: a change of its state, or with the
// full history one check-in. ID orders the events of one kind (changes or check-ins) and
// pages them.
type MachineEvent struct {
	ID           int64     `json:"id"`
	Time         time.Time `json:"time"`
	Cause        string    `json:"cause"`
	Tier         string    `json:"tier,omitempty"` // the tier it was in (changes only)
	Kernel       string    `json:"kernel,omitempty"`
	PatchState   string    `json:"patch-state,omitempty"`
	PatchVersion string    `json:"patch-version,omitempty"`
}

// HistoryFilter selects the events of one machine's history, newest first.
type HistoryFilter struct {
	All    bool  // every check-in, not only the changes
	Before int64 // event id cursor: events with a smaller id; 0: from the newest
	Limit  int   // at least 1
}

// MachineDetail is a machine with its recent changes, newest first.
type MachineDetail struct {
	Machine
	History []MachineEvent `json:"history"`
}

// MachineMove moves the machines a filter selects to a tier.
type MachineMove struct {
	Filter MachineFilter
	Tier   string
	// Batch bounds the machines one transaction moves.
	Batch int
}

// MachineQuery is a machine filter as the API takes it, in the query of the machines
// report and in the body of a bulk move. The ages are relative to the server's clock.
type MachineQuery struct {
	Tier         string   `json:"tier,omitempty"`
	PatchVersion string   `json:"version,omitempty"`
	PatchState   string   `json:"state,omitempty"`
	Kernel       string   `json:"kernel,omitempty"`
	Hostname     string   `json:"hostname,omitempty"`
	Tags         []string `json:"tag,omitempty"` // key=value
	SeenBefore   string   `json:"seen-before,omitempty"`
	SeenAfter    string   `json:"seen-after,omitempty"`
}

// MaxTags bounds the tags of one machine.
const MaxTags = 32

var tagKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)

// CheckTag validates a machine tag: a key of letters, digits, dots, dashes, underscores
// and slashes, and a value of at most 256 printable characters.
func CheckTag(key, value string) error {
	if !tagKeyRE.MatchString(key) {
		return Errorf(CodeInvalid, "invalid tag key %q: use 1-63 letters, digits, dots, dashes, underscores and slashes", key)
	}
	if len(value) > 256 {
		return Errorf(CodeInvalid, "invalid value of tag %q: at most 256 bytes", key)
	}
	for _, r := range value {
		if r < 0x20 || r == 0x7f {
			return Errorf(CodeInvalid, "invalid value of tag %q: control characters are not allowed", key)
		}
	}
	return nil
}

// ParseAge reads an age such as a last-seen filter: a Go duration ("36h", "90m") or a
// number of days ("7d"), positive and at most 100 years.
func ParseAge(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, ok := strings.CutSuffix(s, "d")
		days, aerr := strconv.Atoi(n)
		if !ok || aerr != nil || days > maxAgeDays {
			return 0, Errorf(CodeInvalid, "invalid age %q: want a duration such as 7d, 36h or 90m", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	}
	if d <= 0 || d > maxAgeDays*24*time.Hour {
		return 0, Errorf(CodeInvalid, "invalid age %q: want a positive duration of at most %d days", s, maxAgeDays)
	}
	return d, nil
}

const maxAgeDays = 36500

// FleetCounts counts the enrolled machines by tier, by patch state and by kernel. A
// machine that has not reported yet counts under NotReported for state and kernel.
type FleetCounts struct {
	ByTier   map[string]int
	ByState  map[string]int
	ByKernel map[string]int // the most used kernels, and OtherKernels for the rest
}

// Labels of FleetCounts beyond tier, state and kernel names.
const (
	NotReported  = "not-reported"
	OtherKernels = "other"
)
