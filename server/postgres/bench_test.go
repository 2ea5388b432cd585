package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// BenchmarkCheckIn measures the check-in hot path: many machines reporting in parallel.
// Run: go test -run '^$' -bench . -benchtime 10000x ./server/postgres/
func BenchmarkCheckIn(b *testing.B) {
	const machines = 1000
	db := newDB(b)
	tok := createToken(b, db, "fleet", "stable", nil, 0)
	for i := range machines {
		enable(b, db, tok, fmt.Sprint("machine-", i))
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("machine-", next.Add(1)%machines)
			if _, err := db.CheckIn(b.Context(), checkIn(id, "107.1", server.StateApplied), time.Now()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checkins/s")
}

// BenchmarkEnable measures enrolment of new machines in parallel with one shared token.
func BenchmarkEnable(b *testing.B) {
	db := newDB(b)
	tok := createToken(b, db, "fleet", "stable", nil, 0)
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("machine-", next.Add(1))
			if _, err := db.Enable(b.Context(), enrolment(tok, id), time.Now()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "enables/s")
}
