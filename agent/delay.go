package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// Client delays, as Canonical's client has them: cutoff-date never applies a patch
// published after a date, patch-delay applies one only once it has been published for a
// while. A patch held back is treated as no offer: a loaded patch stays loaded.

// parseCutoffDate parses a date (2026-01-31, the start of that day in UTC) or an RFC 3339
// time.
func parseCutoffDate(v string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid cutoff-date %.40q: want a date such as 2026-01-31 or an RFC 3339 time such as 2026-01-31T12:00:00Z", v)
	}
	return t.UTC(), nil
}

// maxPatchDelay bounds patch-delay.
const maxPatchDelay = 365 * 24 * time.Hour

// parsePatchDelay parses a delay as a number and a unit: s, m, h, d (days) or w (weeks).
func parsePatchDelay(v string) (time.Duration, error) {
	bad := fmt.Errorf("invalid patch-delay %.40q: want a number and a unit s, m, h, d or w, such as 3d, at most 52w", v)
	units := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}
	if len(v) < 2 {
		return 0, bad
	}
	unit, ok := units[v[len(v)-1:]]
	n, err := strconv.Atoi(strings.TrimSpace(v[:len(v)-1]))
	if !ok || err != nil || n < 0 || time.Duration(n) > maxPatchDelay/unit {
		return 0, bad
	}
	return time.Duration(n) * unit, nil
}

// holdBack returns why the configured delays hold offer back at now, or "" when they do
// not (or there is no offer).
func (c *Config) holdBack(offer *server.PatchOffer, now time.Time) string {
	if offer == nil || (c.CutoffDate == "" && c.PatchDelay == "") {
		return ""
	}
	if offer.Published.IsZero() {
		return fmt.Sprintf("patch %s held back: the server gives no publication date for cutoff-date and patch-delay", offer.Version)
	}
	if c.CutoffDate != "" {
		if cutoff, err := parseCutoffDate(c.CutoffDate); err == nil && offer.Published.After(cutoff) {
			return fmt.Sprintf("patch %s held back: published %s, after the cutoff-date %s",
				offer.Version, offer.Published.UTC().Format(time.RFC3339), cutoff.Format(time.RFC3339))
		}
	}
	if c.PatchDelay != "" {
		if delay, err := parsePatchDelay(c.PatchDelay); err == nil && now.Before(offer.Published.Add(delay)) {
			return fmt.Sprintf("patch %s held back until %s: patch-delay %s", offer.Version,
				offer.Published.Add(delay).UTC().Format(time.RFC3339), c.PatchDelay)
		}
	}
	return ""
}
