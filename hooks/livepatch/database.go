package livepatch

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Endpoints of the charm (metadata.yaml).
const (
	// DBEndpoint is the legacy pgsql relation (postgresql:db).
	DBEndpoint = "db"
	// DatabaseEndpoint is the postgresql_client relation (postgresql:database).
	DatabaseEndpoint = "database"
	// WebsiteEndpoint provides http to a reverse proxy (haproxy:reverseproxy).
	WebsiteEndpoint = "website"
	// PeerEndpoint is the peer relation that shares the leader's state.
	PeerEndpoint = "livepatch"
)

// Statuses of the database steps of the guard chain.
const (
	MessageNoDatabase    = "Waiting for postgres relation to be established."
	MessageBothDatabases = "Both db and database relations exist: remove one (juju remove-relation livepatch:db postgresql:db, or livepatch:database postgresql:database)"
)

// liveRelationIDs returns the relation ids of endpoint, leaving out the relation being broken
// by the running hook (Juju 3 may still list it).
func liveRelationIDs(ctx context.Context, c *hooks.Context, endpoint string) ([]string, error) {
	ids, err := c.RelationIDs(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(c.HookName(), "-relation-broken") {
		broken := c.Getenv("JUJU_RELATION_ID")
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == broken })
	}
	return ids, nil
}

// databaseDSN runs the database steps of the guard chain: it requests the database on the
// related endpoint and returns the connection string once the credentials are ready. A
// non-zero status means the chain stops there.
func databaseDSN(ctx context.Context, c *hooks.Context, cfg Config, leader bool) (string, hooks.Status, error) {
	dbIDs, err := liveRelationIDs(ctx, c, DBEndpoint)
	if err != nil {
		return "", hooks.Status{}, err
	}
	databaseIDs, err := liveRelationIDs(ctx, c, DatabaseEndpoint)
	if err != nil {
		return "", hooks.Status{}, err
	}
	switch {
	case len(dbIDs) > 0 && len(databaseIDs) > 0:
		return "", hooks.Blocked(MessageBothDatabases), nil
	case len(dbIDs) > 0:
		return pgsqlDSN(ctx, c, dbIDs[0], cfg, leader)
	case len(databaseIDs) > 0:
		return postgresqlClientDSN(ctx, c, databaseIDs[0], cfg, leader)
	}
	return "", hooks.Blocked(MessageNoDatabase), nil
}

// setIfChanged writes the keys of want that differ from have (an empty value deletes a key).
func setIfChanged(have, want map[string]string, set func(map[string]string) error) error {
	diff := map[string]string{}
	for k, v := range want {
		if have[k] != v {
			diff[k] = v
		}
	}
	if len(diff) == 0 {
		return nil
	}
	return set(diff)
}

// pgsqlDSN handles the legacy pgsql interface: we ask for a database (and roles) in our unit
// bag, and in the application bag when leader; a postgresql unit is ready for us once its bag
// echoes our database and lists this unit in allowed-units.
func pgsqlDSN(ctx context.Context, c *hooks.Context, relID string, cfg Config, leader bool) (string, hooks.Status, error) {
	want := map[string]string{"database": cfg.PsqlDBName, "roles": cfg.PsqlRoles}
	ours, err := c.RelationGet(ctx, relID, c.UnitName())
	if err != nil {
		return "", hooks.Status{}, err
	}
	if err := setIfChanged(ours, want, func(d map[string]string) error { return c.RelationSet(ctx, relID, d) }); err != nil {
		return "", hooks.Status{}, err
	}
	if leader {
		app, err := c.RelationGetApp(ctx, relID, c.AppName())
		if err != nil {
			return "", hooks.Status{}, err
		}
		if err := setIfChanged(app, want, func(d map[string]string) error { return c.RelationSetApp(ctx, relID, d) }); err != nil {
			return "", hooks.Status{}, err
		}
	}
	units, err := c.RelationList(ctx, relID)
	if err != nil {
		return "", hooks.Status{}, err
	}
	if len(units) == 0 {
		return "", hooks.Waiting("Waiting for postgres units to join the db relation"), nil
	}
	for _, unit := range units {
		data, err := c.RelationGet(ctx, relID, unit)
		if err != nil {
			return "", hooks.Status{}, err
		}
		dsn, problem, ok := pgsqlCredentials(data, cfg.PsqlDBName, c.UnitName())
		if problem != "" {
			return "", hooks.Blocked(fmt.Sprintf("%s shares unusable connection details on the db relation: %s", unit, problem)), nil
		}
		if ok {
			return dsn, hooks.Status{}, nil
		}
	}
	return "", hooks.Waiting(fmt.Sprintf("Waiting for postgres to create database %s and grant access to %s", cfg.PsqlDBName, c.UnitName())), nil
}

