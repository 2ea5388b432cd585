package httpapi

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
)

// tokenCache remembers the machine tokens verified recently, so that a check-in is
// verified before its body is read without a database read per check-in. It is a
// pre-check only: the check-in's own statement verifies the token again. So an entry is
// not the token but a 64-bit hash of the machine id and token hash, seeded per process
// (an outsider cannot aim at a collision, and one would only let a request on to the
// statement that refuses it), and the second its verification expires: 12 bytes of data,
// so that the cache holds a whole fleet of a million machines in a few tens of MB and a
// machine's token stays verified from one check-in to the next.
type tokenCache struct {
	mu      sync.Mutex
	seed    maphash.Seed
	max     int
	ttl     time.Duration
	start   time.Time         // expiries count seconds from here
	now     func() time.Time  // time.Now; tests move it
	entries map[uint64]uint32 // key -> verified until, in seconds since start
}

// Bounds of the machine token cache: entries are only added for tokens the database
// verified, so the size follows the fleet; beyond max an entry is evicted at random.
const (
	machineTokenCacheSize = 1 << 21       // 2,097,152 machines, about 40 MB at most
	machineTokenCacheTTL  = 2 * time.Hour // longer than the check-in interval
)

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{seed: maphash.MakeSeed(), max: max, ttl: ttl, start: time.Now(), now: time.Now, entries: map[uint64]uint32{}}
}

// key mixes the seeded hash of the id with the token hash, which is already uniform (a
// SHA-256).
func (c *tokenCache) key(id string, hash []byte) uint64 {
	var t uint64
	if len(hash) >= 8 {
		t = binary.LittleEndian.Uint64(hash)
	}
	return maphash.String(c.seed, id) ^ t
}

// clock is the time in whole seconds since start, rounded up.
func (c *tokenCache) clock(t time.Time) uint32 {
	return uint32((t.Sub(c.start) + time.Second - 1) / time.Second)
}

func (c *tokenCache) has(id string, hash []byte) bool {
	k := c.key(id, hash)
	now := c.clock(c.now())
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.entries[k]
	if ok && now > until {
		delete(c.entries, k)
		return false
	}
	return ok
}

func (c *tokenCache) add(id string, hash []byte) {
	k := c.key(id, hash)
	until := c.clock(c.now().Add(c.ttl))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		for old := range c.entries { // a random entry: map iteration order is unspecified
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = until
}

func (c *tokenCache) remove(id string, hash []byte) {
	k := c.key(id, hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, k)
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
