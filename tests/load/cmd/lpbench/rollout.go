package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// rolloutTarget is the check-in throughput with a rollout policy that the requirement
// asks for, as a fraction of the same without one.
const rolloutTarget = 0.8

// rolloutRounds is how many times each of "without a policy" and "with a policy" is
// measured, interleaved, so that the noise of a shared machine falls on both alike.
const rolloutRounds = 3

// rolloutPolicy is the policy every tier gets while measured with one: a rollout in
// progress, most machines held back, every check-in consulting it.
func rolloutPolicy(tier string) server.RolloutPolicy {
	return server.RolloutPolicy{Tier: tier, Canaries: 10, RateLimit: 600, RatePeriod: server.Duration(time.Minute),
		MaxInFlight: 2000, FailureThreshold: 20}
}

// rollout measures check-ins through haproxy to two units with a rollout policy in every
// tier against the same without one, in max mode (closed loop), interleaved: without, with,
// without, with... A newer patch for every kernel is uploaded first, so that no machine
// runs the newest patch of its tier and every check-in of the policy rounds consults the
// rollout state (the heaviest case: a rollout in every tier at once).
func (b *bench) rollout(ctx context.Context, c *catalog) error {
	b.logf("Rollout: starting two units and haproxy")
	units := make([]*unit, 2)
	for i, host := range []string{unit1Host, unit2Host} {
		un, err := b.startUnit(ctx, fmt.Sprintf("rollout%d", i+1), host, load.Unit{DSN: c.dsn, URLTemplate: "http://" + haproxyHost + "/patches/{filename}"})
		if err != nil {
			return err
		}
		defer b.stop(un.proc)
		units[i] = un
	}
	px, err := b.startHAProxy(ctx, "haproxy-rollout", []load.Frontend{{Name: "two", Servers: []string{units[0].addr, units[1].addr}}})
	if err != nil {
		return err
	}
	defer b.stop(px.proc)
	admin, err := b.adminClient(ctx, "http://"+units[0].addr)
	if err != nil {
		return err
	}
	if err := uploadNewer(ctx, admin); err != nil {
		return err
	}
	machines := newMachines(b.size.machines)
	for _, m := range machines {
		m.id = "r" + m.id[1:] // not the machines of the check-ins phase
	}
	b.logf("Enabling %d machines through haproxy", len(machines))
	if _, err := b.enable(ctx, px.urls["two"], c, machines); err != nil {
		return err
	}
	hc := load.NewHTTPClient(b.size.maxConc)
	defer hc.CloseIdleConnections()
	do := checkInFunc(hc, px.urls["two"], machines)
	servers := []*load.Process{units[0].proc, units[1].proc}
	plan := load.Plan{Mode: load.ClosedLoop, Concurrency: b.size.maxConc, Warmup: b.size.warmup, Duration: b.size.maxDur}
	var without, with []*step
	for round := range rolloutRounds {
		for _, policy := range []bool{false, true} {
			if err := setPolicies(ctx, admin, policy); err != nil {
				return err
			}
			// Both units reload the catalog, which holds the policies, within a refresh (2s).
			if err := pause(ctx, 3*time.Second); err != nil {
				return err
			}
			st, err := b.measure(ctx, plan, servers, px.proc, do)
			if err != nil {
				return err
			}
			name := "without"
			if policy {
				name, with = "with", append(with, st)
			} else {
				without = append(without, st)
			}
			b.logf("Check-ins %s a rollout policy, round %d: %7.0f/s, p50 %s, p99 %s, errors %d %s", name, round+1, st.res.Throughput(),
				load.Millis(st.res.Latency.Quantile(0.5)), load.Millis(st.res.Latency.Quantile(0.99)), st.res.ErrorCount(), st.res.ErrorSummary())
		}
	}
	if err := setPolicies(ctx, admin, false); err != nil {
		return err
	}
	b.rolloutReport(without, with)
	return nil
}

