package httpapi

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache(3, time.Hour)
	now := c.start
	c.now = func() time.Time { return now }
	hash := server.HashToken("token-a")
	c.add("m1", hash)
	if !c.has("m1", hash) {
		t.Fatal("a token just verified is not remembered")
	}
	if c.has("m1", server.HashToken("token-b")) || c.has("m2", hash) {
		t.Fatal("the cache takes another token or another machine for the one verified")
	}
	now = now.Add(59 * time.Minute)
	if !c.has("m1", hash) {
		t.Fatal("forgotten before its time")
	}
	now = now.Add(2 * time.Minute)
	if c.has("m1", hash) || c.len() != 0 {
		t.Fatalf("remembered past its time (%d entries)", c.len())
	}
	c.add("m1", hash)
	c.remove("m1", hash)
	if c.has("m1", hash) {
		t.Fatal("remembered after remove")
	}
	for i := range 5 {
		c.add(fmt.Sprintf("m%d", i), hash)
	}
	if c.len() != 3 || !c.has("m4", hash) {
		t.Fatalf("bound of 3: %d entries, the last added present: %v", c.len(), c.has("m4", hash))
	}
}

// BenchmarkTokenCacheFleet fills the cache with a fleet of a million machines and reports
// the heap it holds per machine.
//
//	go test -run '^$' -bench TokenCacheFleet -benchtime 1x ./server/httpapi
func BenchmarkTokenCacheFleet(b *testing.B) {
	const machines = 1_000_000
	ids := make([]string, machines)
	hashes := make([][]byte, machines)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x", i)
		hashes[i] = server.HashToken(ids[i])
	}
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := newTokenCache(machineTokenCacheSize, machineTokenCacheTTL)
		for i := range ids {
			c.add(ids[i], hashes[i])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/machines, "B/machine")
		start := time.Now()
		for i := range ids {
			if !c.has(ids[i], hashes[i]) {
				b.Fatal("a verified machine is not in the cache")
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/machines, "ns/lookup")
		runtime.KeepAlive(c)
	}
}
