// Package postgresql is the stand-in for the postgresql charm (canonical/postgresql-operator,
// track 14): a real charm (metadata in charm/, dispatch = this package's Main via the jujusim
// multi-call binary) that runs real PostgreSQL servers on its units' addresses, one primary
// and streaming replicas (pg_basebackup), and publishes exactly the relation data the real
// charm publishes on db/db-admin (pgsql) and database (postgresql_client), when it does:
//
//   - db/db-admin: every unit writes its own bag; host is the primary, state the writing
//     unit's own role (master, hot standby, standalone), the user relation-<id>. The
//     leader's bag gets the credentials only once the user is in the pg_hba it loaded (the
//     hook that creates the user defers them, as the real charm defers its
//     relation-changed until Patroni reloaded pg_hba); the other units publish them when
//     the leader shares them. A request for roles or extensions is a Blocked status, as on
//     the real charm.
//   - database: the leader acts on the database when it is first asked for, and ignores a
//     later change of it; endpoints is the primary, read-only-endpoints the replicas (the
//     primary without any), tls and tls-ca say whether PostgreSQL takes TLS. The fields a
//     requirer lists in requested-secrets go in application secrets granted to the
//     relation (secret-user, secret-tls), as data_interfaces puts them.
//
// TLS: the real charm turns TLS on when related to a certificates provider; the stand-in's
// tls option stands for that relation. With it the leader makes a CA, every unit a
// certificate it signs for its address, PostgreSQL runs with ssl=on and pg_hba takes hostssl
// connections only.
//
// The set-password action sets a system user's password (the stand-in's operator), as the
// real charm's does; the relation users are not the action's.
//
// The promote-to-primary action (scope=unit) on a replica switches the primary over to it,
// as the real charm's Patroni switchover does: the old primary stops taking writes, the
// replica catches up with it and is promoted, the old primary follows the new one as a
// replica, and the relations are republished with the new primary.
package postgresql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/internal/testca"
	"github.com/livepatch-onprem/livepatch/tests/standin/hookenv"
)

//go:embed charm
var files embed.FS

// Files holds metadata.yaml, config.yaml and actions.yaml.
var Files, _ = fs.Sub(files, "charm")

// BinDir holds the PostgreSQL server binaries.
var BinDir = "/usr/lib/postgresql/15/bin"

// Port is the port PostgreSQL listens on, on the unit address.
const Port = "5432"

// Status messages of the real charm.
const (
	MessageBothEndpoints = "Please choose one endpoint to use. No need to relate all of them simultaneously!"
	MessageRoles         = "roles requested through relation, use postgresql_client interface instead"
	MessageExtensions    = "extensions requested through relation, enable them through config options"
	MessageInvalidRoles  = "invalid role(s) for extra user roles"
	MessagePrimary       = "Primary"
)

const (
	service  = "postgresql.service"
	peerName = "database-peers"
	// Peer application bag keys (leader-written).
	keyOperator    = "operator-password"
	keyReplication = "replication-password"
	keyCA          = "tls-ca"
	keyCAKey       = "tls-ca-key"
	// Peer unit bag key: the primary is the unit with the highest epoch.
	keyEpoch = "primary-epoch"
	// keyReplicas is the primary's list of the replica addresses its pg_hba takes.
	keyReplicas = "replication-allowed"
)

func dataDir() string   { return hookenv.Path("var/lib/postgresql/15/main") }
func tlsDir() string    { return hookenv.Path("var/lib/postgresql/15/tls") }
func socketDir() string { return hookenv.Path("run/postgresql") }

// replicaMarker names the primary a replica's data directory was copied from.
func replicaMarker() string { return hookenv.Path("var/lib/postgresql/15/replica-of") }

// Main is the charm's dispatch.
func Main() int { return hookenv.Main("postgresql", run) }

func run(hook string) error {
	switch hook {
	case "install":
		hookenv.Status("maintenance", "installing PostgreSQL")
		return install()
	case "stop":
		return hookenv.Systemctl("disable", "--now", service)
	case "remove":
		return nil
	case "get-password":
		return getPassword()
	case "set-password":
		return setPassword()
	case "promote-to-primary":
		return promoteToPrimary()
	}
	return reconcile(nil)
}

func asPostgres(args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	}
	return exec.Command(args[0], args[1:]...)
}

func install() error {
	if _, err := os.Stat(filepath.Join(dataDir(), "PG_VERSION")); err == nil {
		return nil
	}
	for _, d := range []string{dataDir(), socketDir(), tlsDir()} {
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		if err := chownPostgres(d); err != nil {
			return err
		}
	}
	cmd := asPostgres(filepath.Join(BinDir, "initdb"), "-D", dataDir(), "-U", "postgres",
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot initdb: %w: %s", err, out)
	}
	// The unix socket lives in a directory only postgres (and root) can enter: local trust
	// is how the charm administers its own server, as the real charm uses peer auth.
	if err := writePostgres(filepath.Join(dataDir(), "pg_hba.conf"), "local all all trust\n"); err != nil {
		return err
	}
	_, err := renderUnit()
	return err
}

