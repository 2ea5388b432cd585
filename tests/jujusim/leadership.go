package jujusim

import (
	"fmt"
	"sort"
	"time"
)

// Leadership is a lease, as Juju's leadership tracker holds it: a unit's claim lasts twice
// the guarantee (60s) and the leader renews it every guarantee (30s). When the leader unit is
// gone its lease is no longer renewed, so the application has no leader until the lease lapses,
// 30 to 60s later; then the waiting units claim and one of them, any of them, wins.
const (
	leaseGuarantee = 30 * time.Second
	leaseDuration  = 2 * leaseGuarantee
)

// claimLeadershipLocked is a unit agent's first claim: it wins when nobody holds the lease.
// The winner is chosen at random among the units then present, as whichever tracker's claim
// reaches the controller first.
func (m *Model) claimLeadershipLocked(a *application) {
	if a == nil || a.leader != "" || a.leaseTimer != nil || m.closed {
		return
	}
	var candidates []*unit
	for _, u := range m.units {
		if u.app == a.name && !u.removed {
			candidates = append(candidates, u)
		}
	}
	if len(candidates) == 0 {
		return
	}
	sort.Slice(candidates, func(i, j int) bool { return unitNumber(candidates[i].name) < unitNumber(candidates[j].name) })
	u := candidates[a.rng.IntN(len(candidates))]
	a.leader = u.name
	a.leaderGen++
	a.leaderSince = m.clock.Now()
	m.logLocked(u.name, "INFO", fmt.Sprintf("%s promoted to leadership of %s", u.name, a.name))
	m.notifyLocked()
}

// releaseLeaseLocked is the leader gone: nobody leads until the lease it last renewed lapses.
func (m *Model) releaseLeaseLocked(a *application) {
	elapsed := m.clock.Now().Sub(a.leaderSince)
	remaining := leaseDuration - elapsed%leaseGuarantee
	m.logLocked("", "INFO", fmt.Sprintf("leader %s of %s gone; its lease lapses in %s", a.leader, a.name, remaining.Round(time.Millisecond)))
	a.leader = ""
	a.leaseTimer = m.clock.AfterFunc(remaining, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		a.leaseTimer = nil
		if m.apps[a.name] == a {
			m.claimLeadershipLocked(a)
		}
	})
}

// stopTimersLocked stops the lease and retry timers of a closing model.
func (m *Model) stopTimersLocked() {
	for _, a := range m.apps {
		if a.leaseTimer != nil {
			a.leaseTimer.Stop()
			a.leaseTimer = nil
		}
	}
	for _, u := range m.units {
		m.stopRetryLocked(u, false)
	}
}
