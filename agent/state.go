package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Check states: the outcome of the last check-in, as the real client's CheckState.
const (
	CheckNeeded = "needs-check"
	CheckDone   = "checked"
	CheckFailed = "check-failed"
)

// State is what the client remembers between runs, state.json in the state directory. It
// holds no secret (the machine token has its own file) so that status works without root.
type State struct {
	Enabled   bool      `json:"enabled"`
	Server    string    `json:"server,omitempty"`     // the server the machine enabled with
	MachineID string    `json:"machine-id,omitempty"` // the id it enabled with
	Tier      string    `json:"tier,omitempty"`
	EnabledAt time.Time `json:"enabled-at,omitzero"`

	// LastCheck is when the last check-in was attempted; CheckState and CheckError say how
	// it went.
	LastCheck  time.Time `json:"last-check,omitzero"`
	CheckState string    `json:"check-state,omitempty"`
	CheckError string    `json:"check-error,omitempty"`
	// System is what the last check reported about the machine.
	System server.Status `json:"system,omitzero"`
	Mode   string        `json:"mode,omitempty"` // the mode of the last check
	// AdvisedInterval is the check interval in minutes the server advised, 0 for none.
	AdvisedInterval int `json:"advised-interval,omitempty"`

	// PatchState is one of the server.State* patch states; Reason says why for
	// apply-failed and check-failed.
	PatchState string `json:"patch-state,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Offered is the last patch the server offered, nil when it offered none.
	Offered *server.PatchOffer `json:"offered,omitempty"`
	// Applied is the patch whose module is loaded and enabled.
	Applied *server.PatchOffer `json:"applied,omitempty"`
	// Waiting is a downloaded and verified patch that is not applied (mode no-apply), kept
	// as Waiting.Filename in the patches directory.
	Waiting *server.PatchOffer `json:"waiting,omitempty"`
}

// reportedPatchState is the patch state to send to the server.
func (s *State) reportedPatchState() string {
	if s.PatchState == "" {
		return server.StateNeedsCheck
	}
	return s.PatchState
}

// reportedVersion is the applied version to send to the server.
func (s *State) reportedVersion() string {
	if s.Applied != nil {
		return s.Applied.Version
	}
	return ""
}

// loadState reads a state file; a missing file is the state of a machine never enabled.
func loadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("cannot read state %s: %w", path, err)
	}
	return &s, nil
}

// save writes the state file atomically, world-readable: it holds no secret.
func (s *State) save(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode state: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), 0o644)
}
