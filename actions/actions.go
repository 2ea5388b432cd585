// Package actions implements the actions of the livepatch charm, keyed exactly as in
// charms/livepatch/actions.yaml (a contract test keeps the two in step). Failures are returned
// as errors, which the operator sees as the action's failure message, so they say what to do
// and never contain a secret; results never contain one either.
package actions

import (
	"context"
	"fmt"
	"strconv"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
)

// Charm is the livepatch charm, wired once: its reconcile, hooks and actions, as its
// dispatch binary (cmd/livepatch-charm) runs it and the charm tests drive it.
func Charm() hooks.Charm {
	return hooks.Charm{
		Reconcile: livepatch.Reconcile,
		Hooks:     livepatch.Hooks(),
		Actions:   Livepatch(),
	}
}

// Livepatch returns the action handlers of the livepatch charm.
func Livepatch() map[string]hooks.Action {
	return map[string]hooks.Action{
		"get-resource-token": GetResourceToken,
		"schema-upgrade":     SchemaUpgrade,
		"schema-version":     SchemaVersion,
		"restart":            Restart,
		"set-basic-users":    SetBasicUsers,
		"get-signing-key":    GetSigningKey,
		"rotate-signing-key": RotateSigningKey,
	}
}

// requireLeader fails an action that must run on the leader.
func requireLeader(ctx context.Context, c *hooks.Context, action string) error {
	leader, err := c.IsLeader(ctx)
	if err != nil {
		return err
	}
	if !leader {
		return fmt.Errorf("%s must run on the leader: juju run %s/leader %s", action, c.AppName(), action)
	}
	return nil
}

// configured runs the guard chain up to the rendered server configuration, which the server
// CLI needs to reach the database.
func configured(ctx context.Context, c *hooks.Context, what string) (*livepatch.Unit, error) {
	u, st, err := livepatch.Configure(ctx, c)
	if err != nil {
		return nil, err
	}
	if !st.IsZero() {
		return nil, fmt.Errorf("cannot %s yet: %s", what, st.Message)
	}
	return u, nil
}

// SchemaUpgrade runs the database migrations on the leader, with the staged server of a
// charm upgrade when there is one, then starts a rolling restart: every unit restarts once,
// one at a time in unit order, switching to its staged server.
func SchemaUpgrade(ctx context.Context, c *hooks.Context, _ map[string]any) (map[string]string, error) {
	if err := requireLeader(ctx, c, "schema-upgrade"); err != nil {
		return nil, err
	}
	u, err := configured(ctx, c, "upgrade the database schema")
	if err != nil {
		return nil, err
	}
	_ = c.ActionLog(ctx, "Upgrading the database schema")
	from, to, err := livepatch.SchemaUpgrade(ctx, c, livepatch.SchemaBinary(c))
	if err != nil {
		return nil, err
	}
	gen := strconv.Itoa(u.Peer.Generation() + 1)
	if err := livepatch.SetPeerData(ctx, c, map[string]string{livepatch.PeerRestartGeneration: gen}); err != nil {
		return nil, fmt.Errorf("schema upgraded from %d to %d but cannot start the rolling restart: %w", from, to, err)
	}
	return map[string]string{
		"from-version":       strconv.Itoa(from),
		"to-version":         strconv.Itoa(to),
		"restart-generation": gen,
		"result": fmt.Sprintf("schema upgraded from version %d to %d; the units restart one at a time in unit order (rolling restart %s)",
			from, to, gen),
	}, nil
}

// SchemaVersion reports the schema version of the database and whether an upgrade is needed.
func SchemaVersion(ctx context.Context, c *hooks.Context, _ map[string]any) (map[string]string, error) {
	if _, err := configured(ctx, c, "read the database schema version"); err != nil {
		return nil, err
	}
	v, err := livepatch.GetSchemaVersion(ctx, c, livepatch.SchemaBinary(c))
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"current":          strconv.Itoa(v.Current),
		"latest":           strconv.Itoa(v.Latest),
		"upgrade-required": strconv.FormatBool(v.Current < v.Latest),
	}, nil
}

// Restart restarts the server on this unit.
func Restart(ctx context.Context, c *hooks.Context, _ map[string]any) (map[string]string, error) {
	if err := livepatch.Restart(ctx, c); err != nil {
		return nil, fmt.Errorf("livepatch-server failed to restart (see journalctl -u livepatch-server): %w", err)
	}
	return map[string]string{"restarted": "true"}, nil
}

// stringParam returns a string parameter ("" when absent).
func stringParam(params map[string]any, key string) (string, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("parameter %s must be a string", key)
	}
	return s, nil
}

// boolParam returns a boolean parameter (false when absent).
func boolParam(params map[string]any, key string) (bool, error) {
	v, ok := params[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("parameter %s must be true or false", key)
	}
	return b, nil
}
