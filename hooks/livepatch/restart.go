package livepatch

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Rolling restarts. A unit whose server is running never restarts it on its own initiative:
// it restarts when the rolling restart generation in the peer application bag is newer
// than the one it last restarted at, and only once every unit before it (in unit-number
// order) has published, in its peer unit bag, that it restarted at that generation and
// answered healthy. A unit whose configuration or binary changed asks the leader for a new
// generation (PeerRestartWanted); the leader starts one when the previous generation is
// through, and schema-upgrade starts one after migrating. So at most one unit is ever down,
// and a unit that does not come back healthy holds the rest: the others keep serving with
// what they run.

// Timing of the health wait after a restart.
const (
	// HealthTimeout bounds the wait for a restarted server to answer healthy.
	HealthTimeout = 2 * time.Minute
	// HealthSettle is how long a restarted server must keep answering healthy before the
	// next unit restarts: long enough for haproxy (check inter 1s, rise 2) to take it back.
	HealthSettle = 3 * time.Second
	// healthPollMax caps the time between two polls.
	healthPollMax = time.Second
	// healthPollFirst is the time before the second poll; the delay doubles up to
	// healthPollMax.
	healthPollFirst = 100 * time.Millisecond
	// healthMaxPolls bounds the loop whatever the clock does.
	healthMaxPolls = 1000
)

// Messages of the rolling restart.
const (
	// MessageUnhealthyPrefix starts the status of a unit whose server did not answer
	// healthy after its restart.
	MessageUnhealthyPrefix = "livepatch-server did not become healthy after its restart: "
	// MessageUnhealthySuffix ends it.
	MessageUnhealthySuffix = "; the rolling restart waits for this unit"
)

// ensureRunning (re)starts the server when this unit's turn in a rolling restart comes, and
// starts it at once the first time. binary is the machine path of the binary to run (a staged
// one replaces ServerBinary at the restart). note, when not empty, qualifies an Active status
// (a restart waits); a non-zero status stops the guard chain.
func ensureRunning(ctx context.Context, c *hooks.Context, u *Unit, binary string) (note string, st hooks.Status, err error) {
	binarySum, err := fileSHA256(c, binary)
	if err != nil {
		return "", hooks.Status{}, err
	}
	have, err := readRecord(c)
	if err != nil {
		return "", hooks.Status{}, err
	}
	want := record{ConfigSHA256: u.configSHA256(), BinarySHA256: binarySum}
	var changed []string
	if have.ConfigSHA256 != want.ConfigSHA256 {
		changed = append(changed, "configuration")
	}
	if have.BinarySHA256 != want.BinarySHA256 {
		changed = append(changed, "binary")
	}
	peered := u.Peer.RelID != ""
	gen := u.Peer.Generation()
	if u.Leader && peered {
		if gen, err = coordinate(ctx, c, u, have, gen, len(changed) > 0); err != nil {
			return "", hooks.Status{}, err
		}
	}
	restart := func(why string) (string, hooks.Status, error) {
		if len(changed) > 0 {
			why += "; changed: " + strings.Join(changed, ", ")
		}
		want.Generation = gen
		st, err := restartServer(ctx, c, u, binary, want, why)
		return "", st, err
	}
	switch {
	case !have.started():
		return restart("first start")
	case !peered && len(changed) > 0:
		// A unit without peers yet has no one to take turns with.
		return restart("no peers")
	case have.Generation < gen:
		if blocker := u.Peer.Blocker(c.UnitName(), gen); blocker != "" {
			return fmt.Sprintf("restart queued behind %s (rolling restart %d)", blocker, gen), hooks.Status{}, nil
		}
		return restart(fmt.Sprintf("rolling restart %d", gen))
	case len(changed) > 0:
		wanted := map[string]string{PeerRestartWanted: strconv.Itoa(have.Generation)}
		if err := setIfChanged(u.Peer.Own, wanted, func(d map[string]string) error { return c.RelationSet(ctx, u.Peer.RelID, d) }); err != nil {
			return "", hooks.Status{}, err
		}
		return fmt.Sprintf("restart pending (%s changed): waiting for the leader to start the next rolling restart", strings.Join(changed, ", ")), hooks.Status{}, nil
	case !have.Healthy:
		// The last restart did not answer healthy in time: look again.
		if problem := checkServer(ctx, c, serverAddress(u)); problem != "" {
			return "", hooks.Blocked(MessageUnhealthyPrefix + problem + MessageUnhealthySuffix), nil
		}
		have.Healthy = true
		if err := writeRecord(c, have); err != nil {
			return "", hooks.Status{}, err
		}
		c.Logf(ctx, "The server answers healthy again (rolling restart %d)", have.Generation)
	}
	return "", hooks.Status{}, publishRestarted(ctx, c, u, have.Generation)
}

