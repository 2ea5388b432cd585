// Package postgresql is the stand-in for the postgresql charm: a real charm (metadata in
// charm/, dispatch = this package's Main via the jujusim multi-call binary) that runs a real
// PostgreSQL server on its unit address and publishes exactly the relation data the real
// charms publish on db/db-admin (pgsql) and database (postgresql_client).
package postgresql

import (
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

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

const service = "postgresql.service"

func dataDir() string   { return hookenv.Path("var/lib/postgresql/15/main") }
func socketDir() string { return hookenv.Path("run/postgresql") }

// Main is the charm's dispatch.
func Main() int {
	if err := run(hookenv.Hook()); err != nil {
		fmt.Fprintf(os.Stderr, "postgresql: %v\n", err)
		return 1
	}
	return 0
}

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
		_, err := hookenv.Run("action-set", "password=")
		return err
	}
	return reconcile()
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
	for _, d := range []string{dataDir(), socketDir()} {
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		if os.Geteuid() == 0 {
			if err := chownPostgres(d); err != nil {
				return err
			}
		}
	}
	cmd := asPostgres(filepath.Join(BinDir, "initdb"), "-D", dataDir(), "-U", "postgres",
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot initdb: %w: %s", err, out)
	}
	addr, err := hookenv.Address()
	if err != nil {
		return err
	}
	// The unix socket lives in a directory only postgres (and root) can enter: local trust
	// is how the charm administers the server, as the real charm uses peer auth.
	hba := "local all all trust\nhost all all 127.0.0.0/8 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return err
	}
	unit := fmt.Sprintf(`[Unit]
Description=PostgreSQL 15 (jujusim stand-in)

[Service]
User=postgres
ExecStart=%s/postgres -D %s -c listen_addresses=%s -c port=%s -c unix_socket_directories=%s -c logging_collector=off
Restart=on-failure

[Install]
WantedBy=multi-user.target
`, BinDir, dataDir(), addr, Port, socketDir())
	if err := os.WriteFile(hookenv.Path("etc/systemd/system/"+service), []byte(unit), 0o644); err != nil {
		return err
	}
	return hookenv.Systemctl("daemon-reload")
}

