// Package livepatch holds the hooks of the livepatch charm: Install puts the bundled
// livepatch-server binary and its systemd unit in place, UpgradeCharm stages the new binary
// next to the running one, Stop and Remove take them away, and every other hook runs
// Reconcile, which brings the unit to the state the model describes through one guard chain:
//
//	config valid -> a database relation -> credentials ready -> config rendered ->
//	schema current for the staged or the installed binary (the leader initialises an empty
//	database) -> server started, or restarted at this unit's turn of a rolling restart ->
//	port published on website -> sync upstream and token present when sync is on -> Active,
//	saying where the patches come from
//
// The first guard that does not pass sets the status (Blocked when the operator must act,
// Waiting when something else must happen first) and ends the hook successfully.
package livepatch

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Status messages of the guard chain that operators and tests look for.
const (
	MessageSchemaUpgrade    = "Database schema upgrade required: run the schema-upgrade action on the leader"
	MessageSchemaLeaderInit = "Waiting for the leader to initialise the database schema"
	MessageSchemaLeaderWait = "Waiting for the leader to upgrade the database schema (run the schema-upgrade action on the leader)"
	MessageSyncTokenNotSet  = "✘ sync_token not set, run get-resource-token"
	// MessageSyncUpstreamNotSet is the status of a unit told to sync with no upstream.
	MessageSyncUpstreamNotSet = "sync_upstream not set: give the URL of the livepatch on-prem server to sync from, or set patch_sync_enabled=false and import offline bundles"
	// MessageFromBundles says where the patches of a unit that does not sync come from.
	MessageFromBundles       = "patches from uploads and offline bundles"
	MessageActive            = "Livepatch server running"
	MessageRestartFailed     = "livepatch-server failed to restart: see journalctl -u livepatch-server"
	MessageDatabaseUnreached = "Cannot reach the database yet: retrying"
	// MessageUpgradeHeld is the status of a non-leader serving while the new server it
	// staged waits for schema-upgrade (with the versions when the binaries tell them).
	MessageUpgradeHeld = "Livepatch server running; the new server is staged and waits for the schema-upgrade action on the leader"
)