// pgsqlCredentials returns the connection string a postgresql unit's pgsql bag offers unit
// for database db, once the bag echoes db, lists unit in allowed-units and holds the
// credentials of a primary. problem says what is wrong with a bag that is complete but
// unusable; it never holds the password.
func pgsqlCredentials(data map[string]string, db, unit string) (dsn, problem string, ok bool) {
	if data["database"] != db || !slices.Contains(strings.Fields(data["allowed-units"]), unit) {
		return "", "", false
	}
	if data["state"] == "hot standby" || data["host"] == "" || data["user"] == "" || data["password"] == "" {
		return "", "", false
	}
	port := data["port"]
	if port == "" {
		port = "5432"
	}
	sslmode := data["sslmode"]
	if sslmode == "" {
		sslmode = "disable"
	}
	endpoint := net.JoinHostPort(data["host"], port)
	if problem := checkEndpoint(endpoint); problem != "" {
		return "", problem, false
	}
	if !slices.Contains(sslModes, sslmode) {
		return "", fmt.Sprintf("sslmode %q is not one of %s", sslmode, strings.Join(sslModes, ", ")), false
	}
	return postgresURL(data["user"], data["password"], []string{endpoint}, db, url.Values{"sslmode": {sslmode}}), "", true
}

// sslModes are the sslmode values of libpq.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// checkEndpoint checks a host:port from relation data: an IP address or a DNS name, and a
// port number. It returns what is wrong, or "".
func checkEndpoint(endpoint string) string {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return fmt.Sprintf("endpoint %q is not host:port", endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
		return fmt.Sprintf("port %q is not a port number", port)
	}
	if net.ParseIP(host) == nil && !isDNSName(host) {
		return fmt.Sprintf("host %q is neither an IP address nor a DNS name", host)
	}
	return ""
}

// isDNSName reports whether s is a host name: dot-separated labels of letters, digits,
// hyphens and underscores, at most 253 bytes.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// postgresqlClientDSN handles the postgresql_client interface: the leader asks for a database
// in our application bag; the provider answers in its application bag with endpoints
// (host:port,...), username and password.
func postgresqlClientDSN(ctx context.Context, c *hooks.Context, relID string, cfg Config, leader bool) (string, hooks.Status, error) {
	if leader {
		app, err := c.RelationGetApp(ctx, relID, c.AppName())
		if err != nil {
			return "", hooks.Status{}, err
		}
		want := map[string]string{"database": cfg.PsqlDBName}
		if err := setIfChanged(app, want, func(d map[string]string) error { return c.RelationSetApp(ctx, relID, d) }); err != nil {
			return "", hooks.Status{}, err
		}
	}
	remote, err := c.RelationApp(ctx, relID)
	if err != nil {
		return "", hooks.Status{}, err
	}
	waiting := hooks.Waiting("Waiting for postgres to share the database credentials")
	if remote == "" {
		return "", waiting, nil
	}
	data, err := c.RelationGetApp(ctx, relID, remote)
	if err != nil {
		return "", hooks.Status{}, err
	}
	dsn, problem, ok := postgresqlClientCredentials(data, cfg.PsqlDBName)
	if problem != "" {
		return "", hooks.Blocked(fmt.Sprintf("%s shares unusable connection details on the database relation: %s", remote, problem)), nil
	}
	if !ok {
		return "", waiting, nil
	}
	return dsn, hooks.Status{}, nil
}

// postgresqlClientCredentials returns the connection string the provider's application bag
// of a postgresql_client relation offers for database db, once it holds the credentials.
// problem says what is wrong with a bag that is complete but unusable.
func postgresqlClientCredentials(data map[string]string, db string) (dsn, problem string, ok bool) {
	hosts := splitList(data["endpoints"])
	if len(hosts) == 0 || data["username"] == "" || data["password"] == "" {
		return "", "", false
	}
	if data["database"] != "" && data["database"] != db {
		return "", "", false
	}
	for _, h := range hosts {
		if problem := checkEndpoint(h); problem != "" {
			return "", problem, false
		}
	}
	query := url.Values{"sslmode": {"disable"}, "target_session_attrs": {"read-write"}}
	return postgresURL(data["username"], data["password"], hosts, db, query), "", true
}

// postgresURL builds a postgres:// connection string.
func postgresURL(user, password string, hosts []string, db string, query url.Values) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     strings.Join(hosts, ","),
		Path:     "/" + db,
		RawQuery: query.Encode(),
	}
	return u.String()
}
