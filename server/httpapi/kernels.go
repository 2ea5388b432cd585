package httpapi

import (
	"context"
	"sync"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// kernelsTTL is how long a unit answers the kernels report from its last count. Counting
// reads the whole machines table (about 200 ms at a million machines); a report of the
// fleet's kernels that is a few seconds old is as good to an operator, and an
// administrator's script or a dashboard asking it repeatedly costs one count per TTL.
const kernelsTTL = 30 * time.Second

// kernelsCache keeps the last kernels count; one count runs at a time, and the callers
// that arrive meanwhile wait for it.
type kernelsCache struct {
	mu      sync.Mutex
	kernels []server.KernelCount
	at      time.Time // when kernels were counted; zero: never
}

// get returns the kernels count, from the cache when it is younger than kernelsTTL.
func (c *kernelsCache) get(ctx context.Context, store server.Store, now func() time.Time) ([]server.KernelCount, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := now()
	if age := t.Sub(c.at); !c.at.IsZero() && age >= 0 && age < kernelsTTL {
		return c.kernels, nil
	}
	kernels, err := store.Kernels(ctx)
	if err != nil {
		return nil, err
	}
	c.kernels, c.at = kernels, t
	return kernels, nil
}
