package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepatch-onprem/livepatch/server"
)

// Rollouts: the check-in decides in memory, from the state below, whether a machine of a
// tier with a rollout policy gets the patch its tier has now or keeps what it runs; the
// database is consulted off the check-in path, at every catalog refresh.
//
// Consistency across units: offers are made from offer slots that a unit claims from the
// database in small batches (server.Store.ClaimSlots), under the rollout's row lock, where
// the policy's canary count, rate limit and in-flight bound are checked against every
// unit's claims. A unit claims only as many slots as machines it held back since its last
// refresh (at most rolloutClaimBatch). So units together never exceed a rate limit, an
// in-flight bound or the canary count: the tolerance is on the other side, a unit may hold
// up to rolloutClaimBatch slots it has not used yet, which delays other units' offers by
// one refresh; slots of a rate period are given back when it ends. A machine offered a
// patch is recorded (RecordOffers) and every unit loads the offers of the others, so that a
// machine keeps its offer whichever unit it reaches; an offer not yet recorded when a unit
// stops is lost, and costs one more slot if that machine had not applied the patch.
type rolloutCache struct {
	store   server.Store
	log     *slog.Logger
	catalog *catalogCache // holds the policies, loaded with the patches

	// refreshing serialises refreshes (the periodic one and those after an operator's
	// change), so that an older read never overwrites a newer one.
	refreshing sync.Mutex

	mu       sync.Mutex
	rollouts map[server.RolloutRef]*rolloutState
	cursor   int64 // the last recorded offer loaded
	// live are the rollouts check-ins may consult, as of the last refresh (nil before
	// the first): the patches offered now in the tiers with a policy. Only their state is
	// kept; a rollout that becomes live loads its offers again (revive).
	live map[server.RolloutRef]bool

	halted   *prometheus.GaugeVec
	machines *prometheus.GaugeVec
	offers   *prometheus.CounterVec
	held     *prometheus.CounterVec
}

// rolloutClaimBatch bounds the slots one claim asks for.
const rolloutClaimBatch = 8

// rolloutOfferOverlap is how many recorded offers before the cursor a refresh reads
// again: an offer that committed after a later one is not skipped.
const rolloutOfferOverlap = 256

// rolloutOfferPage bounds the offers one refresh loads.
const rolloutOfferPage = 10000

type tierPolicy struct {
	server.RolloutPolicy
	loc *time.Location
}

// rolloutState is one rollout as this unit knows it.
type rolloutState struct {
	rollout server.Rollout // as of the last refresh; State "" when it has not started
	offered map[string]struct{}
	slots   int       // offer slots held, usable in the rate period slotsOf
	slotsOf time.Time // the rate period of slots (zero without a rate limit)
	unused  int       // slots of an ended period, to give back
	want    int       // machines held back for want of a slot since the last claim
	pending []server.RolloutOffer
}

func newRolloutCache(store server.Store, catalog *catalogCache, log *slog.Logger, reg *prometheus.Registry) *rolloutCache {
	c := &rolloutCache{
		store:    store,
		log:      log,
		catalog:  catalog,
		rollouts: map[server.RolloutRef]*rolloutState{},
		halted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "livepatch_server_rollout_halted",
			Help: "Rollouts of the patches a tier offers now halted (by failures or an operator), as this unit last saw them.",
		}, []string{"tier"}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepatch_server_rollout_offers_total",
			Help: "New patch offers a rollout policy let through, by tier.",
		}, []string{"tier"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livepatch_server_rollout_held_total",
			Help: "Check-ins a rollout policy held back from the newest patch, by tier.",
		}, []string{"tier"}),
	}
	c.machines = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "livepatch_server_rollout_machines",
		Help: "Machines offered the patch of a live rollout, by update state (offered, downloaded, applied, failed, timed-out), as this unit last counted them.",
	}, []string{"tier", "version", "state"})
	reg.MustRegister(c.halted, c.machines, c.offers, c.held)
	return c
}

// period is the rate period of now under p; zero without a rate limit.
func period(p server.RolloutPolicy, now time.Time) time.Time {
	if p.RateLimit == 0 {
		return time.Time{}
	}
	return now.UTC().Truncate(time.Duration(p.RatePeriod))
}

