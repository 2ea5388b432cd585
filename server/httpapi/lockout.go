package httpapi

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// lockout rate-limits failed admin logins per user and per source address: after
// maxFailures failures within window, further attempts (even with the right password) are
// refused until lockFor has passed since the last failure. A success clears the user's
// count. Counters live in memory per unit: with N units behind haproxy an attacker gets at
// most N times the allowance, still a handful of guesses per window.
type lockout struct {
	mu      sync.Mutex
	now     func() time.Time
	window  time.Duration
	lockFor time.Duration
	limits  map[string]int // kind -> max failures
	entries map[string]*failures
}

type failures struct {
	count int
	first time.Time
	last  time.Time
}

// Lockout defaults: 5 failed logins per user or 20 per address within 15 minutes lock the
// user or address for 15 minutes. The table holds at most maxLockoutEntries counters: past
// that, expired ones go first, then the least recently failed.
const (
	userFailureLimit    = 5
	addressFailureLimit = 20
	lockoutWindow       = 15 * time.Minute
	maxLockoutEntries   = 10_000
)

func newLockout(now func() time.Time) *lockout {
	return &lockout{
		now:     now,
		window:  lockoutWindow,
		lockFor: lockoutWindow,
		limits:  map[string]int{"user": userFailureLimit, "address": addressFailureLimit},
		entries: map[string]*failures{},
	}
}

// check returns an error naming what is locked, and for how long, or nil.
func (l *lockout) check(user, addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range [][2]string{{"user", user}, {"address", addr}} {
		if k[1] == "" {
			continue
		}
		f := l.entries[k[0]+"\x00"+k[1]]
		if f == nil || f.count < l.limits[k[0]] {
			continue
		}
		if left := f.last.Add(l.lockFor).Sub(now); left > 0 {
			return fmt.Errorf("too many failed logins for this %s: try again in %d minutes", k[0], int(math.Ceil(left.Minutes())))
		}
	}
	return nil
}

// fail records a failed login. user is empty when the name is no configured user: such
// failures count against the address only, so a spray of invented names adds no entries.
func (l *lockout) fail(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	keys := []string{"address\x00" + addr}
	if user != "" {
		keys = append(keys, "user\x00"+user)
	}
	for _, key := range keys {
		f := l.entries[key]
		if f == nil || now.Sub(f.first) > l.window && now.Sub(f.last) > l.lockFor {
			if f == nil {
				l.makeRoom(now)
			}
			f = &failures{first: now}
			l.entries[key] = f
		}
		f.count++
		f.last = now
	}
}

// makeRoom keeps the table under maxLockoutEntries before an insertion: it drops the
// expired counters and, when none expired, the least recently failed one.
func (l *lockout) makeRoom(now time.Time) {
	if len(l.entries) < maxLockoutEntries {
		return
	}
	var oldest string
	var oldestAt time.Time
	for k, f := range l.entries {
		if now.Sub(f.last) > l.lockFor && now.Sub(f.first) > l.window {
			delete(l.entries, k)
			continue
		}
		if oldest == "" || f.last.Before(oldestAt) {
			oldest, oldestAt = k, f.last
		}
	}
	if len(l.entries) >= maxLockoutEntries {
		delete(l.entries, oldest)
	}
}

// len returns the number of counters held.
func (l *lockout) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// succeed clears a user's failures.
func (l *lockout) succeed(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, "user\x00"+user)
}
