package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// TestClientDelays checks that cutoff-date and patch-delay hold an offered patch back, a
// loaded patch staying loaded, and that a held patch is applied once the delay is over.
func TestClientDelays(t *testing.T) {
	e := newTestEnv(t)
	e.now = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	first, _ := e.offer(t, "107.1")
	first.Published = e.now.Add(-72 * time.Hour)
	e.configure(t, "cutoff-date", "2026-02-28", "patch-delay", "2d")
	if st := e.enable(t).State; st.Applied == nil || st.Applied.Version != "107.1" {
		t.Fatalf("a patch published before the cutoff, 3 days ago: applied %+v, reason %q", st.Applied, st.Reason)
	}

	// Published after the cutoff date: held back, the loaded patch stays.
	late, _ := e.offer(t, "107.2")
	late.Published = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	st, err := e.agent.Refresh(t.Context())
	if err != nil || st.Applied.Version != "107.1" || st.PatchState != server.StateApplied {
		t.Fatalf("after the cutoff: %v, applied %+v, state %q", err, st.Applied, st.PatchState)
	}
	e.configure(t, "cutoff-date", "")
	e.configure(t, "patch-delay", "2d")

	// Within the patch delay: held back until it is over.
	st, err = e.agent.Refresh(t.Context())
	if err != nil || st.Applied.Version != "107.1" {
		t.Fatalf("within the delay: %v, applied %+v", err, st.Applied)
	}
	e.now = late.Published.Add(48*time.Hour + time.Minute)
	if st, err = e.agent.Refresh(t.Context()); err != nil || st.Applied.Version != "107.2" {
		t.Fatalf("after the delay: %v, applied %+v, reason %q", err, st.Applied, st.Reason)
	}

	// A server that gives no publication date: held back, and said why.
	e2 := newTestEnv(t)
	e2.offer(t, "107.1")
	e2.configure(t, "patch-delay", "1h")
	if st := e2.enable(t).State; st.Applied != nil || !strings.Contains(st.Reason, "no publication date") {
		t.Errorf("no publication date: applied %+v, reason %q", st.Applied, st.Reason)
	}
}

func TestClientDelayConfig(t *testing.T) {
	for _, tc := range []struct{ key, value, err string }{
		{"cutoff-date", "yesterday", "invalid cutoff-date"},
		{"cutoff-date", "2026-13-01", "invalid cutoff-date"},
		{"patch-delay", "3 days", "invalid patch-delay"},
		{"patch-delay", "53w", "invalid patch-delay"},
		{"patch-delay", "-1d", "invalid patch-delay"},
		{"patch-delay", "d", "invalid patch-delay"},
	} {
		var c Config
		if err := c.Set(tc.key, tc.value); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s=%s: error %v, want %q", tc.key, tc.value, err, tc.err)
		}
	}
	var c Config
	if err := c.Set("cutoff-date", "2026-01-31T12:00:00+02:00"); err != nil || c.CutoffDate != "2026-01-31T10:00:00Z" {
		t.Errorf("cutoff-date: %v, %q", err, c.CutoffDate)
	}
	if err := c.Set("patch-delay", "1w"); err != nil || c.check() != nil {
		t.Errorf("patch-delay: %v", err)
	}
}
