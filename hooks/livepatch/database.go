package livepatch

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
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

// CAPath is the CA the server verifies PostgreSQL's certificate with, as the provider of
// the database relation shares it (tls-ca); mode 0600, next to ConfigPath.
const CAPath = "/etc/livepatch/postgresql-ca.pem"

// Statuses of the database steps of the guard chain.
const (
	MessageNoDatabase    = "Waiting for postgres relation to be established."
	MessageBothDatabases = "Both db and database relations exist: remove one (juju remove-relation livepatch:db postgresql:db, or livepatch:database postgresql:database)"
	// MessageRolesOnDB is the status when psql_roles is set with db related: the postgresql
	// charm goes Blocked as soon as a requirer asks for roles on the legacy relation.
	MessageRolesOnDB = "psql_roles cannot be granted on the db relation (the postgresql charm refuses roles there): relate livepatch:database to postgresql:database instead of db, or unset psql_roles"
	// messageRenamed is the status when psql_dbname changed after the database relation
	// was added: the provider only acts on the database it was asked for first.
	messageRenamed = "psql_dbname is %q but postgresql created %q when the database relation was added and does not rename it: set psql_dbname back, or remove and re-add the relation (juju remove-relation livepatch:database postgresql:database, then juju integrate livepatch:database postgresql:database) to get a new, empty database"
)

// MessageRenamed returns the status when psql_dbname changed from created to want after
// the database relation was added.
func MessageRenamed(want, created string) string { return fmt.Sprintf(messageRenamed, want, created) }