// uploadNewer uploads, for every kernel of the fleet, a patch newer than the one the
// machines report, promoted to every tier.
func uploadNewer(ctx context.Context, admin *client.Client) error {
	seen := map[string]bool{}
	for _, k := range load.FleetKernels {
		abi, flavour, err := server.SplitKernelRelease(k.Release)
		if err != nil {
			return err
		}
		version := k.PatchVersion + ".1"
		name := server.PatchName{Kernel: abi, Flavour: flavour, Version: version, Architecture: k.Architecture}
		if seen[name.Filename()] {
			continue
		}
		seen[name.Filename()] = true
		var buf bytes.Buffer
		if err := patchfile.Generate(&buf, patchfile.Metadata(abi, flavour, version, k.Architecture), 64<<10); err != nil {
			return err
		}
		if _, _, err := admin.UploadPatch(ctx, name.Filename(), bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
			return fmt.Errorf("cannot upload %s: %w", name.Filename(), err)
		}
		if _, err := admin.PromotePatch(ctx, version, "stable"); err != nil {
			return fmt.Errorf("cannot promote %s: %w", version, err)
		}
	}
	return nil
}

// setPolicies gives every tier of the fleet the rollout policy, or none.
func setPolicies(ctx context.Context, admin *client.Client, on bool) error {
	for _, t := range load.FleetTiers {
		if on {
			if _, err := admin.SetRolloutPolicy(ctx, rolloutPolicy(t.Value)); err != nil {
				return fmt.Errorf("cannot set the rollout policy of %s: %w", t.Value, err)
			}
			continue
		}
		err := admin.DeleteRolloutPolicy(ctx, t.Value)
		if apiErr, ok := errors.AsType[*client.APIError](err); ok && apiErr.Code == server.CodeNotFound {
			continue // none yet
		}
		if err != nil {
			return fmt.Errorf("cannot delete the rollout policy of %s: %w", t.Value, err)
		}
	}
	return nil
}

// rolloutReport adds the ratio row and every round to the report.
func (b *bench) rolloutReport(without, with []*step) {
	mean := func(steps []*step) float64 {
		var sum float64
		for _, s := range steps {
			sum += s.res.Throughput()
		}
		return sum / float64(len(steps))
	}
	errs := 0
	for _, s := range append(append([]*step{}, without...), with...) {
		errs += s.res.ErrorCount()
	}
	a, p := mean(without), mean(with)
	b.report.Summary = append(b.report.Summary, load.Row{
		ID: "5a", Measurement: fmt.Sprintf("check-ins with a rollout policy in every tier, 2 units: max mode (closed loop, %d workers), mean of %d rounds interleaved with the same without", b.size.maxConc, len(with)),
		Result:  fmt.Sprintf("%.0f/s, %d errors", p, errs),
		Ceiling: fmt.Sprintf("%.0f/s without a policy", a), Ratio: load.Ratio(p, a),
		Target: fmt.Sprintf("≥ %.1f of without", rolloutTarget), Met: load.Verdict(errs == 0 && a > 0 && p >= rolloutTarget*a),
	})
	sec := load.Section{
		Title: "5. Check-ins with and without a rollout policy",
		Text: fmt.Sprintf(`Two units behind haproxy; a patch newer than the one every machine reports is in every
tier, so with a policy (canaries 10, rate 600/1m, max in flight 2000, failure threshold 20%%, in
every tier) every check-in consults the in-memory rollout state, and most are held back. Rounds
alternate without and with, %d of each, closed loop with %d workers.`, len(with), b.size.maxConc),
		Header: []string{"policy", "round", "achieved/s", "p50", "p99", "max", "errors", "cores gen / px / srv / pg"},
	}
	for i := range with {
		for _, r := range []struct {
			name string
			st   *step
		}{{"without", without[i]}, {"with", with[i]}} {
			row := stepRow(r.name, fmt.Sprint(i+1), r.st, "")
			sec.Rows = append(sec.Rows, row[:len(row)-1])
		}
	}
	b.report.Sections = append(b.report.Sections, sec)
}