// Hooks returns the hooks that do something other than Reconcile.
func Hooks() map[string]hooks.Handler {
	return map[string]hooks.Handler{
		"install":       Install,
		"upgrade-charm": UpgradeCharm,
		"update-status": UpdateStatus,
		"stop":          Stop,
		"remove":        Remove,
		"secret-remove": SecretRemove,
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
	// ca is the database CA written to CAPath, which the rendered configuration names.
	ca string
}

// Configure runs the guard chain up to rendering the server configuration (written to
// ConfigPath when the server is next started) and the schema configuration the server CLI
// reads. A non-zero status means a guard stopped the chain.
func Configure(ctx context.Context, c *hooks.Context) (*Unit, hooks.Status, error) {
	cfg, err := LoadConfig(ctx, c)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	if st, err := resolveSecretOptions(ctx, c, &cfg); err != nil || !st.IsZero() {
		return nil, st, err
	}
	// Every hook tool call is a process, and most hooks of a fresh deployment run before
	// url_template is set: an invalid configuration stops the chain before any relation
	// is read.
	s3, s3Related, st, err := s3FromRelation(ctx, c, &cfg)
	if err != nil || !st.IsZero() {
		return nil, st, err
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, hooks.Blocked(strings.Join(problems, "; ")), nil
	}
	if !s3Related {
		if s3, st, err = resolveS3Credentials(ctx, c, cfg); err != nil || !st.IsZero() {
			return nil, st, err
		}
	}
	if err := writeS3CA(c, cfg); err != nil {
		return nil, hooks.Status{}, err
	}
	peer, err := LoadPeer(ctx, c)
	if err != nil {
		return nil, hooks.Status{}, err
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
	signingKey, st, err := signingKeyPEM(ctx, c, cfg, peer, leader)
	if err != nil || !st.IsZero() {
		return nil, st, err
	}
	conn, st, err := databaseDSN(ctx, c, cfg, leader)
	if err != nil || !st.IsZero() {
		return nil, st, err
	}
	// The CA is on disk before the schema check connects with it; a running server reads
	// it at its next connection, as the provider's certificates change with it.
	if err := writeCA(c, conn.ca); err != nil {
		return nil, hooks.Status{}, err
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
	proxies, err := websiteProxies(ctx, c)
	if err != nil {
		return nil, hooks.Status{}, err
	}
	u := &Unit{
		Config:    cfg,
		Leader:    leader,
		Peer:      peer,
		Address:   address,
		SyncToken: firstNonEmpty(cfg.SyncToken, peer.Data[PeerResourceToken]),
		ca:        conn.ca,
	}
	sc := renderServerConfig(renderInput{
		cfg:         cfg,
		address:     address,
		proxies:     proxies,
		dsn:         conn.dsn,
		users:       mergeBasicUsers(configUsers, sharedUsers),
		syncToken:   u.SyncToken,
		modelUUID:   c.ModelUUID(),
		storagePath: c.Path(cfg.StoragePath),
		s3:          s3,
		signingKey:  signingKey,
		proxy:       config.Proxy(c.ModelProxy()),
	})
	if err := sc.Validate(); err != nil {
		// Config.Validate should have caught it; the server's own rules are the last word.
		return nil, hooks.Blocked("Invalid server configuration: " + strings.ReplaceAll(err.Error(), "\n", " ")), nil
	}
	if u.rendered, err = sc.Marshal(); err != nil {
		return nil, hooks.Status{}, err
	}
	// The server CLI reads the DSN from a file (never from its arguments), written before
	// the schema check.
	if err := writeSchemaConfig(c, sc); err != nil {
		return nil, hooks.Status{}, err
	}
	return u, hooks.Status{}, nil
}

// writeCA writes the database CA to CAPath (mode 0600), or removes it when there is none.
func writeCA(c *hooks.Context, ca string) error {
	if ca == "" {
		return c.RemoveFile(CAPath)
	}
	_, err := c.WriteFile(CAPath, []byte(ca), 0o600)
	return err
}

// configSHA256 is the checksum of what the server reads at a start: the rendered
// configuration and the database CA it names.
func (u *Unit) configSHA256() string {
	if u.ca == "" {
		return sha256Hex(u.rendered)
	}
	return sha256Hex(append(slices.Clone(u.rendered), u.ca...))
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
	if st, err := checkStorage(ctx, c, u, SchemaBinary(c)); err != nil || !st.IsZero() {
		return st, err
	}
	plan, st, err := planServer(ctx, c, u)
	if err != nil || !st.IsZero() {
		return st, err
	}
	var note string
	if !plan.held {
		// A held unit restarts nothing: its old server would read the configuration the
		// new charm renders, which may hold keys only the new server knows. What changed
		// applies when it switches.
		if note, st, err = ensureRunning(ctx, c, u, plan.binary); err != nil || !st.IsZero() {
			return st, err
		}
	}
	if err := publishWebsite(ctx, c, u); err != nil {
		return hooks.Status{}, err
	}
	if err := publishCOS(ctx, c, u); err != nil {
		return hooks.Status{}, err
	}
	if plan.held {
		if u.Leader {
			return hooks.Blocked(MessageSchemaUpgrade), nil
		}
		return hooks.Active(heldMessage(ctx, c)), nil
	}
	if u.Config.PatchSyncEnabled && u.Config.SyncUpstream == "" {
		return hooks.Blocked(MessageSyncUpstreamNotSet), nil
	}
	if u.Config.PatchSyncEnabled && u.SyncToken == "" {
		return hooks.Blocked(MessageSyncTokenNotSet), nil
	}
	msg := MessageActive + "; " + PatchSource(u.Config)
	if note != "" {
		msg += "; " + note
	}
	return hooks.Active(msg), nil
}

// PatchSource says where the patches of a running unit come from, for its status:
// "syncing from <upstream host>", or MessageFromBundles when sync is off.
func PatchSource(cfg Config) string {
	if !cfg.PatchSyncEnabled {
		return MessageFromBundles
	}
	host := cfg.SyncUpstream
	if u, err := url.Parse(cfg.SyncUpstream); err == nil && u.Host != "" {
		host = u.Host // never the credentials a URL may carry
	}
	return "syncing from " + host
}

// serverPlan is what the schema step decided this unit runs.
type serverPlan struct {
	// binary is the machine path of the binary to run from the next (re)start on.
	binary string
	// held reports that the staged binary waits for schema-upgrade while the installed one,
	// which matches the schema, keeps serving.
	held bool
}

// planServer picks the binary to run from the database schema: the staged binary of a
// charm upgrade when the schema suits it, else the installed one while it matches the
// schema (the upgrade waits for schema-upgrade), else none (a non-zero status).
func planServer(ctx context.Context, c *hooks.Context, u *Unit) (serverPlan, hooks.Status, error) {
	if !c.FileExists(StagedBinary) {
		_, st, err := ensureSchema(ctx, c, u, ServerBinary)
		return serverPlan{binary: ServerBinary}, st, err
	}
	behind, st, err := ensureSchema(ctx, c, u, StagedBinary)
	if err != nil || (!st.IsZero() && !behind) {
		return serverPlan{}, st, err
	}
	if st.IsZero() {
		return serverPlan{binary: StagedBinary}, hooks.Status{}, nil
	}
	// The staged server needs a newer schema: the installed one serves on while the schema
	// suits it, until the operator runs schema-upgrade (after which, migrations being
	// expand-first, it still serves until this unit's turn to switch).
	pending, err := SchemaCheck(ctx, c, ServerBinary)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Schema check failed: %v", err))
		return serverPlan{}, hooks.Waiting(MessageDatabaseUnreached), nil
	}
	rec, err := readRecord(c)
	if err != nil {
		return serverPlan{}, hooks.Status{}, err
	}
	if pending || !rec.started() {
		return serverPlan{}, st, nil
	}
	return serverPlan{binary: ServerBinary, held: true}, hooks.Status{}, nil
}

// heldMessage is the status of a non-leader that serves while its upgrade waits for
// schema-upgrade.
func heldMessage(ctx context.Context, c *hooks.Context) string {
	running, _ := serverVersion(ctx, c, ServerBinary)
	staged, _ := serverVersion(ctx, c, StagedBinary)
	if running == "" || staged == "" {
		return MessageUpgradeHeld
	}
	return fmt.Sprintf("Livepatch server %s running; %s is staged and waits for the schema-upgrade action on the leader", running, staged)
}

// ensureSchema checks the database schema against binary: the leader initialises an empty
// database; a database behind the binary stops the chain (behind is then true) until the
// operator runs schema-upgrade.
func ensureSchema(ctx context.Context, c *hooks.Context, u *Unit, binary string) (behind bool, st hooks.Status, err error) {
	pending, err := SchemaCheck(ctx, c, binary)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Schema check failed: %v", err))
		return false, hooks.Waiting(MessageDatabaseUnreached), nil
	}
	if !pending {
		return false, hooks.Status{}, nil
	}
	v, err := GetSchemaVersion(ctx, c, binary)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Schema version failed: %v", err))
		return false, hooks.Waiting(MessageDatabaseUnreached), nil
	}
	switch {
	case v.Current == 0 && !u.Leader:
		return false, hooks.Waiting(MessageSchemaLeaderInit), nil
	case v.Current == 0:
		from, to, err := SchemaUpgrade(ctx, c, binary)
		if err != nil {
			return false, hooks.Status{}, err
		}
		c.Logf(ctx, "Initialised the database schema (version %d to %d)", from, to)
		return false, hooks.Status{}, nil
	case !u.Leader:
		return true, hooks.Waiting(MessageSchemaLeaderWait), nil
	}
	return true, hooks.Blocked(MessageSchemaUpgrade), nil
}