// dbConn is what the database steps of the guard chain found: the connection string and,
// when the provider verifies TLS with a CA of its own, that CA (PEM).
type dbConn struct {
	dsn string
	ca  string
}

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
// related endpoint and returns the connection once the credentials are ready. A non-zero
// status means the chain stops there.
func databaseDSN(ctx context.Context, c *hooks.Context, cfg Config, leader bool) (dbConn, hooks.Status, error) {
	dbIDs, err := liveRelationIDs(ctx, c, DBEndpoint)
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	databaseIDs, err := liveRelationIDs(ctx, c, DatabaseEndpoint)
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	switch {
	case len(dbIDs) > 0 && len(databaseIDs) > 0:
		return dbConn{}, hooks.Blocked(MessageBothDatabases), nil
	case len(dbIDs) > 0:
		return pgsqlDSN(ctx, c, dbIDs[0], cfg, leader)
	case len(databaseIDs) > 0:
		return postgresqlClientDSN(ctx, c, databaseIDs[0], cfg, leader)
	}
	return dbConn{}, hooks.Blocked(MessageNoDatabase), nil
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

// pgsqlDSN handles the legacy pgsql interface: we ask for a database in our unit bag, and
// in the application bag when leader. Every postgresql unit answers in its own bag, with
// host naming the primary whatever the unit's own role (state); a bag is ready for us once
// it echoes our database, lists this unit in allowed-units and holds the credentials, which
// the postgresql charm only publishes once the user is in pg_hba. We never ask for roles:
// the postgresql charm goes Blocked on them.
func pgsqlDSN(ctx context.Context, c *hooks.Context, relID string, cfg Config, leader bool) (dbConn, hooks.Status, error) {
	if cfg.PsqlRoles != "" {
		return dbConn{}, hooks.Blocked(MessageRolesOnDB), nil
	}
	// roles="" takes away roles an earlier version of the charm asked for.
	want := map[string]string{"database": cfg.PsqlDBName, "roles": ""}
	ours, err := c.RelationGet(ctx, relID, c.UnitName())
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	if err := setIfChanged(ours, want, func(d map[string]string) error { return c.RelationSet(ctx, relID, d) }); err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	if leader {
		app, err := c.RelationGetApp(ctx, relID, c.AppName())
		if err != nil {
			return dbConn{}, hooks.Status{}, err
		}
		if err := setIfChanged(app, want, func(d map[string]string) error { return c.RelationSetApp(ctx, relID, d) }); err != nil {
			return dbConn{}, hooks.Status{}, err
		}
	}
	units, err := c.RelationList(ctx, relID)
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	if len(units) == 0 {
		return dbConn{}, hooks.Waiting("Waiting for postgres units to join the db relation"), nil
	}
	slices.SortFunc(units, func(a, b string) int { return unitNumber(a) - unitNumber(b) })
	// Every bag names the primary and the standbys as its unit last saw them: during a
	// switchover one may already name the new primary alone while another still names the
	// old roles. The connection string names the hosts of every bag, so that it does not
	// change (and no server restarts) as the roles move.
	bags := make([]map[string]string, len(units))
	var seen []string
	for i, unit := range units {
		if bags[i], err = c.RelationGet(ctx, relID, unit); err != nil {
			return dbConn{}, hooks.Status{}, err
		}
		if bags[i]["database"] == cfg.PsqlDBName && bags[i]["host"] != "" {
			seen = append(seen, pgsqlEndpoints(bags[i])...)
		}
	}
	for i, unit := range units {
		data := bags[i]
		dsn, problem, ok := pgsqlCredentials(data, cfg.PsqlDBName, c.UnitName(), seen...)
		if problem != "" {
			return dbConn{}, hooks.Blocked(fmt.Sprintf("%s shares unusable connection details on the db relation: %s", unit, problem)), nil
		}
		if ok {
			return dbConn{dsn: dsn}, hooks.Status{}, nil
		}
	}
	return dbConn{}, hooks.Waiting(fmt.Sprintf("Waiting for postgres to create database %s and grant access to %s", cfg.PsqlDBName, c.UnitName())), nil
}

// pgsqlCredentials returns the connection string a postgresql unit's pgsql bag offers unit
// for database db, once the bag echoes db, lists unit in allowed-units and holds the
// credentials. Any unit's bag will do: host is the primary in every one, and standbys lists
// the replicas. The connection string names them all with target_session_attrs=read-write,
// so that the server finds the primary again after a switchover without a restart. problem
// says what is wrong with a bag that is complete but unusable; it never holds the password.
func pgsqlCredentials(data map[string]string, db, unit string, more ...string) (dsn, problem string, ok bool) {
	if data["database"] != db || !slices.Contains(strings.Fields(data["allowed-units"]), unit) {
		return "", "", false
	}
	if data["host"] == "" || data["user"] == "" || data["password"] == "" {
		return "", "", false
	}
	port := data["port"]
	if port == "" {
		port = "5432"
	}
	// The pgsql bags of the postgresql charm say nothing about TLS: prefer encrypts when the
	// server offers it (with TLS on, its pg_hba only has hostssl lines) and works without.
	sslmode := data["sslmode"]
	if sslmode == "" {
		sslmode = "prefer"
	}
	if !slices.Contains(sslModes, sslmode) {
		return "", fmt.Sprintf("sslmode %q is not one of %s", sslmode, strings.Join(sslModes, ", ")), false
	}
	endpoints := append(pgsqlEndpoints(data), more...)
	var hosts []hostPort
	for _, e := range endpoints {
		hp, problem := parseEndpoint(e)
		if problem != "" {
			return "", problem, false
		}
		if !slices.Contains(hosts, hp) {
			hosts = append(hosts, hp)
		}
	}
	params := map[string]string{"sslmode": sslmode}
	if len(hosts) > 1 {
		params["target_session_attrs"] = "read-write"
	}
	return keyValueDSN(data["user"], data["password"], hosts, db, params), "", true
}

// pgsqlEndpoints returns host:port of the primary and the standbys a pgsql bag names.
func pgsqlEndpoints(data map[string]string) []string {
	port := data["port"]
	if port == "" {
		port = "5432"
	}
	return append([]string{net.JoinHostPort(data["host"], port)}, connStringHosts(data["standbys"])...)
}

// connStringHosts returns host:port of each libpq key=value connection string in s (the
// standbys of a pgsql bag: comma- or newline-separated). Only host and port are read.
func connStringHosts(s string) []string {
	var out []string
	host, port := "", "5432"
	flush := func() {
		if host != "" {
			out = append(out, net.JoinHostPort(host, port))
		}
		host, port = "", "5432"
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ' ', '\t':
			i++
			continue
		case ',', '\n', '\r':
			flush()
			i++
			continue
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[i : i+eq])
		i += eq + 1
		var value strings.Builder
		if i < len(s) && s[i] == '\'' {
			for i++; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				value.WriteByte(s[i])
			}
			i++
		} else {
			for ; i < len(s) && !strings.ContainsRune(" \t,\n\r", rune(s[i])); i++ {
				value.WriteByte(s[i])
			}
		}
		switch key {
		case "host":
			if host != "" {
				flush()
			}
			host = value.String()
		case "port":
			port = value.String()
		}
	}
	flush()
	return out
}

// sslModes are the sslmode values of libpq.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// hostPort is a checked endpoint.
type hostPort struct{ host, port string }

