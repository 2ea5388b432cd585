package httpapi_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// BenchmarkCheckInRollout is BenchmarkCheckIn in a tier with a rollout policy, every
// machine offered the patch already (recorded by the store as another unit would): each
// check-in asks the in-memory rollout state. Compare with BenchmarkCheckIn/unsigned:
//
//	go test -run '^$' -bench 'CheckIn' -benchtime 20000x ./server/httpapi
func BenchmarkCheckInRollout(b *testing.B) {
	e := newEnv(b, withWallClock)
	policy := server.RolloutPolicy{Tier: "edge", Canaries: 1, RateLimit: 1000, RatePeriod: server.Duration(time.Hour),
		MaxInFlight: 1000, FailureThreshold: 50}
	e.must(200, "PUT", "/v1/admin/tiers/edge/rollout-policy", "session", policy, nil)
	ctx := b.Context()
	now := time.Now()
	var offers []server.RolloutOffer
	for i := range 500 {
		offers = append(offers, server.RolloutOffer{MachineID: fmt.Sprintf("bench-%04d", i), OfferedAt: now})
	}
	// benchmarkCheckIn enrols the machines; the offers are recorded first, as the
	// rollout's canary and then the rest had been offered it.
	if _, err := e.db.ClaimSlots(ctx, server.SlotClaim{Tier: "edge", Version: "107.1", Want: 1}, policy, now); err != nil {
		b.Fatal(err)
	}
	if err := e.db.RecordOffers(ctx, "edge", "107.1", offers); err != nil {
		b.Fatal(err)
	}
	if err := e.api.RefreshRollouts(ctx); err != nil {
		b.Fatal(err)
	}
	benchmarkCheckIn(b, e, nil)
}