// publishWebsite opens the server port (and closes any other the unit has open) and
// publishes it on every website relation; haproxy pairs it with the unit's private-address.
// The port is opened in every hook: a hook that fails after opening it loses the change.
func publishWebsite(ctx context.Context, c *hooks.Context, u *Unit) error {
	port := u.Config.Port
	if err := c.SetPorts(ctx, strconv.Itoa(port)+"/tcp"); err != nil {
		return err
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
	if st, err := installServer(ctx, c, false); err != nil || !st.IsZero() {
		return st, err
	}
	return hooks.Maintenance("livepatch-server installed, waiting for configuration"), nil
}

// UpgradeCharm stages the server bundled in the new charm (or installs it, when no server
// runs yet) and reconciles: the running server keeps serving until the database schema suits
// the new one and this unit's turn in a rolling restart comes.
func UpgradeCharm(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	rec, err := readRecord(c)
	if err != nil {
		return hooks.Status{}, err
	}
	if st, err := installServer(ctx, c, rec.started()); err != nil || !st.IsZero() {
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
	for _, p := range []string{UnitPath, ServerBinary, ConfigPath, CAPath, StateDir} {
		if err := c.RemoveFile(p); err != nil {
			return hooks.Status{}, err
		}
	}
	if err := systemctl(ctx, c, "daemon-reload"); err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, err.Error())
	}
	return hooks.Maintenance("livepatch-server removed"), nil
}
