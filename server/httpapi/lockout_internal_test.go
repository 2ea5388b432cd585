package httpapi

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestLockoutAddress(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLockout(func() time.Time { return now })
	for i := range addressFailureLimit {
		if err := l.check(fmt.Sprintf("user%d", i), "192.0.2.9"); err != nil {
			t.Fatalf("attempt %d refused early: %v", i, err)
		}
		l.fail(fmt.Sprintf("user%d", i), "192.0.2.9")
	}
	if err := l.check("admin", "192.0.2.9"); err == nil || !strings.Contains(err.Error(), "this address") {
		t.Errorf("sprayed address: %v, want locked", err)
	}
	if err := l.check("admin", "192.0.2.10"); err != nil {
		t.Errorf("another address: %v", err)
	}
	now = now.Add(lockoutWindow + time.Second)
	if err := l.check("admin", "192.0.2.9"); err != nil {
		t.Errorf("after the window: %v", err)
	}
}

func TestLockoutPair(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLockout(func() time.Time { return now })
	for range pairFailureLimit - 1 {
		l.fail("admin", "192.0.2.1")
	}
	l.succeed("admin", "192.0.2.1") // a success forgets earlier failures
	for range pairFailureLimit - 1 {
		l.fail("admin", "192.0.2.1")
	}
	if err := l.check("admin", "192.0.2.1"); err != nil {
		t.Fatalf("locked after a success reset: %v", err)
	}
	l.fail("admin", "192.0.2.1")
	err := l.check("admin", "192.0.2.1")
	if err == nil || err.Error() != "too many failed logins for this user from this address: try again in 15 minutes" {
		t.Errorf("check = %v", err)
	}
	// An outsider's failures do not lock the administrator out elsewhere.
	if err := l.check("admin", "198.51.100.1"); err != nil {
		t.Errorf("another address: %v", err)
	}
	// One IPv6 host rotating through its /64 is one address.
	for i := range pairFailureLimit {
		l.fail("admin", fmt.Sprintf("2001:db8:1:2::%x", i+1))
	}
	if err := l.check("admin", "2001:db8:1:2:ffff::1"); err == nil {
		t.Errorf("IPv6 /64 rotation escapes the lock")
	}
	if err := l.check("admin", "2001:db8:1:3::1"); err != nil {
		t.Errorf("another /64: %v", err)
	}
	now = now.Add(10 * time.Minute)
	if err := l.check("admin", "192.0.2.1"); err == nil || !strings.Contains(err.Error(), "in 5 minutes") {
		t.Errorf("after 10 minutes: %v", err)
	}
}

func TestLockoutGlobal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLockout(func() time.Time { return now })
	// A distributed guesser: one failure from each of many addresses.
	for i := range globalFailureLimit {
		addr := fmt.Sprintf("203.0.%d.%d", i/250, i%250)
		if err := l.check("admin", addr); err != nil {
			t.Fatalf("attempt %d refused before the throttle: %v", i, err)
		}
		l.fail("admin", addr)
	}
	// Addresses that failed are refused now, even below their own limits...
	if err := l.check("admin", "203.0.0.1"); err == nil || !strings.Contains(err.Error(), "on this server") {
		t.Errorf("a failing address under the throttle: %v", err)
	}
	// ...while an address without failures still logs in.
	if err := l.check("admin", "192.0.2.50"); err != nil {
		t.Errorf("a clean address under the throttle: %v", err)
	}
	now = now.Add(lockoutWindow + time.Second)
	if err := l.check("admin", "203.0.0.1"); err != nil {
		t.Errorf("after the window: %v", err)
	}
}

func TestLockoutBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLockout(func() time.Time { return now })
	for i := range 2 * maxLockoutEntries {
		now = now.Add(time.Millisecond)
		l.fail("admin", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := l.len(); n > maxLockoutEntries {
		t.Errorf("lockout table holds %d entries, want at most %d", n, maxLockoutEntries)
	}
	// The latest offender is still counted: eviction takes the least recent first.
	for range addressFailureLimit {
		l.fail("", "198.51.100.7")
	}
	if err := l.check("", "198.51.100.7"); err == nil {
		t.Errorf("an address over its limit is not locked")
	}
	// Failures for names that are no configured user add no user entries.
	l = newLockout(func() time.Time { return now })
	for i := range 100 {
		l.fail("", fmt.Sprint("192.0.2.", i))
	}
	if n := l.len(); n != 100 {
		t.Errorf("unknown users added entries: %d, want 100", n)
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", 300)
	got := clip(long)
	if len(got) > maxLogValue+32 || !strings.HasSuffix(got, "...(600 bytes)") || !utf8.ValidString(got) {
		t.Errorf("clip(600 bytes) = %q", got)
	}
	if got := clip("a\xffb"); got != "a\ufffdb" {
		t.Errorf("clip(invalid UTF-8) = %q", got)
	}
}
