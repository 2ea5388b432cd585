package server

import "time"

// Health is the body of GET /debug/status: the health of the server's dependencies, as
// the server reports it and as the admin CLI, the client and the charm read it. A
// degraded server answers 503 with it.
type Health struct {
	Version string `json:"version"`
	// Status is HealthOK, or HealthDegraded when the database, the schema or the patch
	// storage is not OK. Sync and the contracts server never degrade it.
	Status       string           `json:"status"`
	Database     ComponentHealth  `json:"database"`
	Schema       SchemaHealth     `json:"schema"`
	PatchStorage ComponentHealth  `json:"patch-storage"`
	Patches      int              `json:"patches"` // patch files in the catalog
	PatchCache   PatchCacheHealth `json:"patch-cache"`
	Sync         SyncHealth       `json:"sync"`
	Contracts    ContractsHealth  `json:"contracts"`
}

// The overall status of a Health report.
const (
	HealthOK       = "OK"
	HealthDegraded = "degraded"
)

// ComponentHealth is the health of one dependency: HealthOK or what is wrong, without
// credentials (the report is public).
type ComponentHealth struct {
	Status string `json:"status"`
}

// SchemaHealth gives the applied and the latest database schema versions.
type SchemaHealth struct {
	Current int    `json:"current"`
	Latest  int    `json:"latest"`
	Status  string `json:"status"`
}

// PatchCacheHealth says whether the in-memory patch cache is on and how many files it
// holds.
type PatchCacheHealth struct {
	Enabled bool `json:"enabled"`
	Files   *int `json:"files,omitempty"` // when enabled
}

// SyncHealth says whether upstream sync is enabled and, in one line, how it goes.
type SyncHealth struct {
	Enabled bool `json:"enabled"`
	// Status is "disabled", "not run yet", HealthOK, "last sync failed: ..." or a
	// configuration problem.
	Status   string     `json:"status"`
	Upstream string     `json:"upstream,omitempty"` // the upstream URL, without credentials
	Warnings []string   `json:"warnings,omitempty"`
	LastRun  *time.Time `json:"last-run,omitempty"`
	// LastError is the error of the last sync run when it failed.
	LastError string `json:"last-error,omitempty"`
}

// ContractsHealth describes the contracts server that checks resource tokens, as the
// last check found it.
type ContractsHealth struct {
	// Status is HealthOK unless the last check could not reach the contracts server.
	Status  string `json:"status"`
	Enabled bool   `json:"enabled"`       // a contracts server checks resource tokens
	URL     string `json:"url,omitempty"` // without credentials
	// Reachable is whether it answered the last check; absent before the first.
	Reachable *bool      `json:"reachable,omitempty"`
	LastCheck *time.Time `json:"last-check,omitempty"`
	// LastResult is "accepted", "refused", "unreachable", or that none was checked yet.
	LastResult string `json:"last-result,omitempty"`
}