// coordinate runs on the leader: it starts the next rolling restart generation when a unit
// (the leader included) asks for a restart and every unit has passed the current one. It
// returns the generation now in force.
func coordinate(ctx context.Context, c *hooks.Context, u *Unit, self record, gen int, selfChanged bool) (int, error) {
	selfWants := self.started() && self.Generation >= gen && selfChanged
	if !selfWants && !u.Peer.RestartWanted(gen) {
		return gen, nil
	}
	selfThrough := !self.started() || (self.Healthy && self.Generation >= gen)
	if !selfThrough || len(u.Peer.Pending(gen)) > 0 {
		return gen, nil // the current generation is still rolling; it is asked again later
	}
	gen++
	if err := c.RelationSetApp(ctx, u.Peer.RelID, map[string]string{PeerRestartGeneration: strconv.Itoa(gen)}); err != nil {
		return 0, err
	}
	u.Peer.Data[PeerRestartGeneration] = strconv.Itoa(gen)
	c.Logf(ctx, "Starting rolling restart %d: the units restart one at a time in unit order", gen)
	return gen, nil
}

// restartServer switches to binary (when it is the staged one), restarts the server, records
// what it runs and waits until it answers healthy, then publishes that on the peer relation.
func restartServer(ctx context.Context, c *hooks.Context, u *Unit, binary string, rec record, why string) (hooks.Status, error) {
	if binary == StagedBinary {
		data, err := c.ReadFile(StagedBinary)
		if err != nil {
			return hooks.Status{}, fmt.Errorf("cannot read the staged server: %w", err)
		}
		if _, err := c.WriteFile(ServerBinary, data, 0o755); err != nil {
			return hooks.Status{}, err
		}
	}
	if err := serviceFiles(ctx, c, u); err != nil {
		return hooks.Status{}, err
	}
	if err := installUnit(ctx, c, u); err != nil {
		return hooks.Status{}, err
	}
	if err := Restart(ctx, c); err != nil {
		_ = c.JujuLog(ctx, hooks.LevelError, fmt.Sprintf("Restart failed: %v", err))
		return hooks.Blocked(MessageRestartFailed), nil
	}
	c.Logf(ctx, "Restarted livepatch-server (%s)", why)
	if binary == StagedBinary {
		if err := c.RemoveFile(StagedBinary); err != nil {
			return hooks.Status{}, err
		}
		if err := setApplicationVersion(ctx, c); err != nil {
			return hooks.Status{}, err
		}
	}
	// Recorded before the wait, so that a later hook does not restart it again.
	if err := writeRecord(c, rec); err != nil {
		return hooks.Status{}, err
	}
	if problem := waitHealthy(ctx, c, serverAddress(u)); problem != "" {
		return hooks.Blocked(MessageUnhealthyPrefix + problem + MessageUnhealthySuffix), nil
	}
	rec.Healthy = true
	if err := writeRecord(c, rec); err != nil {
		return hooks.Status{}, err
	}
	return hooks.Status{}, publishRestarted(ctx, c, u, rec.Generation)
}

// publishRestarted tells the other units that this one restarted at gen and is healthy.
func publishRestarted(ctx context.Context, c *hooks.Context, u *Unit, gen int) error {
	if u.Peer.RelID == "" {
		return nil
	}
	want := map[string]string{PeerRestartedGeneration: strconv.Itoa(gen), PeerRestartWanted: ""}
	if err := setIfChanged(u.Peer.Own, want, func(d map[string]string) error { return c.RelationSet(ctx, u.Peer.RelID, d) }); err != nil {
		return err
	}
	u.Peer.Own[PeerRestartedGeneration] = want[PeerRestartedGeneration]
	delete(u.Peer.Own, PeerRestartWanted)
	return nil
}

// serverAddress returns host:port of this unit's server.
func serverAddress(u *Unit) string {
	return net.JoinHostPort(u.Address, strconv.Itoa(u.Config.Port))
}

// waitHealthy polls the server's /debug/status until it has answered healthy for
// HealthSettle, or HealthTimeout has passed; it returns "" or the last problem seen. Time
// goes by the context's clock and timers.
func waitHealthy(ctx context.Context, c *hooks.Context, addr string) string {
	deadline := c.Now().Add(HealthTimeout)
	delay := healthPollFirst
	var healthySince time.Time
	problem := "no answer yet"
	for range healthMaxPolls {
		now := c.Now()
		if problem = checkServer(ctx, c, addr); problem == "" {
			if healthySince.IsZero() {
				healthySince = now
			}
			if now.Sub(healthySince) >= HealthSettle {
				return ""
			}
		} else {
			healthySince = time.Time{}
		}
		if now.After(deadline) {
			break
		}
		if err := c.Wait(ctx, delay); err != nil {
			return fmt.Sprintf("the hook was cancelled while waiting (%v)", err)
		}
		delay = min(2*delay, healthPollMax)
	}
	if problem == "" {
		problem = "it did not stay healthy"
	}
	return fmt.Sprintf("%s (waited %s)", problem, HealthTimeout)
}