// parseEndpoint checks a host:port from relation data: an IP address or a DNS name, and a
// port number. An IPv6 address may come without brackets (fd00::5:5432), as the postgresql
// charm publishes it. It returns what is wrong, or "".
func parseEndpoint(endpoint string) (hostPort, string) {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		i := strings.LastIndexByte(endpoint, ':')
		if i < 0 || strings.ContainsAny(endpoint, "[]") || net.ParseIP(endpoint[:i]) == nil {
			return hostPort{}, fmt.Sprintf("endpoint %q is not host:port", endpoint)
		}
		host, port = endpoint[:i], endpoint[i+1:]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
		return hostPort{}, fmt.Sprintf("port %q is not a port number", port)
	}
	if net.ParseIP(host) == nil && !isDNSName(host) {
		return hostPort{}, fmt.Sprintf("host %q is neither an IP address nor a DNS name", host)
	}
	return hostPort{host, port}, ""
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

// requestedSecrets is what the leader asks the provider to share in Juju secrets rather than
// in plain fields (requested-secrets), where Juju has secrets: the fields of data_interfaces'
// RequirerData.SECRET_FIELDS, encoded as the library encodes them (json.dumps).
const requestedSecrets = `["username", "password", "tls", "tls-ca", "uris", "read-only-uris", "entity-name", "entity-password"]`

// providerSecret is a secret a data_interfaces provider shares: the field of its application
// bag that holds the secret's URI and the fields the secret holds instead of the bag.
type providerSecret struct {
	field string
	keys  []string
}

// providerSecrets are the secrets a postgresql_client provider may share: the field of its
// application bag that holds the secret's URI and the fields the secret holds instead of the
// bag (data_interfaces' SECRET_LABEL_MAP, groups user and tls).
var providerSecrets = []providerSecret{
	{"secret-user", []string{"username", "password", "uris", "read-only-uris"}},
	{"secret-tls", []string{"tls", "tls-ca"}},
}

// postgresqlClientDSN handles the postgresql_client interface: the leader asks for a database
// (and psql_roles as extra-user-roles, and requested-secrets where Juju has secrets) in our
// application bag; the provider answers in its application bag with endpoints (the primary),
// read-only-endpoints (the replicas), and username, password and tls/tls-ca, in plain fields
// or, when asked for secrets, in the secrets secret-user and secret-tls name. The secrets are
// read at their latest revision, so the secret-changed hook that follows a new one (the
// primary moved, TLS turned on, a new password) re-renders and restarts the server. The
// provider acts on the database only when it is first asked for, so a later change of
// psql_dbname is a Blocked status.
func postgresqlClientDSN(ctx context.Context, c *hooks.Context, relID string, cfg Config, leader bool) (dbConn, hooks.Status, error) {
	if leader {
		app, err := c.RelationGetApp(ctx, relID, c.AppName())
		if err != nil {
			return dbConn{}, hooks.Status{}, err
		}
		want := map[string]string{"database": cfg.PsqlDBName, "extra-user-roles": cfg.PsqlRoles}
		if c.HasSecrets() {
			want["requested-secrets"] = requestedSecrets
		}
		if err := setIfChanged(app, want, func(d map[string]string) error { return c.RelationSetApp(ctx, relID, d) }); err != nil {
			return dbConn{}, hooks.Status{}, err
		}
	}
	remote, err := c.RelationApp(ctx, relID)
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	waiting := hooks.Waiting("Waiting for postgres to share the database credentials")
	if remote == "" {
		return dbConn{}, waiting, nil
	}
	data, err := c.RelationGetApp(ctx, relID, remote)
	if err != nil {
		return dbConn{}, hooks.Status{}, err
	}
	data, st, err := withProviderSecrets(ctx, c, remote, "database", "database credentials", providerSecrets, data)
	if err != nil || !st.IsZero() {
		return dbConn{}, st, err
	}
	conn, problem, ok := postgresqlClientCredentials(data, cfg.PsqlDBName, c.Path(CAPath))
	if problem != "" {
		return dbConn{}, hooks.Blocked(fmt.Sprintf("%s shares unusable connection details on the database relation: %s", remote, problem)), nil
	}
	if !ok {
		return dbConn{}, waiting, nil
	}
	if data["database"] != "" && data["database"] != cfg.PsqlDBName {
		return dbConn{}, hooks.Blocked(MessageRenamed(cfg.PsqlDBName, data["database"])), nil
	}
	return conn, hooks.Status{}, nil
}