// gate decides whether a machine of tier that reported st gets p, the newest patch its
// tier has: at once without a policy, or when it runs p already or was offered it; else
// from a slot, in a window, while the rollout is active. A machine held back gets the
// patch it runs, when its tier still has it (ok false: no patch).
func (c *rolloutCache) gate(snap *catalogSnapshot, tier, machineID string, st server.Status, p server.Patch, now time.Time) (server.Patch, bool) {
	pol := snap.policies[tier]
	if pol == nil || st.PatchVersion == p.Version {
		return p, true
	}
	if c.take(pol, tier, machineID, p.Version, now) {
		return p, true
	}
	c.held.WithLabelValues(tier).Inc()
	return snap.catalog.SelectVersion(tier, st.Kernel, st.Architecture, st.PatchVersion)
}

// take reports whether machineID may have version, using a slot when it is a new offer.
func (c *rolloutCache) take(pol *tierPolicy, tier, machineID, version string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.stateLocked(server.RolloutRef{Tier: tier, Version: version})
	if _, ok := rs.offered[machineID]; ok {
		return true
	}
	if rs.rollout.State != "" && rs.rollout.State != server.RolloutActive {
		return false
	}
	if !pol.InWindow(now, pol.loc) {
		return false
	}
	if p := period(pol.RolloutPolicy, now); !p.Equal(rs.slotsOf) {
		rs.unused += rs.slots
		rs.slots, rs.slotsOf = 0, p
	}
	if rs.slots == 0 {
		rs.want++
		return false
	}
	rs.slots--
	rs.offered[machineID] = struct{}{}
	rs.pending = append(rs.pending, server.RolloutOffer{MachineID: machineID, OfferedAt: now})
	c.offers.WithLabelValues(tier).Inc()
	return true
}

func (c *rolloutCache) stateLocked(k server.RolloutRef) *rolloutState {
	rs := c.rollouts[k]
	if rs == nil {
		rs = &rolloutState{offered: map[string]struct{}{}}
		c.rollouts[k] = rs
	}
	return rs
}

// loadPolicies loads the rollout policies by tier, with their time zones.
func loadPolicies(ctx context.Context, store server.Store) (map[string]*tierPolicy, error) {
	list, err := store.RolloutPolicies(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot load rollout policies: %w", err)
	}
	policies := make(map[string]*tierPolicy, len(list))
	for _, p := range list {
		loc, err := p.Location()
		if err != nil {
			loc = time.UTC // checked when set: a time zone the system lost since
		}
		policies[p.Tier] = &tierPolicy{p, loc}
	}
	return policies, nil
}

