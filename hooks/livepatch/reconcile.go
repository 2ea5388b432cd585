// Package livepatch holds the hooks of the livepatch charm: Install and UpgradeCharm put the
// bundled livepatch-server binary and its systemd unit in place, Stop and Remove take them
// away, and every other hook runs Reconcile, which brings the unit to the state the model
// describes through one guard chain:
//
//	config valid -> a database relation -> credentials ready -> config rendered ->
//	schema current (the leader initialises an empty database) -> server (re)started if its
//	config or binary changed -> port published on website -> sync token present -> Active
//
// The first guard that does not pass sets the status (Blocked when the operator must act,
// Waiting when something else must happen first) and ends the hook successfully.
package livepatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Status messages of the guard chain that operators and tests look for.
const (
	MessageSchemaUpgrade     = "Database schema upgrade required: run the schema-upgrade action on the leader"
	MessageSchemaLeaderInit  = "Waiting for the leader to initialise the database schema"
	MessageSchemaLeaderWait  = "Waiting for the leader to upgrade the database schema (run the schema-upgrade action on the leader)"
	MessageSyncTokenNotSet   = "✘ sync_token not set, run get-resource-token"
	MessageActive            = "Livepatch server running"
	MessageRestartFailed     = "livepatch-server failed to restart: see journalctl -u livepatch-server"
	MessageDatabaseUnreached = "Cannot reach the database yet: retrying"
)

// Hooks returns the hooks that do something other than Reconcile.
func Hooks() map[string]hooks.Handler {
	return map[string]hooks.Handler{
		"install":       Install,
		"upgrade-charm": UpgradeCharm,
		"update-status": UpdateStatus,
		"stop":          Stop,
		"remove":        Remove,
	}
}

// Unit is what the guard chain learned about this unit, up to the rendered configuration.
type Unit struct {
	Config  Config
	Leader  bool
	Peer    Peer
	Address string
	// SyncToken is the token the server syncs with (sync_token, else the shared resource token).
	SyncToken string
	rendered  []byte
}

// Configure runs the guard chain up to rendering the server configuration to ConfigPath. A
// non-zero status means a guard stopped the chain.
func Configure(ctx context.Context, c *hooks.Context) (*Unit, hooks.Status, error) {
	cfg, err := LoadConfig(ctx, c)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	peer, err := LoadPeer(ctx, c)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, hooks.Blocked(strings.Join(problems, "; ")), nil
	}
	configUsers, _ := parseBasicUsers(cfg.AuthBasicUsers)
	sharedUsers, err := parseBasicUsers(peer.Data[PeerBasicUsers])
	if err != nil {
		return nil, hooks.Blocked(fmt.Sprintf("users set by set-basic-users are invalid (%v): run set-basic-users again", err)), nil
	}
	leader, err := c.IsLeader(ctx)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	dsn, st, err := databaseDSN(ctx, c, cfg, leader)
	if err != nil || !st.IsZero() {
		return nil, st, err
	}
	network, err := c.NetworkGet(ctx, WebsiteEndpoint)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	address := network.BindAddress()
	if address == "" {
		if address, err = c.UnitGet(ctx, "private-address"); err != nil {
			return nil, hooks.Status{}, err
		}
	}
	u := &Unit{
		Config:    cfg,
		Leader:    leader,
		Peer:      peer,
		Address:   address,
		SyncToken: firstNonEmpty(cfg.SyncToken, peer.Data[PeerResourceToken]),
	}
	sc := renderServerConfig(renderInput{
		cfg:         cfg,
		address:     address,
		dsn:         dsn,
		users:       mergeBasicUsers(configUsers, sharedUsers),
		syncToken:   u.SyncToken,
		modelUUID:   c.ModelUUID(),
		storagePath: c.Path(cfg.StoragePath),
		proxy: config.Proxy{
			HTTP:    c.Getenv("JUJU_CHARM_HTTP_PROXY"),
			HTTPS:   c.Getenv("JUJU_CHARM_HTTPS_PROXY"),
			NoProxy: c.Getenv("JUJU_CHARM_NO_PROXY"),
		},
	})
	if err := sc.Validate(); err != nil {
		// Config.Validate should have caught it; the server's own rules are the last word.
		return nil, hooks.Blocked("Invalid server configuration: " + strings.ReplaceAll(err.Error(), "\n", " ")), nil
	}
	if u.rendered, err = sc.Marshal(); err != nil {
		return nil, hooks.Status{}, err
	}
	// The server CLI reads the DSN from this file (never from its arguments), so the file is
	// written before the schema check; the running server only reads it when restarted.
	if _, err := c.WriteFile(ConfigPath, u.rendered, 0o600); err != nil {
		return nil, hooks.Status{}, err
	}
	return u, hooks.Status{}, nil
}

// Reconcile brings the unit to the state the model describes and returns its status.
func Reconcile(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	u, st, err := Configure(ctx, c)
	if err != nil || !st.IsZero() {
		return st, err
	}
	if !c.FileExists(ServerBinary) {
		return hooks.Blocked(MessageNoBinary), nil
	}
	if st, err := ensureSchema(ctx, c, u); err != nil || !st.IsZero() {
		return st, err
	}
	if st, err := ensureRunning(ctx, c, u); err != nil || !st.IsZero() {
		return st, err
	}
	if err := publishWebsite(ctx, c, u); err != nil {
		return hooks.Status{}, err
	}
	if u.Config.PatchSyncEnabled && u.SyncToken == "" {
		return hooks.Blocked(MessageSyncTokenNotSet), nil
	}
	return hooks.Active(MessageActive), nil
}

