package httpapi

import (
	"container/list"
	"sync"
	"time"
)

// fileCache keeps the bytes of recently downloaded patch files in memory (patch-cache.*
// in the config), so that a fleet fetching the same new patch is served without a storage
// read per download. Entries are keyed by filename and SHA-256, so a replaced file is
// never served stale; they expire after ttl and the least recently used goes first.
type fileCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	now     func() time.Time
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

// maxCachedFile bounds the size of a file the cache will hold.
const maxCachedFile = 16 << 20

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
		c.order.Remove(el)
		delete(c.entries, k)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e, true
}

func (c *fileCache) put(k fileKey, data []byte, modTime time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.order.Remove(el)
	}
	c.entries[k] = c.order.PushFront(&fileEntry{key: k, data: data, modTime: modTime, expires: c.now().Add(c.ttl)})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*fileEntry).key)
	}
}

func (c *fileCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
