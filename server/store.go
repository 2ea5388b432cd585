package server

import (
	"context"
	"io"
	"time"
)

// PatchFilter selects patches in listings; zero fields match everything.
type PatchFilter struct {
	Tier    string // patches available to this tier (promoted at least this far)
	Kernel  string // kernel ABI or prefix, e.g. "5.15.0-107"
	Version string
}

// NewAuthToken is what the store records for a new auth token.
type NewAuthToken struct {
	ID          string
	Tier        string
	Hash        []byte
	ExpiresAt   *time.Time
	MaxMachines int
}

// Enrolment is what the store records when a machine enables.
type Enrolment struct {
	AuthTokenHash    []byte
	MachineID        string
	MachineTokenHash []byte
	// CurrentTokenHash is the hash of the machine token the caller holds for MachineID: its
	// proof of being that machine when MachineID is enrolled already. Nil: it holds none.
	CurrentTokenHash []byte
}

// CheckIn is one machine check-in to record.
type CheckIn struct {
	MachineID        string
	MachineTokenHash []byte
	Status           Status
}

// Store is the persistent state of the server. Every method is one transaction. Errors the
// caller may show are *Error values (not-found, conflict, invalid, unauthorized).
type Store interface {
	// RolloutStore keeps the rollout policies and rollouts (rollout.go).
	RolloutStore

	// Tiers returns every tier in promotion order.
	Tiers(ctx context.Context) ([]Tier, error)
	// AddTier inserts a tier at the given place; conflict when the name exists.
	AddTier(ctx context.Context, name string, at TierPlacement) (Tier, error)
	// DeleteTier removes a tier that no machine, auth token or sync token uses; its patches
	// move to the previous tier. The first tier cannot be deleted while it holds patches.
	DeleteTier(ctx context.Context, name string) error

	// AddPatch records a patch file (its bytes are already in patch storage). The patch
	// lands in p.Tier, or in the first tier when p.Tier is empty. Recording a filename that
	// exists with the same SHA-256 is a no-op returning the existing patch; with another
	// SHA-256 it is a conflict.
	AddPatch(ctx context.Context, p Patch) (Patch, error)
	// Patches lists patches matching f, newest version first.
	Patches(ctx context.Context, f PatchFilter) ([]Patch, error)
	// SetPatchSignature records the origin's signature of a patch file recorded with that
	// SHA-256, replacing another signature or none; it reports whether anything changed.
	// A nil signature changes nothing.
	SetPatchSignature(ctx context.Context, filename, sha256 string, sig *PatchSignature) (bool, error)
	// PromotePatch promotes every file of version to tier (never demotes); it returns how
	// many files moved. not-found when no file has that version.
	PromotePatch(ctx context.Context, version, tier string) (int, error)
	// PromoteAll promotes every patch whose tier is from to tier to.
	PromoteAll(ctx context.Context, from, to string) (int, error)
	// SetBlocked blocks or unblocks every file of version. The block becomes the
	// administrator's: sync never lifts it.
	SetBlocked(ctx context.Context, version string, blocked bool, reason string) (int, error)
	// DeletePatchRecord forgets a patch file whose bytes are gone from storage.
	DeletePatchRecord(ctx context.Context, filename string) error
	// MirrorTiers makes the tiers and the patches' tiers follow an upstream's, in one
	// transaction (patch-sync.sync-tiers): missing tiers are created, tiers the upstream
	// does not have are deleted unless something uses them (those are kept and reported),
	// the tiers take the upstream's order, listed patches move to their listed tier
	// (demotions included), and synced patches the upstream no longer lists are blocked
	// until it lists them again. A block set by an administrator is never lifted. When
	// nothing differs it writes nothing.
	MirrorTiers(ctx context.Context, m TierMirror) (TierMirrorResult, error)
	// CatalogVersion returns a number that changes whenever tiers or patches change, on
	// any unit; the catalog cache reloads when it moves.
	CatalogVersion(ctx context.Context) (int64, error)

	// CreateAuthToken records a new auth token; conflict when an unrevoked token has the id.
	CreateAuthToken(ctx context.Context, t NewAuthToken) (AuthToken, error)
	// AuthTokens lists auth tokens with their machine counts.
	AuthTokens(ctx context.Context) ([]AuthToken, error)
	// RevokeAuthToken revokes the unrevoked token with id; not-found if none.
	RevokeAuthToken(ctx context.Context, id string) error

	// CreateSyncToken records a new sync token; conflict when an unrevoked token has the
	// name, not-found when the tier does not exist.
	CreateSyncToken(ctx context.Context, t NewSyncToken) (SyncToken, error)
	// SyncTokens lists sync tokens, revoked ones included, by name.
	SyncTokens(ctx context.Context) ([]SyncToken, error)
	// SyncToken returns the sync token with that hash, revoked or expired ones included
	// (the caller decides); not-found when there is none.
	SyncToken(ctx context.Context, hash []byte) (SyncToken, error)
	// RevokeSyncToken revokes the unrevoked sync token with name; not-found if none.
	RevokeSyncToken(ctx context.Context, name string) error
	// AddSyncReport records a sync run, forgetting the oldest beyond a bounded history,
	// and returns it with its id.
	AddSyncReport(ctx context.Context, r SyncReport) (SyncReport, error)
	// SyncReports lists sync reports matching f, newest first.
	SyncReports(ctx context.Context, f SyncReportFilter) ([]SyncReport, error)
	// LastSyncList returns the generation time of the newest patch list of an upstream
	// tier applied here (by a sync or an offline bundle); zero when none was.
	LastSyncList(ctx context.Context, tier string) (time.Time, error)
	// RecordSyncList records that a patch list of an upstream tier generated at
	// generatedAt was applied; an older time than the recorded one changes nothing.
	RecordSyncList(ctx context.Context, tier string, generatedAt time.Time) error
	// RecordSyncMachines records the machines a downstream deployment reported (upstream
	// side of send-machine-reports), replacing earlier reports of the same machines. The
	// credential is the hash of the token the reports came with; a deployment id bound to
	// another valid credential (RecordDownstreamSync) is a CodeConflict error.
	RecordSyncMachines(ctx context.Context, deploymentID string, credential []byte, machines []SyncMachine, now time.Time) error
	// RecordDownstreamSync records the last sync list request of a downstream deployment
	// (upstream side), in one statement: an older request than the recorded one changes
	// nothing. The deployment id is bound to s.Credential; a request with another
	// credential while the bound one is valid and the record recent is a CodeConflict
	// error and changes nothing.
	RecordDownstreamSync(ctx context.Context, s DownstreamSync) error
	// Downstreams lists the downstream deployments that made a sync list request or sent a
	// machine report in the 30 days before now, by id.
	Downstreams(ctx context.Context, now time.Time) ([]Downstream, error)
	// DownstreamMachines lists the machines matching f that a downstream deployment
	// reported in the 30 days before now, ordered by id; not-found when the deployment was
	// not seen in that time.
	DownstreamMachines(ctx context.Context, f DownstreamMachineFilter, now time.Time) ([]DownstreamMachine, error)
	// ForgetDownstreams deletes the downstream deployments and reported machines not seen
	// in the 30 days before now, returning how many rows it deleted.
	ForgetDownstreams(ctx context.Context, now time.Time) (int, error)

	// CreateSession records an admin session (its ID, User, ExpiresAt and Credential) by
	// the hash of its token.
	CreateSession(ctx context.Context, s Session, hash []byte) error
	// Session returns the unexpired session with that token hash; unauthorized otherwise.
	Session(ctx context.Context, hash []byte, now time.Time) (Session, error)
	// DeleteSession ends a session (logout).
	DeleteSession(ctx context.Context, hash []byte) error
	// Sessions lists the unexpired sessions that have an id, oldest first.
	Sessions(ctx context.Context, now time.Time) ([]Session, error)
	// RevokeSession ends the session with id; not-found when there is none.
	RevokeSession(ctx context.Context, id string) error
	// RevokeUserSessions ends every session of user and returns how many it ended.
	RevokeUserSessions(ctx context.Context, user string) (int, error)

	// Enable enrols a machine with an auth token (unauthorized when the token is unknown,
	// revoked or expired; forbidden when its machine limit is reached by other machines).
	// Re-enabling an enrolled machine replaces its token and tier, only when
	// e.CurrentTokenHash is its current machine token's: conflict otherwise, so that an auth
	// token cannot take over another machine by its id. It returns the machine.
	Enable(ctx context.Context, e Enrolment, now time.Time) (Machine, error)
	// CheckIn records a status report (latest state and history) in one round trip and
	// returns the machine's tier; unauthorized when the id and token do not match.
	CheckIn(ctx context.Context, c CheckIn, now time.Time) (tier string, err error)
	// Disable unregisters a machine; unauthorized when the id and token do not match.
	Disable(ctx context.Context, machineID string, machineTokenHash []byte) error
	// RemoveMachine unregisters a machine for an administrator (a machine that lost its
	// token); not-found when there is none.
	RemoveMachine(ctx context.Context, machineID string) error
	// CheckMachineToken returns nil when the machine exists with this token hash, and
	// unauthorized otherwise; the API checks a token with it before reading a body.
	CheckMachineToken(ctx context.Context, machineID string, machineTokenHash []byte) error

	// Machines lists machines matching f, ordered by id.
	Machines(ctx context.Context, f MachineFilter) ([]Machine, error)
	// Machine returns a machine with its newest changes (at most historyLimit), newest
	// first; not-found when there is none.
	Machine(ctx context.Context, id string, historyLimit int) (MachineDetail, error)
	// MachineHistory lists the events of a machine's history that f selects, newest
	// first; not-found when there is no such machine.
	MachineHistory(ctx context.Context, id string, f HistoryFilter) ([]MachineEvent, error)
	// MoveMachine moves a machine to tier, recording the move in its history; the machine
	// learns its tier at its next check-in. not-found when the machine or the tier does
	// not exist. Moving it to its own tier changes nothing.
	MoveMachine(ctx context.Context, id, tier string, now time.Time) (Machine, error)
	// MoveMachines moves every machine m.Filter selects (its After and Limit ignored) to
	// m.Tier, in transactions of at most m.Batch machines, and returns how many moved.
	MoveMachines(ctx context.Context, m MachineMove, now time.Time) (int, error)
	// TagMachine sets the tags set and removes the tags remove of a machine, returning
	// it; not-found when there is none, invalid beyond MaxTags.
	TagMachine(ctx context.Context, id string, set map[string]string, remove []string) (Machine, error)
	// PatchHealth counts the machines of tier running version, per patch state.
	PatchHealth(ctx context.Context, tier, version string) (map[string]int, error)
	// Kernels counts machines per kernel and architecture.
	Kernels(ctx context.Context) ([]KernelCount, error)
	// CleanupReports deletes at most limit check-in rows and at most limit change rows of
	// the history older than before, returning how many it deleted.
	CleanupReports(ctx context.Context, before time.Time, limit int) (int, error)

	// FleetCounts counts the machines by tier, patch state and kernel in one scan, the
	// topKernels most used kernels by name and the others together.
	FleetCounts(ctx context.Context, topKernels int) (FleetCounts, error)
	// RemoveStaleMachines removes at most limit machines last seen before before (never
	// seen: enabled before before) with their history of changes, returning how many it
	// removed; they no longer count against their auth tokens' limits. A pass over the
	// fleet is a series of such batches: the first with cursor "", each next one with the
	// cursor the previous returned, until it returns "".
	RemoveStaleMachines(ctx context.Context, before time.Time, cursor string, limit int) (removed int, next string, err error)

	// RunExclusive runs fn while holding the cluster-wide lock named job (a PostgreSQL
	// advisory lock), so a background job runs on one unit at a time. ran is false, and fn
	// is not called, when another unit holds the lock.
	RunExclusive(ctx context.Context, job string, fn func(ctx context.Context) error) (ran bool, err error)
	// LockPatchFile runs fn while holding the cluster-wide lock of one patch filename,
	// waiting for it until ctx ends. Whoever stores a file's bytes and records them does
	// both under this lock, so that a record never names another upload's bytes.
	LockPatchFile(ctx context.Context, filename string, fn func(ctx context.Context) error) error
	// SchemaVersion returns the applied and the latest known migration numbers.
	SchemaVersion(ctx context.Context) (current, latest int, err error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
}

// StoredFile is one file in patch storage.
type StoredFile struct {
	Filename string    `json:"filename"`
	Size     int64     `json:"size"`
	ModTime  time.Time `json:"mod-time,omitzero"`
}

// PatchFile is an open stored patch file, readable and seekable for Range requests.
type PatchFile interface {
	io.ReadSeekCloser
	Stat() StoredFile
}

// PatchFiles stores patch file contents, keyed by filename (package patchstore).
type PatchFiles interface {
	// Put stores r under filename, replacing any previous content atomically: readers see
	// the old or the new file, never a mix. It returns the size written.
	Put(ctx context.Context, filename string, r io.Reader) (int64, error)
	// Open opens a stored file; not-found when there is none.
	Open(ctx context.Context, filename string) (PatchFile, error)
	// List lists every stored file by name.
	List(ctx context.Context) ([]StoredFile, error)
	// Delete removes a stored file; deleting a missing file is not an error.
	Delete(ctx context.Context, filename string) error
}
