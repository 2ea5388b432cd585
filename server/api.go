package server

import "time"

// The request and answer bodies of the API that are not domain types, one Go type each:
// httpapi writes or reads them, server/client (the admin CLI, the machine client, the
// charm's calls) the other way round.

// LoginResponse is the answer to POST /v1/admin/login: a session token for later admin
// requests, and when it expires.
type LoginResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires-at"`
}

// EnableResponse is the answer to POST /v1/client/{id}: the machine's token and tier.
type EnableResponse struct {
	MachineToken string `json:"machine-token"`
	Tier         string `json:"tier"`
}

// AuthTokenRequest is the body of POST /v1/admin/auth-tokens.
type AuthTokenRequest struct {
	ID          string     `json:"id"`
	Tier        string     `json:"tier"`
	ExpiresAt   *time.Time `json:"expires-at,omitempty"`
	MaxMachines int        `json:"max-machines,omitempty"` // 0: unlimited
}

// SyncTokenRequest is the body of POST /v1/admin/sync-tokens.
type SyncTokenRequest struct {
	Name       string     `json:"name"`
	Tier       string     `json:"tier"`
	ValidUntil *time.Time `json:"valid-until,omitempty"`
}

// StorageFile is one file of GET /v1/admin/storage/patches and whether the database
// records it.
type StorageFile struct {
	StoredFile
	Recorded bool `json:"recorded"`
}

// RefreshRequest is the body of POST /v1/admin/storage/refresh.
type RefreshRequest struct {
	// Prune forgets the records whose file is gone from storage; without it they are only
	// reported.
	Prune bool `json:"prune"`
}

// RefreshResult is the answer to a storage refresh: what it changed and found.
type RefreshResult struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	// Missing lists the records whose file is gone from storage, kept because the refresh
	// did not prune.
	Missing []string `json:"missing"`
	// Mismatched lists the recorded files whose stored bytes are not the recorded ones:
	// every client would refuse them.
	Mismatched []MismatchedFile `json:"mismatched"`
	Invalid    []InvalidFile    `json:"invalid"`
}

// MismatchedFile is a recorded file whose stored bytes do not match its SHA-256.
type MismatchedFile struct {
	Filename       string `json:"filename"`
	RecordedSHA256 string `json:"recorded-sha256"`
	StoredSHA256   string `json:"stored-sha256"`
}

// InvalidFile is a stored file a refresh could not record, and why.
type InvalidFile struct {
	Filename string `json:"filename"`
	Error    string `json:"error"`
}

// PatchHealth is the answer to GET /v1/admin/reports/patch-health: the machines of a
// tier running a patch version, per patch state.
type PatchHealth struct {
	Tier    string         `json:"tier"`
	Version string         `json:"version"`
	Total   int            `json:"total"`
	States  map[string]int `json:"states"`
	// Rollout is where the rollout of the patch in the tier stands, when it has one.
	Rollout *Rollout `json:"rollout,omitempty"`
}
