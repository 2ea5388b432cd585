package httpapi

import (
	"context"
	"crypto/ed25519"
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
	signer  *patchSigner // nil: this server signs nothing
	mu      sync.Mutex   // serialises reloads
	version int64
	current atomic.Pointer[catalogSnapshot]
}

type catalogSnapshot struct {
	catalog *server.Catalog
	tiers   []server.Tier
	byFile  map[string]server.Patch
	// policies are the rollout policies by tier, loaded with the patches (rollout.go).
	policies map[string]*tierPolicy
}

// newCatalogCache returns an empty cache. With a signing key, the patches it loads that
// carry no origin signature are signed with it, so that offers and sync lists carry this
// server's signature for the patches it originates.
func newCatalogCache(store server.Store, key ed25519.PrivateKey) *catalogCache {
	c := &catalogCache{store: store, version: -1}
	if key != nil {
		c.signer = &patchSigner{key: key, sigs: map[signedFile]*server.PatchSignature{}}
	}
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
	policies, err := loadPolicies(ctx, c.store) // rollout.go
	if err != nil {
		return err
	}
	if c.signer != nil {
		c.signer.signAll(patches)
	}
	byFile := make(map[string]server.Patch, len(patches))
	for _, p := range patches {
		byFile[p.Filename] = p
	}
	c.current.Store(&catalogSnapshot{catalog: server.NewCatalog(tiers, patches), tiers: tiers, byFile: byFile, policies: policies})
	c.version = version
	return nil
}

// patchSigner signs the patches a server with a signing key originates: uploads, and
// synced patches whose upstream did not sign them. Synced patches keep their origin's
// signature. Signatures are remembered across reloads (signing costs tens of
// microseconds a patch; the catalog reloads at every change).
type patchSigner struct {
	key  ed25519.PrivateKey
	mu   sync.Mutex
	sigs map[signedFile]*server.PatchSignature
}

type signedFile struct {
	filename, sha256 string
	size             int64
}

// signAll gives every unsigned patch this server's signature, and forgets the signatures
// of files no longer listed.
func (s *patchSigner) signAll(patches []server.Patch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sigs := make(map[signedFile]*server.PatchSignature, len(patches))
	for i := range patches {
		if p := &patches[i]; p.Signature == nil {
			p.Signature = s.signLocked(p)
			sigs[signedFile{p.Filename, p.SHA256, p.Size}] = p.Signature
		}
	}
	s.sigs = sigs
}

// signEach gives the unsigned patches of a listing this server's signature, as offers and
// sync lists carry them; a nil signer (no signing key) leaves them as they are.
func (s *patchSigner) signEach(patches []server.Patch) []server.Patch {
	for i := range patches {
		patches[i] = s.sign(patches[i])
	}
	return patches
}

// sign returns p with its origin signature, or this server's when it has none; a nil
// signer returns p.
func (s *patchSigner) sign(p server.Patch) server.Patch {
	if s != nil && p.Signature == nil {
		s.mu.Lock()
		p.Signature = s.signLocked(&p)
		s.mu.Unlock()
	}
	return p
}

func (s *patchSigner) signLocked(p *server.Patch) *server.PatchSignature {
	k := signedFile{p.Filename, p.SHA256, p.Size}
	sig, ok := s.sigs[k]
	if !ok {
		sig = server.SignPatch(s.key, p.Filename, p.SHA256, p.Size)
		s.sigs[k] = sig
	}
	return sig
}