func chownPostgres(dir string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
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

func connect(dbname string) (*sql.DB, error) {
	dsn := fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", socketDir(), Port, dbname)
	return sql.Open("postgres", dsn)
}

// ensureRunning starts the server and waits (bounded) until it accepts connections.
func ensureRunning() (*sql.DB, error) {
	if err := hookenv.Systemctl("enable", "--now", service); err != nil {
		return nil, err
	}
	db, err := connect("postgres")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = db.Ping()
		if err == nil {
			return db, nil
		}
		if time.Now().After(deadline) {
			db.Close()
			return nil, fmt.Errorf("PostgreSQL did not start: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func reconcile() error {
	db, err := ensureRunning()
	if err != nil {
		hookenv.Status("blocked", err.Error())
		return nil
	}
	defer db.Close()
	addr, err := hookenv.Address()
	if err != nil {
		return err
	}
	ver := version()
	legacy, modern := 0, 0
	if hookenv.IsLeader() {
		for _, ep := range []string{"db", "db-admin"} {
			ids, err := hookenv.RelationIDs(ep)
			if err != nil {
				return err
			}
			for _, id := range ids {
				legacy++
				if err := serveLegacy(db, id, ep == "db-admin", addr, ver); err != nil {
					return err
				}
			}
		}
		ids, err := hookenv.RelationIDs("database")
		if err != nil {
			return err
		}
		for _, id := range ids {
			modern++
			if err := serveClient(db, id, addr, ver); err != nil {
				return err
			}
		}
	}
	hookenv.Run("application-version-set", ver)
	if legacy > 0 && modern > 0 {
		return hookenv.Status("blocked", "Please choose one endpoint to use. No need to relate all of them simultaneously!")
	}
	return hookenv.Status("active", "Live master ("+ver+")")
}

// password returns the password of a role, kept in the unit's charm state.
func password(role string) (string, error) {
	var pw string
	if err := hookenv.Get(&pw, "state-get", "password-"+role); err != nil {
		return "", err
	}
	if pw != "" {
		return pw, nil
	}
	b := make([]byte, 16)
	rand.Read(b)
	pw = hex.EncodeToString(b)
	_, err := hookenv.Run("state-set", "password-"+role+"="+pw)
	return pw, err
}

// ensureRoleAndDatabase creates (or updates) a login role and a database it owns.
func ensureRoleAndDatabase(db *sql.DB, role, pw, database string, superuser bool, roles []string) error {
	var exists bool
	if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return err
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	attrs := "LOGIN"
	if superuser {
		attrs += " SUPERUSER"
	}
	if _, err := db.Exec(fmt.Sprintf(`%s ROLE %s WITH %s PASSWORD %s`, verb, pq.QuoteIdentifier(role), attrs, pq.QuoteLiteral(pw))); err != nil {
		return fmt.Errorf("cannot create role %s: %w", role, err)
	}
	for _, r := range roles {
		if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := db.Exec(`CREATE ROLE ` + pq.QuoteIdentifier(r) + ` NOLOGIN`); err != nil {
				return err
			}
		}
		if _, err := db.Exec(`GRANT ` + pq.QuoteIdentifier(r) + ` TO ` + pq.QuoteIdentifier(role)); err != nil {
			return err
		}
	}
	if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, database).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := db.Exec(`CREATE DATABASE ` + pq.QuoteIdentifier(database) + ` OWNER ` + pq.QuoteIdentifier(role)); err != nil {
			return fmt.Errorf("cannot create database %s: %w", database, err)
		}
	}
	_, err := db.Exec(`GRANT ALL PRIVILEGES ON DATABASE ` + pq.QuoteIdentifier(database) + ` TO ` + pq.QuoteIdentifier(role))
	return err
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]`)

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// serveLegacy publishes the pgsql interface in this unit's bag, as the postgresql charms do.
func serveLegacy(db *sql.DB, relID string, admin bool, addr, ver string) error {
	remoteApp, err := hookenv.RemoteApp(relID)
	if err != nil {
		return err
	}
	units, err := hookenv.Units(relID)
	if err != nil {
		return err
	}
	// The request may be in the client app bag (v2) or in its unit bags (v1).
	request := map[string]string{}
	if data, err := hookenv.AppData(relID, remoteApp); err == nil {
		for _, k := range []string{"database", "roles", "extensions"} {
			if data[k] != "" {
				request[k] = data[k]
			}
		}
	}
	var subnets []string
	for _, u := range units {
		data, err := hookenv.UnitData(relID, u)
		if err != nil {
			return err
		}
		for _, k := range []string{"database", "roles", "extensions"} {
			if request[k] == "" && data[k] != "" {
				request[k] = data[k]
			}
		}
		for _, s := range splitList(data["egress-subnets"]) {
			if !slices.Contains(subnets, s) {
				subnets = append(subnets, s)
			}
		}
	}
	database := request["database"]
	if database == "" {
		database = remoteApp
	}
	prefix := "juju_"
	if admin {
		prefix = "jujuadmin_"
	}
	role := prefix + unsafeName.ReplaceAllString(remoteApp, "_")
	pw, err := password(role)
	if err != nil {
		return err
	}
	if err := ensureRoleAndDatabase(db, role, pw, database, admin, splitList(request["roles"])); err != nil {
		return err
	}
	if err := ensureExtensions(database, splitList(request["extensions"])); err != nil {
		return err
	}
	sort.Strings(subnets)
	master := fmt.Sprintf("dbname=%s host=%s password=%s port=%s user=%s", database, addr, pw, Port, role)
	data := map[string]string{
		"host":            addr,
		"port":            Port,
		"database":        database,
		"user":            role,
		"password":        pw,
		"schema_user":     role,
		"schema_password": pw,
		"version":         strings.Split(ver, ".")[0],
		"state":           "standalone",
		"master":          master,
		"standbys":        "",
		"allowed-units":   strings.Join(units, " "),
		"allowed-subnets": strings.Join(subnets, ","),
		"roles":           request["roles"],
		"extensions":      request["extensions"],
	}
	return hookenv.Set(relID, false, data)
}

func ensureExtensions(database string, exts []string) error {
	if len(exts) == 0 {
		return nil
	}
	db, err := connect(database)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, e := range exts {
		name, schema, _ := strings.Cut(e, ":")
		q := `CREATE EXTENSION IF NOT EXISTS ` + pq.QuoteIdentifier(name)
		if schema != "" {
			q += ` SCHEMA ` + pq.QuoteIdentifier(schema)
		}
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("cannot create extension %s: %w", name, err)
		}
	}
	return nil
}

// serveClient publishes the postgresql_client interface in the application bag, once the
// requirer has asked for a database. Credentials are plain fields: requested-secrets is not
// supported by the stand-in, which is what a requirer that omits it gets from the real charm.
func serveClient(db *sql.DB, relID, addr, ver string) error {
	remoteApp, err := hookenv.RemoteApp(relID)
	if err != nil {
		return err
	}
	req, err := hookenv.AppData(relID, remoteApp)
	if err != nil {
		return err
	}
	if req["database"] == "" {
		return nil
	}
	if req["requested-secrets"] != "" && req["requested-secrets"] != "[]" {
		return errors.New("the postgresql stand-in does not support requested-secrets: omit it to receive plain credentials")
	}
	_, id, _ := strings.Cut(relID, ":")
	role := "relation-" + id
	pw, err := password(role)
	if err != nil {
		return err
	}
	superuser := strings.Contains(req["extra-user-roles"], "SUPERUSER") || strings.Contains(req["extra-user-roles"], "admin")
	if err := ensureRoleAndDatabase(db, role, pw, req["database"], superuser, nil); err != nil {
		return err
	}
	return hookenv.Set(relID, true, map[string]string{
		"database":  req["database"],
		"endpoints": addr + ":" + Port,
		"username":  role,
		"password":  pw,
		"version":   ver,
		"uris":      fmt.Sprintf("postgresql://%s:%s@%s:%s/%s", role, pw, addr, Port, req["database"]),
	})
}
