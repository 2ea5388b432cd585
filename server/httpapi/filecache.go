package httpapi

import (
	"container/list"
	"sync"
	"time"
)

// fileCache keeps the bytes of recently downloaded patch files in memory (patch-cache.*
// in the config), so that a fleet fetching the same new patch is served without a storage
// read per download. Entries are keyed by filename and SHA-256, so a replaced file is
// never served stale; they expire after ttl, and the least recently used goes first when
// there are more than max files or more than maxCacheBytes in all.
type fileCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	now     func() time.Time
	bytes   int64
	order   *list.List // front: most recently used
	entries map[fileKey]*list.Element
	hits    func()
	misses  func()
}

type fileKey struct{ filename, sha256 string }

type fileEntry struct {
	key     fileKey
	data    []byte
	modTime time.Time
	expires time.Time
}

// Bounds on what the cache holds: one file, and all files together (so the cache stays
// well inside the server's memory budget whatever cache-size says).
const (
	maxCachedFile = 16 << 20
	maxCacheBytes = 64 << 20
)

func newFileCache(max int, ttl time.Duration, now func() time.Time) *fileCache {
	return &fileCache{max: max, ttl: ttl, now: now, order: list.New(), entries: map[fileKey]*list.Element{}}
}

func (c *fileCache) get(k fileKey) (*fileEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*fileEntry)
	if c.ttl > 0 && c.now().After(e.expires) {
		c.remove(el)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e, true
}

func (c *fileCache) put(k fileKey, data []byte, modTime time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.remove(el)
	}
	c.entries[k] = c.order.PushFront(&fileEntry{key: k, data: data, modTime: modTime, expires: c.now().Add(c.ttl)})
	c.bytes += int64(len(data))
	for c.order.Len() > c.max || c.bytes > maxCacheBytes {
		c.remove(c.order.Back())
	}
}

func (c *fileCache) remove(el *list.Element) {
	e := el.Value.(*fileEntry)
	c.order.Remove(el)
	delete(c.entries, e.key)
	c.bytes -= int64(len(e.data))
}

func (c *fileCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