// refresh brings the rollout state up to date with the database and every unit: with the
// policies of the current catalog, it records this unit's offers, loads the others',
// halts the rollouts whose failures reached their threshold, and claims the slots this
// unit lacked.
func (c *rolloutCache) refresh(ctx context.Context, clock func() time.Time) error {
	c.refreshing.Lock()
	defer c.refreshing.Unlock()
	snap := c.catalog.get()
	policies := snap.policies
	if err := c.flush(ctx); err != nil {
		return err
	}
	if len(policies) == 0 && !c.tracking() {
		return nil // no rollout to follow: spare the database the rest
	}
	now := clock() // only now: tests of other things move their clock meanwhile
	live := liveRollouts(snap)
	if err := c.loadOffers(ctx, live); err != nil {
		return err
	}
	if err := c.revive(ctx, live); err != nil {
		return err
	}
	refs := make([]server.RolloutRef, 0, len(live))
	for k := range live {
		refs = append(refs, k)
	}
	rollouts, err := c.store.RolloutsOf(ctx, refs, now) // the live ones only: the others make no offer
	if err != nil {
		return err
	}
	halted := map[string]int{}
	for i, r := range rollouts {
		if pol := policies[r.Tier]; pol != nil && pol.HaltReason(r) != "" {
			// Decided again under the rollout's lock: another unit may have halted it, and
			// the operator resumed it, since the read.
			reason, err := c.store.HaltRollout(ctx, pol.RolloutPolicy, r.Version, now)
			if err != nil {
				return err
			}
			if reason != "" {
				rollouts[i].State, rollouts[i].Reason = server.RolloutHalted, reason
				c.log.Warn("Rollout halted", "tier", r.Tier, "version", r.Version, "reason", reason)
				c.log.Info("Security event", "type", "security", "event", "rollout_halted", "user", "",
					"tier", r.Tier, "version", r.Version, "reason", reason)
			}
		}
		if rollouts[i].State == server.RolloutHalted {
			halted[r.Tier]++
		}
	}
	c.halted.Reset()
	c.machines.Reset()
	for _, r := range rollouts {
		for state, n := range map[string]int{
			server.UpdateOffered: r.Offered - r.Downloaded - r.Applied - r.Failed - r.TimedOut, server.UpdateDownloaded: r.Downloaded,
			server.UpdateApplied: r.Applied, server.UpdateFailed: r.Failed, server.UpdateTimedOut: r.TimedOut,
		} {
			c.machines.WithLabelValues(r.Tier, r.Version, state).Set(float64(n))
		}
	}
	for tier := range policies {
		c.halted.WithLabelValues(tier).Set(float64(halted[tier]))
		// The counters of every tier with a policy exist from the start, at 0.
		c.offers.WithLabelValues(tier)
		c.held.WithLabelValues(tier)
	}
	c.mu.Lock()
	for _, r := range rollouts {
		c.stateLocked(server.RolloutRef{Tier: r.Tier, Version: r.Version}).rollout = r
	}
	if c.catalog.get() == snap { // else check-ins may already consult rollouts not in live
		c.pruneLocked(live)
	}
	c.mu.Unlock()
	return c.claim(ctx, policies, now)
}

// liveRollouts returns the rollouts check-ins of snap may consult: in each tier with a
// policy, the versions its machines are offered.
func liveRollouts(snap *catalogSnapshot) map[server.RolloutRef]bool {
	live := map[server.RolloutRef]bool{}
	for tier := range snap.policies {
		for _, v := range snap.catalog.TierVersions(tier) {
			live[server.RolloutRef{Tier: tier, Version: v}] = true
		}
	}
	return live
}

