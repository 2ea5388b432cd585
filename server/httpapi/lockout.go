package httpapi

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// lockout rate-limits failed admin logins so that guessing stays slow without letting an
// outsider lock the real administrator out:
//
//   - a user is locked from one address after pairFailureLimit failures from there: the
//     same user still logs in from any other address;
//   - an address is locked after addressFailureLimit failures for any users;
//   - a server-wide throttle: once globalFailureLimit failures happened in the window, an
//     address with a failure in the window is refused, while addresses without one (the
//     administrator's usual desk) still log in.
//
// A lock lasts lockFor after the last failure; a success clears the failures of that user at
// that address. IPv6 addresses count per /64, the block a single host usually holds.
// Counters live in memory per unit: with N units behind haproxy an attacker gets at most N
// times the allowance.
type lockout struct {
	mu      sync.Mutex
	now     func() time.Time
	window  time.Duration
	lockFor time.Duration
	entries map[string]*failures
	global  failures
}

type failures struct {
	count int
	first time.Time
	last  time.Time
}

// Lockout defaults: 5 failed logins of one user from one address, 20 from one address, or
// 100 on the whole unit within 15 minutes lock for 15 minutes. The table holds at most
// maxLockoutEntries counters: past that, expired ones go first, then the least recently
// failed.
const (
	pairFailureLimit    = 5
	addressFailureLimit = 20
	globalFailureLimit  = 100
	lockoutWindow       = 15 * time.Minute
	maxLockoutEntries   = 10_000
)

func newLockout(now func() time.Time) *lockout {
	return &lockout{
		now:     now,
		window:  lockoutWindow,
		lockFor: lockoutWindow,
		entries: map[string]*failures{},
	}
}

// addressKey is the counter key of an address: IPv6 addresses by their /64.
func addressKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return "address\x00" + addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "address\x00" + p.String()
	}
	return "address\x00" + ip.String()
}

func pairKey(user, addr string) string { return "pair\x00" + user + "\x00" + addressKey(addr) }

// active reports whether f still counts at now.
func (l *lockout) active(f *failures, now time.Time) bool {
	return f != nil && (now.Sub(f.first) <= l.window || now.Sub(f.last) <= l.lockFor)
}

// locked returns how long f stays locked at limit, or 0.
func (l *lockout) locked(f *failures, limit int, now time.Time) time.Duration {
	if f == nil || f.count < limit {
		return 0
	}
	return max(f.last.Add(l.lockFor).Sub(now), 0)
}

func minutes(d time.Duration) int { return int(math.Ceil(d.Minutes())) }

// check returns an error naming what is locked, and for how long, or nil. user is empty
// when the name is no configured user.
func (l *lockout) check(user, addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if user != "" {
		if left := l.locked(l.entries[pairKey(user, addr)], pairFailureLimit, now); left > 0 {
			return fmt.Errorf("too many failed logins for this user from this address: try again in %d minutes", minutes(left))
		}
	}
	a := l.entries[addressKey(addr)]
	if left := l.locked(a, addressFailureLimit, now); left > 0 {
		return fmt.Errorf("too many failed logins from this address: try again in %d minutes", minutes(left))
	}
	if left := l.locked(&l.global, globalFailureLimit, now); left > 0 && l.active(a, now) {
		return fmt.Errorf("too many failed logins on this server, and this address had some: try again in %d minutes", minutes(left))
	}
	return nil
}

// fail records a failed login. user is empty when the name is no configured user: such
// failures count against the address only, so a spray of invented names adds no entries.
func (l *lockout) fail(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	keys := []string{addressKey(addr)}
	if user != "" {
		keys = append(keys, pairKey(user, addr))
	}
	for _, key := range keys {
		f := l.entries[key]
		if f == nil {
			l.makeRoom(now)
			f = &failures{}
			l.entries[key] = f
		}
		l.count(f, now)
	}
	l.count(&l.global, now)
}

// count adds a failure to f, starting a new window when the old one is over.
func (l *lockout) count(f *failures, now time.Time) {
	if !l.active(f, now) {
		*f = failures{first: now}
	}
	f.count++
	f.last = now
}

// makeRoom keeps the table under maxLockoutEntries before an insertion: when it is full it
// drops the expired counters and, when fewer than a tenth expired, the least recently
// failed counters down to nine tenths of the bound. Each full scan so makes room for many
// insertions: an attacker filling the table costs amortised O(log n) per failure, not a
// scan of the table each.
func (l *lockout) makeRoom(now time.Time) {
	if len(l.entries) < maxLockoutEntries {
		return
	}
	type aged struct {
		key  string
		last time.Time
	}
	live := make([]aged, 0, len(l.entries))
	for k, f := range l.entries {
		if !l.active(f, now) {
			delete(l.entries, k)
			continue
		}
		live = append(live, aged{k, f.last})
	}
	target := maxLockoutEntries - maxLockoutEntries/10
	if len(live) <= target {
		return
	}
	slices.SortFunc(live, func(a, b aged) int { return a.last.Compare(b.last) })
	for _, a := range live[:len(live)-target] {
		delete(l.entries, a.key)
	}
}

// succeed clears the failures of user at addr.
func (l *lockout) succeed(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, pairKey(user, addr))
}

// len returns the number of counters held.
func (l *lockout) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
