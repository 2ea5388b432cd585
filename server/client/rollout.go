package client

import (
	"context"
	"net/http"

	"github.com/livepatch-onprem/livepatch/server"
)

// RolloutPolicies lists every tier's rollout policy.
func (c *Client) RolloutPolicies(ctx context.Context) ([]server.RolloutPolicy, error) {
	var out struct {
		Policies []server.RolloutPolicy `json:"policies"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/rollout-policies", out: &out})
	return out.Policies, err
}

// RolloutPolicy returns a tier's rollout policy; not-found when it has none.
func (c *Client) RolloutPolicy(ctx context.Context, tier string) (server.RolloutPolicy, error) {
	var out server.RolloutPolicy
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/tiers/" + esc(tier) + "/rollout-policy", out: &out})
	return out, err
}

// SetRolloutPolicy sets a tier's rollout policy (p.Tier), replacing any.
func (c *Client) SetRolloutPolicy(ctx context.Context, p server.RolloutPolicy) (server.RolloutPolicy, error) {
	var out server.RolloutPolicy
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/admin/tiers/" + esc(p.Tier) + "/rollout-policy", in: p, out: &out})
	return out, err
}

// DeleteRolloutPolicy removes a tier's rollout policy: its machines get patches at once.
func (c *Client) DeleteRolloutPolicy(ctx context.Context, tier string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/admin/tiers/" + esc(tier) + "/rollout-policy"})
	return err
}

// Rollouts lists the rollouts of a tier with their counts.
func (c *Client) Rollouts(ctx context.Context, tier string) ([]server.Rollout, error) {
	var out struct {
		Rollouts []server.Rollout `json:"rollouts"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/tiers/" + esc(tier) + "/rollouts", out: &out})
	return out.Rollouts, err
}

// RolloutStatus is a rollout with the update state of every machine offered its patch.
type RolloutStatus struct {
	server.Rollout
	MachineStates []server.RolloutMachine `json:"machine-states"`
}

// Rollout returns the rollout of version in tier.
func (c *Client) Rollout(ctx context.Context, tier, version string) (RolloutStatus, error) {
	var out RolloutStatus
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/admin/tiers/" + esc(tier) + "/rollouts/" + esc(version), out: &out})
	return out, err
}

// SetRolloutState pauses, resumes or halts (action) the rollout of version in tier,
// starting it when it has not; it reports whether the state changed.
func (c *Client) SetRolloutState(ctx context.Context, tier, version, action, reason string) (bool, error) {
	in := struct {
		Reason string `json:"reason,omitempty"`
	}{reason}
	var out struct {
		Changed bool `json:"changed"`
	}
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/admin/tiers/" + esc(tier) + "/rollouts/" + esc(version) + "/" + esc(action), in: in, out: &out})
	return out.Changed, err
}