// revive loads the offers of the rollouts that became live since the last refresh (a
// promotion, a policy, a newer patch blocked): their offers were not kept meanwhile. The
// first refresh loads every offer already (loadOffers from cursor 0).
func (c *rolloutCache) revive(ctx context.Context, live map[server.RolloutRef]bool) error {
	c.mu.Lock()
	prev := c.live
	c.mu.Unlock()
	if prev != nil {
		for k := range live {
			if prev[k] {
				continue
			}
			ids, err := c.store.RolloutOffers(ctx, k.Tier, k.Version)
			if err != nil {
				return err // c.live unchanged: the next refresh tries again
			}
			c.mu.Lock()
			rs := c.stateLocked(k)
			for _, id := range ids {
				rs.offered[id] = struct{}{}
			}
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.live = live
	c.mu.Unlock()
	return nil
}

// pruneLocked forgets the rollouts no check-in consults any more (superseded by a newer
// patch, blocked, or in a tier without a policy), so that memory holds the offers of live
// rollouts only. Slots such a rollout holds are given back by the next claim first; offers
// not recorded yet keep it until they are.
func (c *rolloutCache) pruneLocked(live map[server.RolloutRef]bool) {
	for k, rs := range c.rollouts {
		if live[k] {
			continue
		}
		rs.unused += rs.slots
		rs.slots, rs.want = 0, 0
		if rs.unused == 0 && len(rs.pending) == 0 {
			delete(c.rollouts, k)
		}
	}
}

// flush records the offers this unit made since the last refresh; those it could not
// record wait for the next.
func (c *rolloutCache) flush(ctx context.Context) error {
	c.mu.Lock()
	batches := map[server.RolloutRef][]server.RolloutOffer{}
	for k, rs := range c.rollouts {
		if len(rs.pending) > 0 {
			batches[k], rs.pending = rs.pending, nil
		}
	}
	c.mu.Unlock()
	var first error
	for k, offers := range batches {
		if err := c.store.RecordOffers(ctx, k.Tier, k.Version, offers); err != nil {
			c.mu.Lock()
			rs := c.stateLocked(k)
			rs.pending = append(offers, rs.pending...)
			c.mu.Unlock()
			first = cmpErr(first, err)
		}
	}
	return first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// loadOffers adds the offers every unit recorded since the last refresh, of the live
// rollouts.
func (c *rolloutCache) loadOffers(ctx context.Context, live map[server.RolloutRef]bool) error {
	c.mu.Lock()
	from := max(0, c.cursor-rolloutOfferOverlap)
	c.mu.Unlock()
	for {
		offers, next, err := c.store.OffersSince(ctx, from, rolloutOfferPage)
		if err != nil {
			c.mu.Lock()
			if c.live == nil {
				c.cursor = 0 // the first load starts again whole (revive relies on it)
			}
			c.mu.Unlock()
			return err
		}
		c.mu.Lock()
		for _, o := range offers {
			if k := (server.RolloutRef{Tier: o.Tier, Version: o.Version}); live[k] {
				c.stateLocked(k).offered[o.MachineID] = struct{}{}
			}
		}
		c.cursor = max(c.cursor, next)
		c.mu.Unlock()
		if len(offers) < rolloutOfferPage {
			return nil
		}
		from = next
	}
}

// claim asks for the slots this unit lacked, and gives back those of ended periods.
func (c *rolloutCache) claim(ctx context.Context, policies map[string]*tierPolicy, now time.Time) error {
	type ask struct {
		server.SlotClaim
		pol *tierPolicy
	}
	var asks []ask
	c.mu.Lock()
	for k, rs := range c.rollouts {
		pol := policies[k.Tier]
		if pol == nil {
			rs.want, rs.slots, rs.unused = 0, 0, 0
			continue
		}
		if p := period(pol.RolloutPolicy, now); !p.Equal(rs.slotsOf) {
			rs.unused += rs.slots
			rs.slots, rs.slotsOf = 0, p
		}
		if rs.want == 0 && rs.unused == 0 {
			continue
		}
		asks = append(asks, ask{server.SlotClaim{Tier: k.Tier, Version: k.Version, Want: min(rs.want, rolloutClaimBatch), Unused: rs.unused}, pol})
		rs.want, rs.unused = 0, 0
	}
	c.mu.Unlock()
	var first error
	for _, a := range asks {
		n, err := c.store.ClaimSlots(ctx, a.SlotClaim, a.pol.RolloutPolicy, now)
		c.mu.Lock()
		rs := c.stateLocked(server.RolloutRef{Tier: a.Tier, Version: a.Version})
		if err != nil {
			rs.unused += a.Unused
			first = cmpErr(first, err)
		} else if p := period(a.pol.RolloutPolicy, now); p.Equal(rs.slotsOf) {
			rs.slots += n
		} else {
			rs.unused += n
		}
		c.mu.Unlock()
	}
	return first
}

// refreshRollouts refreshes the rollout state, logging what fails (the next refresh tries
// again; meanwhile check-ins decide from the state they have).
func (s *Server) refreshRollouts(ctx context.Context) {
	if err := s.rollouts.refresh(ctx, s.opts.Now); err != nil && ctx.Err() == nil {
		s.log.Warn("Cannot refresh rollouts", "error", err)
	}
}

// flushRollouts records this unit's last offers as it stops.
func (s *Server) flushRollouts() {
	ctx, cancel := context.WithTimeout(context.Background(), rolloutFlushTimeout)
	defer cancel()
	if err := s.rollouts.flush(ctx); err != nil {
		s.log.Warn("Cannot record rollout offers", "error", err)
	}
}

// rolloutFlushTimeout bounds recording the last offers at shutdown.
const rolloutFlushTimeout = 5 * time.Second

// tracking reports whether this unit knows of any rollout (whose halt gauge and state it
// must keep current even when the policies are gone).
func (c *rolloutCache) tracking() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rollouts) > 0
}
