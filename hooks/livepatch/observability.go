package livepatch

import (
	"context"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch/cos"
)

const (
	// COSAgentEndpoint provides cos_agent to the grafana-agent or opentelemetry-collector
	// subordinate (limit 1).
	COSAgentEndpoint = "cos-agent"
	// MetricsEndpoint provides prometheus_scrape to a Prometheus related directly.
	MetricsEndpoint = "metrics-endpoint"
	// charmName is the charm's name in the Juju topology.
	charmName = "livepatch"
)

// topology is this unit's Juju topology for what it gives COS.
func topology(c *hooks.Context) cos.Topology {
	return cos.Topology{Model: c.Getenv("JUJU_MODEL_NAME"), ModelUUID: c.ModelUUID(),
		Application: c.AppName(), Unit: c.UnitName(), CharmName: charmName}
}

// publishCOS publishes this unit's scrape target, the alert rules and the dashboards on
// every cos-agent and metrics-endpoint relation; the leader also writes the
// metrics-endpoint application data. Nothing is written when nothing changed.
func publishCOS(ctx context.Context, c *hooks.Context, u *Unit) error {
	agents, err := liveRelationIDs(ctx, c, COSAgentEndpoint)
	if err != nil {
		return err
	}
	scrapes, err := liveRelationIDs(ctx, c, MetricsEndpoint)
	if err != nil {
		return err
	}
	if len(agents) == 0 && len(scrapes) == 0 {
		return nil
	}
	t := topology(c)
	if len(agents) > 0 {
		want, err := cos.AgentData(t, u.Config.Port)
		if err != nil {
			return err
		}
		for _, id := range agents {
			if err := setUnitData(ctx, c, id, want); err != nil {
				return err
			}
		}
	}
	if len(scrapes) == 0 {
		return nil
	}
	var app map[string]string
	if u.Leader {
		if app, err = cos.ScrapeAppData(t, u.Config.Port); err != nil {
			return err
		}
	}
	for _, id := range scrapes {
		if err := setUnitData(ctx, c, id, cos.ScrapeUnitData(u.Address, c.UnitName())); err != nil {
			return err
		}
		if app == nil {
			continue
		}
		have, err := c.RelationGetApp(ctx, id, c.AppName())
		if err != nil {
			return err
		}
		if err := setIfChanged(have, app, func(d map[string]string) error { return c.RelationSetApp(ctx, id, d) }); err != nil {
			return err
		}
	}
	return nil
}

// setUnitData writes want into this unit's data on relation id where it differs.
func setUnitData(ctx context.Context, c *hooks.Context, id string, want map[string]string) error {
	have, err := c.RelationGet(ctx, id, c.UnitName())
	if err != nil {
		return err
	}
	return setIfChanged(have, want, func(d map[string]string) error { return c.RelationSet(ctx, id, d) })
}