func chownPostgres(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// writePostgres writes a file postgres owns, mode 0600.
func writePostgres(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	return chownPostgres(path)
}

// renderUnit writes the systemd unit and reloads systemd when it changed; changed means
// the server must restart to apply it. TLS is not in it: ssl and its files are reloadable
// settings (applyTLS), as the real charm turns TLS on and off without a restart.
func renderUnit() (changed bool, err error) {
	addr, err := hookenv.Address()
	if err != nil {
		return false, err
	}
	listen := addr
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		listen = "'" + addr + "'"
	}
	args := fmt.Sprintf("-D %s -c listen_addresses=%s -c port=%s -c unix_socket_directories=%s -c logging_collector=off -c wal_level=replica -c hot_standby=on -c max_wal_senders=10",
		dataDir(), listen, Port, socketDir())
	unit := fmt.Sprintf(`[Unit]
Description=PostgreSQL 15 (jujusim stand-in)

[Service]
User=postgres
ExecStart=%s/postgres %s
Restart=on-failure

[Install]
WantedBy=multi-user.target
`, BinDir, args)
	path := hookenv.Path("etc/systemd/system/" + service)
	if old, err := os.ReadFile(path); err == nil && string(old) == unit {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		return false, err
	}
	return true, hookenv.Systemctl("daemon-reload")
}

// version returns the server version, e.g. "15.14".
func version() string {
	out, err := exec.Command(filepath.Join(BinDir, "postgres"), "--version").Output()
	if err != nil {
		return "15"
	}
	// "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "15"
	}
	return f[2]
}

// connectLocal opens the unit's own server through its socket, as the superuser.
func connectLocal(dbname string) (*sql.DB, error) {
	dsn := fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", socketDir(), Port, dbname)
	return sql.Open("postgres", dsn)
}

// connectRemote opens another unit's server as the operator user.
func connectRemote(addr, password, dbname string) (*sql.DB, error) {
	dsn := fmt.Sprintf("host=%s port=%s user=operator password=%s dbname=%s sslmode=prefer connect_timeout=5",
		quoteValue(addr), Port, quoteValue(password), dbname)
	return sql.Open("postgres", dsn)
}

func quoteValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// applyTLS sets ssl and its files in postgresql.auto.conf (ALTER SYSTEM) to turn TLS on or
// off; new certificate files count as a change. The caller reloads PostgreSQL: these
// settings take a reload, not a restart, as with the real charm.
func applyTLS(db *sql.DB, on, filesChanged bool) (changed bool, err error) {
	var current string
	if err := db.QueryRow(`SHOW ssl`).Scan(&current); err != nil {
		return false, err
	}
	if (current == "on") == on && !filesChanged {
		return false, nil
	}
	settings := map[string]string{"ssl_cert_file": filepath.Join(tlsDir(), "cert.pem"),
		"ssl_key_file": filepath.Join(tlsDir(), "key.pem"), "ssl_ca_file": filepath.Join(tlsDir(), "ca.pem")}
	var stmts []string
	if on {
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			stmts = append(stmts, fmt.Sprintf(`ALTER SYSTEM SET %s = %s`, k, pq.QuoteLiteral(settings[k])))
		}
		stmts = append(stmts, `ALTER SYSTEM SET ssl = on`)
	} else {
		stmts = append(stmts, `ALTER SYSTEM RESET ssl`)
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			stmts = append(stmts, `ALTER SYSTEM RESET `+k)
		}
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			return false, fmt.Errorf("cannot turn TLS %s: %w", map[bool]string{true: "on", false: "off"}[on], err)
		}
	}
	return true, nil
}