// withProviderSecrets puts in data (the provider's application bag on endpoint, which shares
// what) the fields of the secrets it names, read at their latest revision, in place of the plain fields, as
// data_interfaces' fetch_relation_data does. A bag without secret fields (a provider on a
// Juju without secrets, or one that answered before the charm asked for secrets) is used as
// it is. What stops the chain never names a secret's content.
func withProviderSecrets(ctx context.Context, c *hooks.Context, remote, endpoint, what string, secrets []providerSecret, data map[string]string) (map[string]string, hooks.Status, error) {
	out := maps.Clone(data)
	for _, s := range secrets {
		uri := data[s.field]
		if uri == "" {
			continue
		}
		content, err := c.SecretGet(ctx, uri)
		if errors.Is(err, hooks.ErrNoSecrets) {
			return nil, hooks.Blocked(fmt.Sprintf("%s shares the %s in Juju secrets (%s) but this Juju has no secrets", remote, what, s.field)), nil
		}
		if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
			return nil, hooks.Waiting(fmt.Sprintf("Waiting for %s to grant the secret it shares on the %s relation (%s: %s)", remote, endpoint, s.field, ee.Reason())), nil
		}
		if err != nil {
			return nil, hooks.Status{}, err
		}
		for _, k := range s.keys {
			delete(out, k)
			if v, ok := content[k]; ok {
				out[k] = v
			}
		}
	}
	return out, hooks.Status{}, nil
}

// postgresqlClientCredentials returns the connection the provider's application bag of a
// postgresql_client relation offers, once it holds the credentials: to the database it
// created (db when it does not say), on every endpoint with target_session_attrs=read-write,
// verifying the server with the CA at caPath when tls is on and a CA is shared (require
// without one). problem says what is wrong with a bag that is complete but unusable.
func postgresqlClientCredentials(data map[string]string, db, caPath string) (conn dbConn, problem string, ok bool) {
	endpoints := splitList(data["endpoints"])
	if len(endpoints) == 0 || data["username"] == "" || data["password"] == "" {
		return dbConn{}, "", false
	}
	if data["database"] != "" {
		db = data["database"]
	}
	endpoints = append(endpoints, splitList(data["read-only-endpoints"])...)
	var hosts []hostPort
	for _, e := range endpoints {
		hp, problem := parseEndpoint(e)
		if problem != "" {
			return dbConn{}, problem, false
		}
		if !slices.Contains(hosts, hp) {
			hosts = append(hosts, hp)
		}
	}
	params := map[string]string{"sslmode": "prefer"}
	switch tls := data["tls"]; {
	case strings.EqualFold(tls, "true"):
		ca := strings.TrimSpace(data["tls-ca"])
		switch {
		case ca == "":
			params["sslmode"] = "require"
		case !isPEMCertificates(ca):
			return dbConn{}, "tls-ca is not a PEM certificate", false
		default:
			params["sslmode"] = "verify-full"
			params["sslrootcert"] = caPath
			conn.ca = ca + "\n"
		}
	case tls == "" || strings.EqualFold(tls, "false"):
	default:
		return dbConn{}, fmt.Sprintf("tls %q is neither True nor False", tls), false
	}
	if len(hosts) > 1 {
		params["target_session_attrs"] = "read-write"
	}
	conn.dsn = keyValueDSN(data["username"], data["password"], hosts, db, params)
	return conn, "", true
}

// keyValueDSN builds a libpq key=value connection string. Hosts are sorted, so that a
// switchover (the same hosts, other roles) leaves the string, and the server, as they are.
// Several hosts get a connect_timeout, so that an unreachable one is passed over quickly.
func keyValueDSN(user, password string, hosts []hostPort, db string, params map[string]string) string {
	hosts = slices.Clone(hosts)
	slices.SortFunc(hosts, func(a, b hostPort) int {
		return strings.Compare(a.host+" "+a.port, b.host+" "+b.port)
	})
	var names, ports []string
	for _, h := range hosts {
		names, ports = append(names, h.host), append(ports, h.port)
	}
	kv := map[string]string{
		"host": strings.Join(names, ","), "port": strings.Join(ports, ","),
		"user": user, "password": password, "dbname": db,
	}
	if len(hosts) > 1 {
		kv["connect_timeout"] = "5"
	}
	for k, v := range params {
		kv[k] = v
	}
	keys := slices.Sorted(maps.Keys(kv))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(kv[k]) + "'")
	}
	return b.String()
}

// isPEMCertificates reports whether s holds PEM certificates and nothing else.
func isPEMCertificates(s string) bool {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return false
		}
		n++
	}
	return n > 0 && strings.TrimSpace(string(rest)) == ""
}
