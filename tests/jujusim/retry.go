package jujusim

import (
	"fmt"
	"strconv"
	"time"

	"github.com/juju/clock"
)

// The hook retry strategy Juju's controller hands every uniter (apiserver retrystrategy): the
// first retry 5s after the failure, each next delay twice the last with ±3% jitter, at most 5
// minutes; back to 5s after a hook succeeds.
const (
	retryTimeMin    = 5 * time.Second
	retryTimeMax    = 5 * time.Minute
	retryTimeFactor = 2
	retryJitter     = 0.03
)

// retryState is the uniter's backoff timer for a unit in error.
type retryState struct {
	delay time.Duration // the delay the timer starts with next
	timer clock.Timer   // running while the unit waits for a retry
	due   bool          // the timer fired: run the failed hook again
}

// startRetryLocked starts the backoff timer of a unit whose hook just failed, when the model
// retries hooks (automatically-retry-hooks), as the uniter's resolver does on a hook error.
func (m *Model) startRetryLocked(u *unit) {
	if !m.retryHooks {
		return
	}
	if u.retry.delay == 0 {
		u.retry.delay = retryTimeMin
	}
	failed := u.failed
	d := u.retry.delay
	u.retry.timer = m.clock.AfterFunc(d, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if u.failed == failed && !m.closed && m.retryHooks {
			u.retry.due = true
			m.notifyLocked()
		}
	})
	u.retry.delay = nextRetryDelay(d, u.rng.Float64())
	m.logLocked(u.name, "INFO", fmt.Sprintf("retrying hook %q in %s", failed.hookName(), d))
}

// nextRetryDelay is BackoffTimer.increaseDuration: twice d, jittered by (2r-1)·3%, capped.
func nextRetryDelay(d time.Duration, r float64) time.Duration {
	next := d * retryTimeFactor
	next += time.Duration(float64(next) * (r*2 - 1) * retryJitter)
	return min(next, retryTimeMax)
}

// stopRetryLocked stops a pending retry; reset also brings the delay back to its minimum (a
// hook succeeded, or the operator resolved the unit).
func (m *Model) stopRetryLocked(u *unit, reset bool) {
	if u.retry.timer != nil {
		u.retry.timer.Stop()
		u.retry.timer = nil
	}
	u.retry.due = false
	if reset {
		u.retry.delay = retryTimeMin
	}
}

// SetModelConfig sets model configuration as `juju model-config key=value` does. Only
// automatically-retry-hooks (default true) changes what the emulator does.
func (m *Model) SetModelConfig(values map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range values {
		switch k {
		case "automatically-retry-hooks":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("cannot set model config: automatically-retry-hooks: expected bool, got %q", v)
			}
			m.retryHooks = b
			if !b {
				for _, u := range m.units {
					m.stopRetryLocked(u, false)
				}
			}
		default:
			return fmt.Errorf("cannot set model config: unknown key %q", k)
		}
	}
	m.notifyLocked()
	return nil
}

// ModelConfig returns the model configuration the emulator knows.
func (m *Model) ModelConfig() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return map[string]string{"automatically-retry-hooks": strconv.FormatBool(m.retryHooks)}
}