// waitSSL waits, for at most 10 seconds, until a new session sees ssl as wanted: the
// postmaster applies a reload on its own time, and the relation must not say TLS before
// PostgreSQL takes it.
func waitSSL(on bool) error {
	want := map[bool]string{true: "on", false: "off"}[on]
	deadline := time.Now().Add(10 * time.Second)
	for {
		db, err := connectLocal("postgres")
		if err != nil {
			return err
		}
		var got string
		err = db.QueryRow(`SHOW ssl`).Scan(&got)
		db.Close()
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL has ssl %q 10s after the reload, want %q (%v)", got, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ensureRunning starts the server and waits (bounded) until it accepts connections.
func ensureRunning() (*sql.DB, error) {
	if err := hookenv.Systemctl("enable", "--now", service); err != nil {
		return nil, err
	}
	db, err := connectLocal("postgres")
	if err != nil {
		return nil, err
	}
	if err := waitFor(30*time.Second, db.Ping); err != nil {
		db.Close()
		return nil, fmt.Errorf("PostgreSQL did not start: %w", err)
	}
	return db, nil
}

// waitFor calls f until it succeeds or the timeout passes, and returns its last error.
func waitFor(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopFast stops the server with a fast shutdown (clients are disconnected, as Patroni
// stops a member), then tells systemd.
func stopFast() error {
	if _, err := os.Stat(filepath.Join(dataDir(), "postmaster.pid")); err == nil {
		out, err := asPostgres(filepath.Join(BinDir, "pg_ctl"), "-D", dataDir(), "stop", "-m", "fast", "-w", "-t", "30").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "not running") && !strings.Contains(string(out), "No such process") {
			return fmt.Errorf("cannot stop PostgreSQL: %w: %s", err, out)
		}
	}
	return hookenv.Systemctl("stop", service)
}

func newPassword() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func isStandby() bool {
	_, err := os.Stat(filepath.Join(dataDir(), "standby.signal"))
	return err == nil
}

// cluster is what a hook knows of the cluster: the peer relation's bags and who is primary.
type cluster struct {
	self, selfAddr, app string
	leader              bool
	peerRel             string
	shared              map[string]string            // peer application bag, with this hook's writes
	sharedWrites        map[string]string            // what the leader writes to it in this hook
	units               map[string]map[string]string // peer unit bags, this unit's included
	addrs               map[string]string
	primary             string
	epoch               int // the primary's epoch
	tls                 bool
}

func loadCluster() (*cluster, error) {
	c := &cluster{
		self:         os.Getenv("JUJU_UNIT_NAME"),
		leader:       hookenv.IsLeader(),
		shared:       map[string]string{},
		sharedWrites: map[string]string{},
		units:        map[string]map[string]string{},
		addrs:        map[string]string{},
	}
	c.app, _, _ = strings.Cut(c.self, "/")
	var err error
	if c.selfAddr, err = hookenv.Address(); err != nil {
		return nil, err
	}
	c.addrs[c.self] = c.selfAddr
	cfg, err := hookenv.Config()
	if err != nil {
		return nil, err
	}
	c.tls, _ = cfg["tls"].(bool)
	ids, err := hookenv.RelationIDs(peerName)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		c.units[c.self] = map[string]string{}
		return c, nil
	}
	c.peerRel = ids[0]
	if c.shared, err = hookenv.AppData(c.peerRel, c.app); err != nil {
		return nil, err
	}
	peers, err := hookenv.Units(c.peerRel)
	if err != nil {
		return nil, err
	}
	for _, u := range append(peers, c.self) {
		data, err := hookenv.UnitData(c.peerRel, u)
		if err != nil {
			return nil, err
		}
		c.units[u] = data
		if u != c.self && data["private-address"] != "" {
			c.addrs[u] = data["private-address"]
		}
	}
	for u, data := range c.units {
		if e, err := strconv.Atoi(data[keyEpoch]); err == nil && (e > c.epoch || e == c.epoch && u < c.primary) {
			c.primary, c.epoch = u, e
		}
	}
	return c, nil
}

// setShared writes the peer application bag (leader only).
func (c *cluster) setShared(key, value string) {
	c.shared[key] = value
	c.sharedWrites[key] = value
}

// setOwn writes this unit's peer bag where it differs.
func (c *cluster) setOwn(data map[string]string) error {
	diff := map[string]string{}
	for k, v := range data {
		if c.units[c.self][k] != v {
			diff[k] = v
			c.units[c.self][k] = v
		}
	}
	if len(diff) == 0 || c.peerRel == "" {
		return nil
	}
	return hookenv.Set(c.peerRel, false, diff)
}

func (c *cluster) flush() error {
	if len(c.sharedWrites) == 0 || c.peerRel == "" {
		return nil
	}
	return hookenv.Set(c.peerRel, true, c.sharedWrites)
}

// replicas returns the units that replicate from the primary (they say so in their bag),
// sorted by address.
func (c *cluster) replicas() []string {
	var out []string
	for u, data := range c.units {
		if u != c.primary && data["replica-of"] == c.primary && c.addrs[u] != "" {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(c.addrs[a], c.addrs[b]) })
	return out
}

// relationUsers returns the relation users the leader created, with their databases.
func (c *cluster) relationUsers() map[string]string {
	users := map[string]string{}
	for k, v := range c.shared {
		if user, ok := strings.CutSuffix(k, "-database"); ok && strings.HasPrefix(user, "relation-") && v != "" {
			users[user] = v
		}
	}
	return users
}

// hba renders pg_hba.conf: local administration, the operator, the relation users on their
// databases and replication from the peers, hostssl-only with TLS (as the real charm's
// Patroni template).
func (c *cluster) hba() string {
	h := "host"
	if c.tls {
		h = "hostssl"
	}
	nets := []string{"0.0.0.0/0", "::/0"}
	var b strings.Builder
	b.WriteString("local all all trust\n")
	for _, n := range nets {
		fmt.Fprintf(&b, "%s all operator %s scram-sha-256\n", h, n)
	}
	users := c.relationUsers()
	for _, u := range slices.Sorted(maps.Keys(users)) {
		for _, n := range nets {
			fmt.Fprintf(&b, "%s %s %s %s md5\n", h, pq.QuoteIdentifier(users[u]), pq.QuoteIdentifier(u), n)
		}
	}
	// As the real template: replication from the loopback (where every emulated machine's
	// connections come from) and from each member.
	fmt.Fprintf(&b, "%s replication replication 127.0.0.1/32 md5\n", h)
	for _, u := range slices.Sorted(maps.Keys(c.addrs)) {
		fmt.Fprintf(&b, "%s replication replication %s md5\n", h, hostNet(c.addrs[u]))
	}
	return b.String()
}

func hostNet(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		return addr + "/128"
	}
	return addr + "/32"
}

// hbaUsers returns the relation users a pg_hba.conf lets in.
func hbaUsers(content string) []string {
	var out []string
	for line := range strings.Lines(content) {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[0] == "host" || f[0] == "hostssl") {
			if u := strings.Trim(f[2], `"`); strings.HasPrefix(u, "relation-") && !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out
}

// ensureTLSFiles writes the CA and this unit's certificate for its address (signed by the
// leader's CA) under tlsDir; changed reports new files (PostgreSQL reloads them).
func (c *cluster) ensureTLSFiles() (changed bool, err error) {
	ca := testca.CA{Cert: []byte(c.shared[keyCA]), Key: []byte(c.shared[keyCAKey])}
	caPath := filepath.Join(tlsDir(), "ca.pem")
	if old, err := os.ReadFile(caPath); err == nil && string(old) == string(ca.Cert) {
		if _, err := os.Stat(filepath.Join(tlsDir(), "cert.pem")); err == nil {
			return false, nil
		}
	}
	cert, key, err := ca.Sign(c.selfAddr)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(tlsDir(), 0o700); err != nil {
		return false, err
	}
	if err := chownPostgres(tlsDir()); err != nil {
		return false, err
	}
	for name, content := range map[string][]byte{"ca.pem": ca.Cert, "cert.pem": cert, "key.pem": key} {
		if err := writePostgres(filepath.Join(tlsDir(), name), string(content)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// follow makes this unit a streaming replica of the primary at addr: a fast stop, a fresh
// copy of its data directory (pg_basebackup), and a start as a hot standby.
func (c *cluster) follow(addr string) error {
	if err := stopFast(); err != nil {
		return err
	}
	if err := os.RemoveAll(dataDir()); err != nil {
		return err
	}
	if err := os.Mkdir(dataDir(), 0o700); err != nil {
		return err
	}
	if err := chownPostgres(dataDir()); err != nil {
		return err
	}
	os.Remove(replicaMarker())
	conninfo := fmt.Sprintf("host=%s port=%s user=replication sslmode=prefer application_name=%s",
		quoteValue(addr), Port, strings.ReplaceAll(c.self, "/", "-"))
	cmd := asPostgres(filepath.Join(BinDir, "pg_basebackup"), "-D", dataDir(), "-d", conninfo, "-R", "-X", "stream", "-c", "fast")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+c.shared[keyReplication])
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot copy the primary at %s: %w: %s", addr, err, out)
	}
	return os.WriteFile(replicaMarker(), []byte(c.primary), 0o644)
}

// promoted is what the promote-to-primary action tells the reconcile it runs: this unit is
// now the primary, at epoch.
type promoted struct{ epoch int }

func reconcile(p *promoted) error {
	c, err := loadCluster()
	if err != nil {
		return err
	}
	if p != nil {
		c.primary, c.epoch = c.self, p.epoch
	}
	if c.leader {
		for _, k := range []string{keyOperator, keyReplication} {
			if c.shared[k] == "" {
				c.setShared(k, newPassword())
			}
		}
		if c.tls && c.shared[keyCA] == "" {
			ca, err := testca.New(c.app + " CA")
			if err != nil {
				return err
			}
			c.setShared(keyCA, string(ca.Cert))
			c.setShared(keyCAKey, string(ca.Key))
		}
	}
	defer c.flush()
	if c.primary == "" && c.leader && !isStandby() {
		c.primary, c.epoch = c.self, 1
		if err := c.setOwn(map[string]string{keyEpoch: "1"}); err != nil {
			return err
		}
	}
	if c.primary == "" {
		return hookenv.Status("waiting", "waiting for the primary to be elected")
	}
	if c.shared[keyOperator] == "" || c.tls && c.shared[keyCA] == "" {
		return hookenv.Status("waiting", "waiting for the leader to share the cluster credentials")
	}
	tlsChanged := false
	if c.tls {
		if tlsChanged, err = c.ensureTLSFiles(); err != nil {
			return err
		}
	}
	unitChanged, err := renderUnit()
	if err != nil {
		return err
	}
	hbaPath := filepath.Join(dataDir(), "pg_hba.conf")
	oldHBA, _ := os.ReadFile(hbaPath)
	loaded := hbaUsers(string(oldHBA))

	primaryAddr := c.addrs[c.primary]
	if c.primary != c.self {
		if primaryAddr == "" || !slices.Contains(splitList(c.units[c.primary][keyReplicas]), c.selfAddr) {
			return hookenv.Status("waiting", "waiting for "+c.primary+" to allow replication")
		}
		if marker, _ := os.ReadFile(replicaMarker()); string(marker) != c.primary || !isStandby() {
			hookenv.Status("maintenance", "copying the primary "+c.primary)
			if err := c.follow(primaryAddr); err != nil {
				hookenv.Log("%v", err)
				return hookenv.Status("waiting", "waiting to copy the primary "+c.primary)
			}
			oldHBA = nil
		}
	}
	hbaChanged := string(oldHBA) != c.hba()
	if hbaChanged {
		if err := writePostgres(hbaPath, c.hba()); err != nil {
			return err
		}
	}
	if unitChanged {
		if err := stopFast(); err != nil {
			return err
		}
	}
	db, err := ensureRunning()
	if err != nil {
		return hookenv.Status("blocked", err.Error())
	}
	defer db.Close()
	sslChanged, err := applyTLS(db, c.tls, tlsChanged)
	if err != nil {
		return err
	}
	if hbaChanged || sslChanged {
		if _, err := db.Exec(`SELECT pg_reload_conf()`); err != nil {
			return err
		}
	}
	if sslChanged {
		if err := waitSSL(c.tls); err != nil {
			return err
		}
	}
	if c.primary == c.self {
		if isStandby() {
			if _, err := db.Exec(`SELECT pg_promote(true, 60)`); err != nil {
				return fmt.Errorf("cannot promote: %w", err)
			}
		}
		if err := c.ensureSystemUsers(db); err != nil {
			return err
		}
		var peers []string
		for u, a := range c.addrs {
			if u != c.self {
				peers = append(peers, a)
			}
		}
		slices.Sort(peers)
		if err := c.setOwn(map[string]string{keyReplicas: strings.Join(peers, ","), "replica-of": ""}); err != nil {
			return err
		}
	} else if err := c.setOwn(map[string]string{"replica-of": c.primary}); err != nil {
		return err
	}
	return c.serveClients(db, loaded)
}

// ensureSystemUsers creates the operator and replication users and the admin role on the
// primary, with the passwords the leader shares.
func (c *cluster) ensureSystemUsers(db *sql.DB) error {
	for _, u := range []struct{ name, attrs, password string }{
		{"operator", "LOGIN SUPERUSER", c.shared[keyOperator]},
		{"replication", "LOGIN REPLICATION", c.shared[keyReplication]},
		{"admin", "NOLOGIN", ""},
	} {
		if err := ensureRole(db, u.name, u.attrs, u.password); err != nil {
			return err
		}
	}
	return nil
}

// ensureRole creates or alters a role; an empty password leaves it without one.
func ensureRole(db *sql.DB, role, attrs, password string) error {
	var exists bool
	if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return err
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	q := fmt.Sprintf(`%s ROLE %s WITH %s`, verb, pq.QuoteIdentifier(role), attrs)
	if password != "" {
		q += ` PASSWORD ` + pq.QuoteLiteral(password)
	}
	if _, err := db.Exec(q); err != nil {
		return fmt.Errorf("cannot create role %s: %w", role, err)
	}
	return nil
}

// serveClients sets up (leader) and publishes the client relations. local is this unit's
// server; loaded are the relation users its pg_hba let in when the hook started.
func (c *cluster) serveClients(local *sql.DB, loaded []string) error {
	ver := version()
	hookenv.Run("application-version-set", ver)
	var legacy, modern []string
	for _, ep := range []string{"db", "db-admin"} {
		ids, err := hookenv.RelationIDs(ep)
		if err != nil {
			return err
		}
		legacy = append(legacy, ids...)
	}
	modern, err := hookenv.RelationIDs("database")
	if err != nil {
		return err
	}
	var blocked []string
	if c.leader && len(legacy)+len(modern) > 0 {
		admin := local
		if c.primary != c.self {
			if admin, err = connectRemote(c.addrs[c.primary], c.shared[keyOperator], "postgres"); err != nil {
				return err
			}
			defer admin.Close()
		}
		for _, id := range legacy {
			msg, err := c.setUpLegacy(admin, id)
			if err != nil {
				return err
			}
			if msg != "" {
				blocked = append(blocked, msg)
			}
		}
		for _, id := range modern {
			msg, err := c.setUpClient(admin, id)
			if err != nil {
				return err
			}
			if msg != "" {
				blocked = append(blocked, msg)
			}
		}
		// The database relations' users are in pg_hba before their credentials go out.
		if hba := c.hba(); hba != readFile(filepath.Join(dataDir(), "pg_hba.conf")) {
			if err := writePostgres(filepath.Join(dataDir(), "pg_hba.conf"), hba); err != nil {
				return err
			}
			if _, err := local.Exec(`SELECT pg_reload_conf()`); err != nil {
				return err
			}
		}
	}
	for _, id := range legacy {
		if err := c.publishLegacy(id, loaded, ver); err != nil {
			return err
		}
	}
	if c.leader {
		for _, id := range modern {
			if err := c.publishClient(id, ver); err != nil {
				return err
			}
		}
	}
	switch {
	case len(legacy) > 0 && len(modern) > 0:
		return hookenv.Status("blocked", MessageBothEndpoints)
	case len(blocked) > 0:
		return hookenv.Status("blocked", blocked[0])
	case c.primary == c.self:
		return hookenv.Status("active", MessagePrimary)
	}
	return hookenv.Status("active", "")
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func relationNumber(relID string) string {
	_, n, _ := strings.Cut(relID, ":")
	return n
}

// setUpLegacy is the real charm's set_up_relation on the leader: Blocked on extensions and
// roles, else the relation-<id> user and its database (the requirer's application bag wins,
// then what was created before, then its unit bags, then its application name).
func (c *cluster) setUpLegacy(admin *sql.DB, relID string) (blocked string, err error) {
	remoteApp, err := hookenv.RemoteApp(relID)
	if err != nil || remoteApp == "" {
		return "", err
	}
	appData, err := hookenv.AppData(relID, remoteApp)
	if err != nil {
		return "", err
	}
	units, err := hookenv.Units(relID)
	if err != nil {
		return "", err
	}
	unitData := map[string]map[string]string{}
	for _, u := range units {
		if unitData[u], err = hookenv.UnitData(relID, u); err != nil {
			return "", err
		}
	}
	if appData["extensions"] != "" || slices.ContainsFunc(units, func(u string) bool { return unitData[u]["extensions"] != "" }) {
		return MessageExtensions, nil
	}
	if _, ok := appData["roles"]; ok {
		return MessageRoles, nil
	}
	user := "relation-" + relationNumber(relID)
	database := appData["database"]
	if database == "" {
		database = c.shared[user+"-database"]
	}
	for _, u := range units {
		if database == "" {
			database = unitData[u]["database"]
		}
	}
	if database == "" {
		database = remoteApp
	}
	password := c.shared[user]
	if password == "" {
		password = newPassword()
	}
	endpoint, _, _ := strings.Cut(relID, ":")
	attrs := "LOGIN"
	if endpoint == "db-admin" {
		attrs += " SUPERUSER"
	}
	if err := ensureRole(admin, user, attrs, password); err != nil {
		return "", err
	}
	if err := ensureDatabase(admin, database, user); err != nil {
		return "", err
	}
	if c.shared[user] != password {
		c.setShared(user, password)
	}
	if c.shared[user+"-database"] != database {
		c.setShared(user+"-database", database)
	}
	return "", nil
}

// publishLegacy is the real charm's update_endpoints for db on every unit: in its own bag,
// the primary as host, this unit's role as state, and the credentials.
func (c *cluster) publishLegacy(relID string, loaded []string, ver string) error {
	user := "relation-" + relationNumber(relID)
	password, database := c.shared[user], c.shared[user+"-database"]
	// The leader, which set the user up, publishes once its pg_hba lets the user in (the
	// real charm defers the relation-changed until then); the others publish what the
	// leader shares, as the real charm's update_endpoints does on every unit.
	if password == "" || database == "" || c.leader && !slices.Contains(loaded, user) {
		return nil
	}
	units, err := hookenv.Units(relID)
	if err != nil {
		return err
	}
	var subnets []string
	for _, u := range units {
		data, err := hookenv.UnitData(relID, u)
		if err != nil {
			return err
		}
		for _, s := range splitList(data["egress-subnets"]) {
			if !slices.Contains(subnets, s) {
				subnets = append(subnets, s)
			}
		}
	}
	slices.Sort(subnets)
	slices.Sort(units)
	conn := func(host string) string {
		return fmt.Sprintf("dbname=%s host=%s password=%s port=%s user=%s", database, host, password, Port, user)
	}
	var standbys []string
	for _, r := range c.replicas() {
		standbys = append(standbys, conn(c.addrs[r]))
	}
	state := "hot standby"
	switch {
	case len(c.units) == 1:
		state = "standalone"
	case c.primary == c.self:
		state = "master"
	}
	return hookenv.Set(relID, false, map[string]string{
		"allowed-subnets": strings.Join(subnets, ","),
		"allowed-units":   strings.Join(units, " "),
		"host":            c.addrs[c.primary],
		"port":            Port,
		"user":            user,
		"schema_user":     user,
		"password":        password,
		"schema_password": password,
		"database":        database,
		"master":          conn(c.addrs[c.primary]),
		"standbys":        strings.Join(standbys, ","),
		"state":           state,
		"extensions":      "",
		"version":         ver,
	})
}

// setUpClient is the real charm's database_requested on the leader: it acts only when the
// requirer's database first appears; a later change of it is ignored.
func (c *cluster) setUpClient(admin *sql.DB, relID string) (blocked string, err error) {
	user := "relation-" + relationNumber(relID)
	if c.shared[user+"-database"] != "" {
		return "", nil
	}
	remoteApp, err := hookenv.RemoteApp(relID)
	if err != nil || remoteApp == "" {
		return "", err
	}
	req, err := hookenv.AppData(relID, remoteApp)
	if err != nil || req["database"] == "" {
		return "", err
	}
	attrs := "LOGIN"
	var grants []string
	for _, r := range splitList(strings.ToLower(req["extra-user-roles"])) {
		switch r {
		case "relation_access", "identity_access", "internal_access":
		case "admin":
			attrs += " CREATEDB IN ROLE admin"
		case "createdb", "createrole", "superuser":
			attrs += " " + strings.ToUpper(r)
		default:
			var exists bool
			if err := admin.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r).Scan(&exists); err != nil {
				return "", err
			}
			if !exists {
				return MessageInvalidRoles, nil
			}
			grants = append(grants, r)
		}
	}
	password := newPassword()
	if err := ensureRole(admin, user, attrs, password); err != nil {
		return "", err
	}
	for _, g := range grants {
		if _, err := admin.Exec(`GRANT ` + pq.QuoteIdentifier(g) + ` TO ` + pq.QuoteIdentifier(user)); err != nil {
			return "", err
		}
	}
	if err := ensureDatabase(admin, req["database"], user); err != nil {
		return "", err
	}
	c.setShared(user, password)
	c.setShared(user+"-database", req["database"])
	return "", nil
}

// secretGroups are data_interfaces' secret groups of the fields the charm publishes
// (SECRET_LABEL_MAP): a requested field goes in its group's secret.
var secretGroups = []struct {
	name   string
	fields []string
}{
	{"user", []string{"username", "password", "uris", "read-only-uris"}},
	{"tls", []string{"tls", "tls-ca"}},
}

// publishClient is the real charm's set_credentials, set_database, set_version and
// update_endpoints on the leader.
func (c *cluster) publishClient(relID, ver string) error {
	user := "relation-" + relationNumber(relID)
	password, database := c.shared[user], c.shared[user+"-database"]
	if password == "" || database == "" {
		return nil
	}
	remoteApp, err := hookenv.RemoteApp(relID)
	if err != nil {
		return err
	}
	req, err := hookenv.AppData(relID, remoteApp)
	if err != nil {
		return err
	}
	primary := c.addrs[c.primary] + ":" + Port
	var readOnly []string
	for _, r := range c.replicas() {
		readOnly = append(readOnly, c.addrs[r]+":"+Port)
	}
	if len(readOnly) == 0 {
		readOnly = []string{primary}
	}
	tls, ca := "False", ""
	if c.tls {
		tls, ca = "True", c.shared[keyCA]
	}
	// uris names the database the requirer asks for now, as the real charm's does;
	// read-only-uris (the replicas' hosts, or the primary's) only when asked for as a secret.
	data := map[string]string{
		"username":            user,
		"password":            password,
		"database":            database,
		"version":             ver,
		"endpoints":           primary,
		"read-only-endpoints": strings.Join(readOnly, ","),
		"uris":                fmt.Sprintf("postgresql://%s:%s@%s/%s", user, password, primary, req["database"]),
		"tls":                 tls,
		"tls-ca":              ca,
	}
	if strings.Contains(req["requested-secrets"], "read-only-uris") {
		hosts := []string{c.addrs[c.primary]}
		if replicas := c.replicas(); len(replicas) > 0 {
			hosts = nil
			for _, r := range replicas {
				hosts = append(hosts, c.addrs[r])
			}
		}
		data["read-only-uris"] = fmt.Sprintf("postgresql://%s:%s@%s:%s/%s", user, password, strings.Join(hosts, ","), Port, req["database"])
	}
	have, err := hookenv.AppData(relID, c.app)
	if err != nil {
		return err
	}
	if err := c.putInSecrets(relID, req["requested-secrets"], have, data); err != nil {
		return err
	}
	for k, v := range have {
		if data[k] == v {
			delete(data, k)
		}
	}
	if len(data) == 0 {
		return nil
	}
	return hookenv.Set(relID, true, data)
}

// putInSecrets moves the fields of data the requirer asked for in requested-secrets (a JSON
// list) into the secrets of their groups, as data_interfaces' DatabaseProvides does where
// Juju has secrets: one secret per group, owned by the application and labelled
// database.<relation>.<group>.secret, granted to the relation when created, its URI in the
// field secret-<group>; a later change is a new revision (none when the content is the
// same). A relation whose credentials went out in plain fields before stays on them, as the
// library falls back to the databag.
func (c *cluster) putInSecrets(relID, requestedJSON string, have, data map[string]string) error {
	if requestedJSON == "" {
		return nil
	}
	var decoded any
	if err := json.Unmarshal([]byte(requestedJSON), &decoded); err != nil {
		return fmt.Errorf("cannot decode requested-secrets: %w", err)
	}
	list, ok := decoded.([]any)
	if !ok {
		hookenv.Log("Unexpected datatype for %s instead of list.", requestedJSON)
		return nil
	}
	var requested []string
	for _, v := range list {
		if f, ok := v.(string); ok {
			requested = append(requested, f)
		}
	}
	hc := hooks.NewContext()
	if len(requested) == 0 || !hc.HasSecrets() || slices.ContainsFunc(requested, func(f string) bool { _, ok := have[f]; return ok }) {
		return nil
	}
	ctx := context.Background()
	for _, g := range secretGroups {
		content := map[string]string{}
		for _, f := range g.fields {
			if v, ok := data[f]; ok && slices.Contains(requested, f) {
				content[f] = v
				delete(data, f)
			}
		}
		if len(content) == 0 {
			continue
		}
		field := "secret-" + g.name
		uri := have[field]
		if uri == "" {
			label := fmt.Sprintf("database.%s.%s.secret", relationNumber(relID), g.name)
			uri, err := hc.SecretAdd(ctx, label, "", content)
			if err != nil {
				return err
			}
			if err := hc.SecretGrant(ctx, uri, relID); err != nil {
				return err
			}
			data[field] = uri
			continue
		}
		old, err := hc.SecretGet(ctx, uri)
		if err != nil {
			return err
		}
		merged := maps.Clone(old)
		maps.Copy(merged, content)
		if !maps.Equal(merged, old) {
			if err := hc.SecretSet(ctx, uri, merged); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureDatabase creates database owned by role if it does not exist, and grants role
// everything on it.
func ensureDatabase(admin *sql.DB, database, role string) error {
	var exists bool
	if err := admin.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, database).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := admin.Exec(`CREATE DATABASE ` + pq.QuoteIdentifier(database) + ` OWNER ` + pq.QuoteIdentifier(role)); err != nil {
			return fmt.Errorf("cannot create database %s: %w", database, err)
		}
	}
	_, err := admin.Exec(`GRANT ALL PRIVILEGES ON DATABASE ` + pq.QuoteIdentifier(database) + ` TO ` + pq.QuoteIdentifier(role))
	return err
}

// getPassword is the get-password action: the password of operator or replication.
func getPassword() error {
	var params map[string]any
	if err := hookenv.Get(&params, "action-get"); err != nil {
		return err
	}
	name, _ := params["username"].(string)
	if name == "" {
		name = "operator"
	}
	c, err := loadCluster()
	if err != nil {
		return err
	}
	pw := c.shared[name+"-password"]
	if name != "operator" && name != "replication" || pw == "" {
		_, err := hookenv.Run("action-fail", fmt.Sprintf("no password for %q", name))
		return err
	}
	_, err = hookenv.Run("action-set", "password="+pw)
	return err
}

// systemUsers are the real charm's SYSTEM_USERS, the only users set-password takes.
var systemUsers = []string{"backup", "replication", "rewind", "operator", "monitoring"}

// setPassword is the set-password action on the leader: a new password (the one given, or a
// generated one) for a system user, set on the primary, then shared with the other units;
// the password is the action's result, as on the real charm. The relation users' passwords
// are not the action's: the real charm refuses them. Of the system users the stand-in runs
// only operator and replication, and rotates only operator: its replicas would need their
// primary_conninfo rewritten, as the real charm's Patroni reload does, for replication.
func setPassword() error {
	var params map[string]any
	if err := hookenv.Get(&params, "action-get"); err != nil {
		return err
	}
	if !hookenv.IsLeader() {
		return actionFail("The action can be run only on leader unit")
	}
	name, _ := params["username"].(string)
	if name == "" {
		return actionFail("The action requires a username")
	}
	if !slices.Contains(systemUsers, name) {
		return actionFail(fmt.Sprintf("The action can be run only for system users: %s not %s", strings.Join(systemUsers, ", "), name))
	}
	password, _ := params["password"].(string)
	if password == "" {
		password = newPassword()
	}
	c, err := loadCluster()
	if err != nil {
		return err
	}
	if password == c.shared[name+"-password"] {
		if _, err := hookenv.Run("action-log", "The old and new passwords are equal."); err != nil {
			return err
		}
		_, err := hookenv.Run("action-set", "password="+password)
		return err
	}
	if name != "operator" {
		return actionFail(fmt.Sprintf("the postgresql stand-in rotates only the operator password, not %s's", name))
	}
	if c.primary == "" || c.shared[keyOperator] == "" {
		return actionFail("Failed changing the password: Not all members healthy or finished initial sync.")
	}
	var admin *sql.DB
	if c.primary == c.self {
		admin, err = connectLocal("postgres")
	} else {
		admin, err = connectRemote(c.addrs[c.primary], c.shared[keyOperator], "postgres")
	}
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.Exec(`ALTER USER ` + pq.QuoteIdentifier(name) + ` WITH ENCRYPTED PASSWORD ` + pq.QuoteLiteral(password)); err != nil {
		hookenv.Log("Failed to update the password of %s: %v", name, err)
		return actionFail("Failed changing the password.")
	}
	c.setShared(name+"-password", password)
	if err := c.flush(); err != nil {
		return err
	}
	_, err = hookenv.Run("action-set", "password="+password)
	return err
}

// Messages of the promote-to-primary action, as the real charm fails it.
const (
	MessageScope           = "Scope should be either cluster or unit"
	MessageSwitchoverFails = "Switchover failed or timed out, check the logs for details"
)

func actionFail(msg string) error {
	_, err := hookenv.Run("action-fail", msg)
	return err
}

// promoteToPrimary is the promote-to-primary action with scope=unit, run on the replica to
// promote: a switchover, as Patroni does it. The old primary stops taking writes (its new
// transactions are read-only and its clients are disconnected), this unit replays
// everything the old primary wrote and is promoted, and claims the primary with the next
// epoch; the old primary, at its next hook, follows it as a replica.
func promoteToPrimary() error {
	var params map[string]any
	if err := hookenv.Get(&params, "action-get"); err != nil {
		return err
	}
	switch params["scope"] {
	case "unit":
	case "cluster":
		return actionFail("promoting a cluster needs an async replication relation (replication-offer), which this deployment does not have")
	default:
		return actionFail(MessageScope)
	}
	if force, _ := params["force"].(bool); force {
		return actionFail("Raft is not stuck")
	}
	c, err := loadCluster()
	if err != nil {
		return err
	}
	if marker, _ := os.ReadFile(replicaMarker()); c.primary == c.self || !isStandby() || string(marker) != c.primary {
		hookenv.Log("cannot switch over to %s: it is not a replica of the primary %s", c.self, c.primary)
		return actionFail(MessageSwitchoverFails)
	}
	if err := switchover(c); err != nil {
		hookenv.Log("switchover to %s failed: %v", c.self, err)
		return actionFail(MessageSwitchoverFails)
	}
	os.Remove(replicaMarker())
	epoch := c.epoch + 1
	if err := c.setOwn(map[string]string{keyEpoch: strconv.Itoa(epoch), "replica-of": ""}); err != nil {
		return err
	}
	return reconcile(&promoted{epoch: epoch})
}

// switchover fences the primary, waits until this replica has replayed all it wrote, and
// promotes this replica.
func switchover(c *cluster) error {
	old, err := connectRemote(c.addrs[c.primary], c.shared[keyOperator], "postgres")
	if err != nil {
		return err
	}
	defer old.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := old.Conn(ctx)
	if err != nil {
		return fmt.Errorf("cannot reach the primary: %w", err)
	}
	defer conn.Close()
	for _, q := range []string{
		`SET default_transaction_read_only = off`,
		`ALTER SYSTEM SET default_transaction_read_only = on`,
		`SELECT pg_reload_conf()`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("cannot fence the primary (%s): %w", q, err)
		}
	}
	// Once a new session starts read-only, the postmaster has the setting: the sessions it
	// starts from now on cannot write, and those before it are ended.
	old.SetMaxIdleConns(0)
	err = waitFor(10*time.Second, func() error {
		var ro string
		if err := old.QueryRowContext(ctx, `SHOW default_transaction_read_only`).Scan(&ro); err != nil {
			return err
		}
		if ro != "on" {
			return errors.New("the primary has not reloaded its configuration")
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename <> 'replication'`); err != nil {
		return fmt.Errorf("cannot disconnect the primary's clients: %w", err)
	}
	var lsn string
	if err := conn.QueryRowContext(ctx, `SELECT pg_switch_wal()::text, pg_current_wal_flush_lsn()::text`).Scan(new(string), &lsn); err != nil {
		return fmt.Errorf("cannot flush the primary's WAL: %w", err)
	}
	local, err := connectLocal("postgres")
	if err != nil {
		return err
	}
	defer local.Close()
	err = waitFor(30*time.Second, func() error {
		var caught bool
		if err := local.QueryRowContext(ctx, `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&caught); err != nil {
			return err
		}
		if !caught {
			return fmt.Errorf("the replica has not replayed up to %s", lsn)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var ok bool
	if err := local.QueryRowContext(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok); err != nil || !ok {
		return fmt.Errorf("cannot promote (%v)", err)
	}
	hookenv.Log("Promoted %s: the primary %s was fenced at %s", c.self, c.primary, lsn)
	return nil
}
