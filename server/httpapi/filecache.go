package httpapi

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// fileCache keeps the bytes of recently downloaded patch files in memory (patch-cache.*
// in the config), so that a fleet fetching the same new patch is served without a storage
// read per download. Entries are keyed by filename and SHA-256, so a replaced file is
// never served stale; they expire after ttl, and the least recently used goes first when
// there are more than max files or more than maxCacheBytes in all.
//
// A file missing from the cache is read from storage once however many downloads want it
// at the same time (load): the first starts the read, the others wait for it. What the
// read returns enters the cache only when it matches the record (the caller's read checks
// it), so the cache never holds bytes a machine would refuse.
type fileCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	now     func() time.Time
	bytes   int64
	order   *list.List // front: most recently used
	entries map[fileKey]*list.Element
	fills   map[fileKey]*fill
	filling int64  // bytes of the fills under way
	gen     uint64 // moved on by invalidate: fills started before it do not enter the cache
}

type fileKey struct{ filename, sha256 string }

type fileEntry struct {
	key     fileKey
	data    []byte
	modTime time.Time
	expires time.Time
}

// fill is one read of a file from storage, shared by the downloads that wait for it.
type fill struct {
	done chan struct{} // closed when e or err is set
	e    *fileEntry
	err  error
}

// Bounds on what the cache holds: one file, all files together (so the cache stays well
// inside the server's memory budget whatever cache-size says), and the reads under way.
const (
	maxCachedFile = 16 << 20
	maxCacheBytes = 64 << 20
	maxFillBytes  = 64 << 20
)

func newFileCache(max int, ttl time.Duration, now func() time.Time) *fileCache {
	return &fileCache{max: max, ttl: ttl, now: now, order: list.New(), entries: map[fileKey]*list.Element{}, fills: map[fileKey]*fill{}}
}

// fileReader reads a file whole for the cache; it must fail rather than return bytes that
// are not the file of the key.
type fileReader func() (data []byte, modTime time.Time, err error)

// load returns the cached entry of k, or reads it with read (size bytes) and caches it.
// Only one read of a key runs at a time: later callers wait for it, within ctx, and all
// get its result. The read runs on its own, so a caller that goes away does not cut it
// short for the others; read must bound its own time. load returns a nil entry and no
// error when the file is too large for the cache or the reads under way would pass
// maxFillBytes: the caller then streams the file from storage. started reports whether this
// call started a read.
func (c *fileCache) load(ctx context.Context, k fileKey, size int64, read fileReader) (e *fileEntry, started bool, err error) {
	c.mu.Lock()
	if e := c.lookup(k); e != nil {
		c.mu.Unlock()
		return e, false, nil
	}
	f, ok := c.fills[k]
	if !ok {
		if size > maxCachedFile || c.filling+size > maxFillBytes {
			c.mu.Unlock()
			return nil, false, nil
		}
		f = &fill{done: make(chan struct{})}
		c.fills[k] = f
		c.filling += size
		started = true
		go c.fill(k, size, c.gen, f, read)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.e, started, f.err
	case <-ctx.Done():
		return nil, started, ctx.Err()
	}
}

// fill runs read for the waiters of f, and caches what it returns unless the cache was
// invalidated meanwhile.
func (c *fileCache) fill(k fileKey, size int64, gen uint64, f *fill, read fileReader) {
	data, modTime, err := read()
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.fills, k)
	c.filling -= size
	if err != nil {
		f.err = err
	} else {
		f.e = &fileEntry{key: k, data: data, modTime: modTime}
		if gen == c.gen {
			c.insert(f.e)
		}
	}
	close(f.done)
}

func (c *fileCache) get(k fileKey) (*fileEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookup(k)
	return e, e != nil
}

// lookup returns the live entry of k, or nil; c.mu is held.
func (c *fileCache) lookup(k fileKey) *fileEntry {
	el, ok := c.entries[k]
	if !ok {
		return nil
	}
	e := el.Value.(*fileEntry)
	if c.ttl > 0 && c.now().After(e.expires) {
		c.remove(el)
		return nil
	}
	c.order.MoveToFront(el)
	return e
}

func (c *fileCache) put(k fileKey, data []byte, modTime time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.insert(&fileEntry{key: k, data: data, modTime: modTime})
}

// insert adds e, evicting what the bounds say; c.mu is held.
func (c *fileCache) insert(e *fileEntry) {
	if el, ok := c.entries[e.key]; ok {
		c.remove(el)
	}
	e.expires = c.now().Add(c.ttl)
	c.entries[e.key] = c.order.PushFront(e)
	c.bytes += int64(len(e.data))
	for c.order.Len() > c.max || c.bytes > maxCacheBytes {
		c.remove(c.order.Back())
	}
}

// invalidate drops every entry of filename, whatever its SHA-256, and keeps the reads
// under way from entering the cache: the stored file was repaired or found wrong.
func (c *fileCache) invalidate(filename string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, el := range c.entries {
		if k.filename == filename {
			c.remove(el)
		}
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