// ensureSchema checks the database schema against the installed server: the leader
// initialises an empty database; a database behind the server blocks until the operator runs
// schema-upgrade.
func ensureSchema(ctx context.Context, c *hooks.Context, u *Unit) (hooks.Status, error) {
	pending, err := SchemaCheck(ctx, c)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Schema check failed: %v", err))
		return hooks.Waiting(MessageDatabaseUnreached), nil
	}
	if !pending {
		return hooks.Status{}, nil
	}
	v, err := GetSchemaVersion(ctx, c)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Schema version failed: %v", err))
		return hooks.Waiting(MessageDatabaseUnreached), nil
	}
	switch {
	case v.Current == 0 && !u.Leader:
		return hooks.Waiting(MessageSchemaLeaderInit), nil
	case v.Current == 0:
		from, to, err := SchemaUpgrade(ctx, c)
		if err != nil {
			return hooks.Status{}, err
		}
		c.Logf(ctx, "Initialised the database schema (version %d to %d)", from, to)
		return hooks.Status{}, nil
	case v.Current > v.Latest:
		return hooks.Blocked(fmt.Sprintf("Database schema version %d is newer than this charm's server supports (%d): refresh the charm", v.Current, v.Latest)), nil
	case !u.Leader:
		return hooks.Waiting(MessageSchemaLeaderWait), nil
	}
	return hooks.Blocked(MessageSchemaUpgrade), nil
}

// ensureRunning restarts the server when its configuration, its binary or the leader's
// restart cue changed since it was last started.
func ensureRunning(ctx context.Context, c *hooks.Context, u *Unit) (hooks.Status, error) {
	binarySum, err := fileSHA256(c, ServerBinary)
	if err != nil {
		return hooks.Status{}, err
	}
	want := record{
		ConfigSHA256: sha256Hex(u.rendered),
		BinarySHA256: binarySum,
		RestartCue:   u.Peer.Data[PeerRestartCue],
	}
	have, err := readRecord(c)
	if err != nil {
		return hooks.Status{}, err
	}
	want.Port = have.Port
	if have == want {
		return hooks.Status{}, nil
	}
	var why []string
	if have.ConfigSHA256 != want.ConfigSHA256 {
		why = append(why, "configuration")
	}
	if have.BinarySHA256 != want.BinarySHA256 {
		why = append(why, "binary")
	}
	if have.RestartCue != want.RestartCue {
		why = append(why, "restart requested by the leader")
	}
	if err := Restart(ctx, c); err != nil {
		_ = c.JujuLog(ctx, hooks.LevelError, fmt.Sprintf("Restart failed: %v", err))
		return hooks.Blocked(MessageRestartFailed), nil
	}
	c.Logf(ctx, "Restarted livepatch-server (changed: %s)", strings.Join(why, ", "))
	return hooks.Status{}, writeRecord(c, want)
}

// publishWebsite opens the server port and publishes it on every website relation; haproxy
// pairs it with the unit's private-address.
func publishWebsite(ctx context.Context, c *hooks.Context, u *Unit) error {
	port := u.Config.Port
	r, err := readRecord(c)
	if err != nil {
		return err
	}
	if r.Port != port {
		if r.Port != 0 {
			if err := c.ClosePort(ctx, r.Port, "tcp"); err != nil {
				return err
			}
		}
		if err := c.OpenPort(ctx, port, "tcp"); err != nil {
			return err
		}
		r.Port = port
		if err := writeRecord(c, r); err != nil {
			return err
		}
	}
	ids, err := liveRelationIDs(ctx, c, WebsiteEndpoint)
	if err != nil {
		return err
	}
	for _, id := range ids {
		ours, err := c.RelationGet(ctx, id, c.UnitName())
		if err != nil {
			return err
		}
		want := map[string]string{"port": strconv.Itoa(port)}
		if err := setIfChanged(ours, want, func(d map[string]string) error { return c.RelationSet(ctx, id, d) }); err != nil {
			return err
		}
	}
	return nil
}

// Install installs the bundled server and its systemd unit; the config-changed hook that
// Juju runs next configures it.
func Install(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	if st, err := installServer(ctx, c); err != nil || !st.IsZero() {
		return st, err
	}
	return hooks.Maintenance("livepatch-server installed, waiting for configuration"), nil
}

// UpgradeCharm installs the server bundled in the new charm and reconciles; the server
// restarts if its binary changed and the database schema allows it.
func UpgradeCharm(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	if st, err := installServer(ctx, c); err != nil || !st.IsZero() {
		return st, err
	}
	return Reconcile(ctx, c)
}

// Stop stops and disables the server.
func Stop(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	for _, args := range [][]string{{"stop", ServiceName}, {"disable", ServiceName}} {
		if err := systemctl(ctx, c, args...); err != nil {
			// Nothing to stop is fine when tearing down.
			_ = c.JujuLog(ctx, hooks.LevelWarning, err.Error())
		}
	}
	return hooks.Maintenance("livepatch-server stopped"), nil
}

// Remove stops the server and removes everything the charm put on the machine.
func Remove(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	if _, err := Stop(ctx, c); err != nil {
		return hooks.Status{}, err
	}
	for _, p := range []string{UnitPath, ServerBinary, ConfigPath, StateDir} {
		if err := c.RemoveFile(p); err != nil {
			return hooks.Status{}, err
		}
	}
	if err := systemctl(ctx, c, "daemon-reload"); err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, err.Error())
	}
	return hooks.Maintenance("livepatch-server removed"), nil
}
