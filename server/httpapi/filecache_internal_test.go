package httpapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestFileCacheBounds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newFileCache(3, time.Hour, func() time.Time { return now })
	for i := range 4 {
		c.put(fileKey{fmt.Sprint(i), "x"}, make([]byte, 10), now)
	}
	if _, ok := c.get(fileKey{"0", "x"}); ok || c.len() != 3 {
		t.Errorf("count bound: oldest kept or %d entries", c.len())
	}
	// Three files of 30 MiB exceed the 64 MiB budget: only two stay.
	for i := range 3 {
		c.put(fileKey{fmt.Sprint("big", i), "x"}, make([]byte, 30<<20), now)
	}
	if c.len() != 2 || c.bytes > maxCacheBytes {
		t.Errorf("byte bound: %d entries, %d bytes", c.len(), c.bytes)
	}
	if _, ok := c.get(fileKey{"big2", "x"}); !ok {
		t.Errorf("newest entry evicted")
	}
	now = now.Add(2 * time.Hour)
	if _, ok := c.get(fileKey{"big2", "x"}); ok {
		t.Errorf("expired entry served")
	}
}

// Concurrent loads of one key read it once and all get the bytes; a failed read is not
// cached; a read started before an invalidation serves its waiters but is not cached; a
// file over the bounds is not read at all.
func TestFileCacheLoad(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newFileCache(4, time.Hour, func() time.Time { return now })
	k := fileKey{"a", "x"}
	release := make(chan struct{})
	reads := 0
	read := func() ([]byte, time.Time, error) {
		reads++ // only ever one read of a key at a time
		<-release
		return []byte("data"), now, nil
	}
	const loaders = 20
	var wg sync.WaitGroup
	results := make(chan string, loaders)
	started := make(chan bool, loaders)
	for range loaders {
		wg.Go(func() {
			e, s, err := c.load(t.Context(), k, 4, read)
			started <- s
			if err != nil || e == nil {
				results <- fmt.Sprint(e, err)
				return
			}
			results <- string(e.data)
		})
	}
	// One waiter gives up: it gets its context's error, and the read goes on.
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() { _, _, err := c.load(ctx, k, 4, read); gaveUp <- err }()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("a canceled waiter: %v", err)
	}
	close(release)
	wg.Wait()
	close(results)
	close(started)
	for r := range results {
		if r != "data" {
			t.Errorf("a loader got %s", r)
		}
	}
	n := 0
	for s := range started {
		if s {
			n++
		}
	}
	if reads != 1 || n > 1 {
		t.Errorf("%d loads ran %d reads (%d said they started one), want 1", loaders, reads, n)
	}
	if _, ok := c.get(k); !ok {
		t.Errorf("the read file is not cached")
	}

	fail := func() ([]byte, time.Time, error) { return nil, now, errors.New("bad bytes") }
	if _, _, err := c.load(t.Context(), fileKey{"b", "x"}, 4, fail); err == nil {
		t.Errorf("a failed read gave no error")
	}
	if _, ok := c.get(fileKey{"b", "x"}); ok {
		t.Errorf("a failed read was cached")
	}

	// A read under way when the file is invalidated serves its waiters, not the cache.
	c.invalidate("a")
	if _, ok := c.get(k); ok {
		t.Errorf("an invalidated file is still cached")
	}
	inRead, finish := make(chan struct{}), make(chan struct{})
	slow := func() ([]byte, time.Time, error) {
		close(inRead)
		<-finish
		return []byte("old"), now, nil
	}
	done := make(chan string)
	go func() {
		e, _, err := c.load(t.Context(), k, 3, slow)
		done <- fmt.Sprint(string(e.data), err)
	}()
	<-inRead
	c.invalidate("a")
	close(finish)
	if got := <-done; got != "old<nil>" {
		t.Errorf("the waiter of an invalidated read got %s", got)
	}
	if _, ok := c.get(k); ok {
		t.Errorf("a read started before an invalidation was cached")
	}

	never := func() ([]byte, time.Time, error) { t.Error("a file over the bounds was read"); return nil, now, nil }
	if e, s, err := c.load(t.Context(), fileKey{"big", "x"}, maxCachedFile+1, never); e != nil || s || err != nil {
		t.Errorf("load of a file over the bound = %v, %v, %v; want nothing", e, s, err)
	}
}
