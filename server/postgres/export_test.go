package postgres

import (
	"runtime"
	"testing"
	"time"
)

// HoldCheckIns makes the check-ins of db queue as if every batch were running, until
// release: then they are recorded in batches as under load. wait returns once n check-ins
// are queued.
func HoldCheckIns(t testing.TB, db *DB) (wait func(n int), release func()) {
	q := &db.queue
	q.mu.Lock()
	held := checkInBatches - q.running
	q.running = checkInBatches
	q.mu.Unlock()
	wait = func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			q.mu.Lock()
			queued := len(q.pending)
			q.mu.Unlock()
			if queued >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d check-ins queued after 10s, want %d", queued, n)
			}
			runtime.Gosched()
		}
	}
	release = func() {
		for range held {
			q.done()
		}
	}
	return wait, release
}

// SetStaleWindow makes RemoveStaleMachines read windows of blocks blocks until the test
// ends. The window is the package's: other tests' passes only take more batches.
func SetStaleWindow(t testing.TB, blocks int64) {
	old := staleWindow.Swap(blocks)
	t.Cleanup(func() { staleWindow.Store(old) })
}
