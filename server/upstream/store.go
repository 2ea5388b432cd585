package upstream

import (
	"context"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Store is what a sync reads and writes of the deployment's state: the part of
// server.Store it uses (the PostgreSQL store is one). Each method means what server.Store
// documents.
type Store interface {
	// The patches and tiers a sync mirrors.
	Tiers(ctx context.Context) ([]server.Tier, error)
	Patches(ctx context.Context, f server.PatchFilter) ([]server.Patch, error)
	AddPatch(ctx context.Context, p server.Patch) (server.Patch, error)
	SetPatchSignature(ctx context.Context, filename, sha256 string, sig *server.PatchSignature) (bool, error)
	MirrorTiers(ctx context.Context, m server.TierMirror) (server.TierMirrorResult, error)

	// What it reports upstream: kernels in use and machines.
	Kernels(ctx context.Context) ([]server.KernelCount, error)
	Machines(ctx context.Context, f server.MachineFilter) ([]server.Machine, error)

	// Its own history: runs and the patch lists applied.
	AddSyncReport(ctx context.Context, r server.SyncReport) (server.SyncReport, error)
	SyncReports(ctx context.Context, f server.SyncReportFilter) ([]server.SyncReport, error)
	LastSyncList(ctx context.Context, tier string) (time.Time, error)
	RecordSyncList(ctx context.Context, tier string, generatedAt time.Time) error

	// The cluster-wide locks: one sync at a time, one writer of a patch file.
	RunExclusive(ctx context.Context, job string, fn func(ctx context.Context) error) (ran bool, err error)
	LockPatchFile(ctx context.Context, filename string, fn func(ctx context.Context) error) error
}

// server.Store is a Store.
var _ Store = server.Store(nil)
