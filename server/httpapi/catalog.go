package httpapi

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/livepatch-onprem/livepatch/server"
)

// catalogCache holds the tiers and patches in memory for the check-in and download paths.
// It reloads when the database's catalog version moves (another unit changed something)
// and at once after this unit's own changes.
type catalogCache struct {
	store   server.Store
	mu      sync.Mutex // serialises reloads
	version int64
	current atomic.Pointer[catalogSnapshot]
}

type catalogSnapshot struct {
	catalog *server.Catalog
	tiers   []server.Tier
	byFile  map[string]server.Patch
}

func newCatalogCache(store server.Store) *catalogCache {
	c := &catalogCache{store: store, version: -1}
	c.current.Store(&catalogSnapshot{catalog: server.NewCatalog(nil, nil), byFile: map[string]server.Patch{}})
	return c
}

func (c *catalogCache) get() *catalogSnapshot { return c.current.Load() }

// refresh reloads the catalog if the database says it changed.
func (c *catalogCache) refresh(ctx context.Context) error {
	v, err := c.store.CatalogVersion(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v == c.version {
		return nil
	}
	return c.loadLocked(ctx, v)
}

// reload loads the catalog unconditionally, after a change made through this unit.
func (c *catalogCache) reload(ctx context.Context) error {
	v, err := c.store.CatalogVersion(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadLocked(ctx, v)
}

func (c *catalogCache) loadLocked(ctx context.Context, version int64) error {
	tiers, err := c.store.Tiers(ctx)
	if err != nil {
		return fmt.Errorf("cannot load tiers: %w", err)
	}
	patches, err := c.store.Patches(ctx, server.PatchFilter{})
	if err != nil {
		return fmt.Errorf("cannot load patches: %w", err)
	}
	byFile := make(map[string]server.Patch, len(patches))
	for _, p := range patches {
		byFile[p.Filename] = p
	}
	c.current.Store(&catalogSnapshot{catalog: server.NewCatalog(tiers, patches), tiers: tiers, byFile: byFile})
	c.version = version
	return nil
}
