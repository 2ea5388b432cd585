package livepatch

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lib/pq"
)

// FuzzPgsqlRelation feeds a postgresql unit's pgsql bag to the charm: it never panics, and a
// connection string it builds connects exactly where the bag says, as the user it says,
// with the password intact.
func FuzzPgsqlRelation(f *testing.F) {
	f.Add("10.0.0.9", "5432", "juju_livepatch", "pg-s3cret/pass", "livepatch", "livepatch/0 livepatch/1", "", "standalone")
	f.Add("db.internal", "", "u", "p@ss:w/rd?#", "livepatch", "livepatch/0", "require", "master")
	f.Add("fe80::1", "6432", "u", "p", "livepatch", "livepatch/0", "verify-full", "")
	f.Add("10.0.0.9/x?sslmode=disable#", "5432", "u", "p", "livepatch", "livepatch/0", "", "")
	f.Fuzz(func(t *testing.T, host, port, user, password, database, allowed, sslmode, state string) {
		data := map[string]string{
			"host": host, "port": port, "user": user, "password": password, "database": database,
			"allowed-units": allowed, "sslmode": sslmode, "state": state,
		}
		dsn, problem, ok := pgsqlCredentials(data, "livepatch", "livepatch/0")
		if password != "" && len(password) >= 4 && strings.Contains(problem, password) && !strings.Contains(host+port+sslmode, password) {
			t.Fatalf("problem %q shows the password", problem)
		}
		if !ok || !utf8.ValidString(user+password) {
			return
		}
		if port == "" {
			port = "5432"
		}
		if sslmode == "" {
			sslmode = "prefer"
		}
		checkDSN(t, dsn, user, password, []string{net.JoinHostPort(host, port)}, map[string]string{"sslmode": sslmode})
	})
}

// FuzzPostgresqlClientRelation feeds the provider's application bag of a postgresql_client
// relation to the charm, with the same properties as FuzzPgsqlRelation.
func FuzzPostgresqlClientRelation(f *testing.F) {
	f.Add("10.0.0.9:5432,10.0.0.10:5432", "", "relation-4", "pg-s3cret/pass' x", "livepatch", "", "")
	f.Add("db.internal:5432", "db2.internal:5432", "u", "p@ss:w/rd?#\\", "", "True", "")
	f.Add("[fe80::1]:5432", "fd00::6:5432", "u", "p", "livepatch", "True", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")
	f.Add("10.0.0.9:5432/x?y=z", "", "u", "p", "livepatch", "False", "")
	f.Fuzz(func(t *testing.T, endpoints, readOnly, username, password, database, tls, ca string) {
		data := map[string]string{
			"endpoints": endpoints, "read-only-endpoints": readOnly, "username": username,
			"password": password, "database": database, "tls": tls, "tls-ca": ca,
		}
		conn, problem, ok := postgresqlClientCredentials(data, "livepatch", "/etc/livepatch/postgresql-ca.pem")
		if len(password) >= 4 && strings.Contains(problem, password) && !strings.Contains(endpoints+readOnly+tls, password) {
			t.Fatalf("problem %q shows the password", problem)
		}
		// Relation data travels as JSON: it is valid UTF-8.
		if !ok || database != "" && database != "livepatch" || !utf8.ValidString(username+password) {
			return
		}
		hosts := append(splitList(endpoints), splitList(readOnly)...)
		for i, h := range hosts {
			if _, _, err := net.SplitHostPort(h); err != nil {
				j := strings.LastIndexByte(h, ':')
				hosts[i] = net.JoinHostPort(h[:j], h[j+1:])
			}
		}
		params := map[string]string{"sslmode": "prefer"}
		if strings.EqualFold(tls, "true") {
			params["sslmode"] = "require"
			if strings.TrimSpace(ca) != "" {
				params["sslmode"], params["sslrootcert"] = "verify-full", "/etc/livepatch/postgresql-ca.pem"
				if conn.ca != strings.TrimSpace(ca)+"\n" {
					t.Fatalf("CA %q, want %q", conn.ca, ca)
				}
			}
		}
		checkDSN(t, conn.dsn, username, password, hosts, params)
	})
}

// checkDSN checks a key=value connection string as libpq reads it: the user, the password
// intact, the database livepatch, exactly the hosts (host:port, sorted) and the parameters
// given.
func checkDSN(t *testing.T, dsn, user, password string, hosts []string, params map[string]string) {
	t.Helper()
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	got := []string{net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	for _, m := range cfg.Multi {
		got = append(got, net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port))))
	}
	want := slices.Clone(hosts)
	for i, h := range want {
		host, port, _ := net.SplitHostPort(h)
		want[i] = net.JoinHostPort(host, port)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	slices.Sort(got)
	switch {
	case cfg.User != user || cfg.Password != password:
		t.Fatalf("credentials %q:%q, want %q:%q", cfg.User, cfg.Password, user, password)
	case !slices.Equal(got, want):
		t.Fatalf("hosts %q, want %q", got, want)
	case cfg.Database != "livepatch":
		t.Fatalf("DSN %q names another database", dsn)
	case len(cfg.Runtime) > 0:
		t.Fatalf("DSN %q sets runtime parameters %v", dsn, cfg.Runtime)
	}
	for k, v := range params {
		var have string
		switch k {
		case "sslmode":
			have = string(cfg.SSLMode)
		case "sslrootcert":
			have = cfg.SSLRootCert
		case "target_session_attrs":
			have = string(cfg.TargetSessionAttrs)
		default:
			t.Fatalf("unknown parameter %q", k)
		}
		if have != v {
			t.Fatalf("%s %q, want %q", k, have, v)
		}
	}
}

// FuzzPeerData feeds the peer relation's bags to the rolling restart: it never panics, a
// unit is only ever held by a unit before it that has not passed the generation, and
// generations parse only from plain decimal numbers.
func FuzzPeerData(f *testing.F) {
	f.Add("3", "livepatch/1", "2", "livepatch/10", "3", "", "livepatch/11")
	f.Add("x", "livepatch/-1", "+1", "livepatch/", "99999999999999999999", "0", "livepatch/0")
	f.Fuzz(func(t *testing.T, gen, unitA, passedA, unitB, passedB, wanted, self string) {
		p := Peer{
			Data: map[string]string{PeerRestartGeneration: gen},
			Units: map[string]map[string]string{
				unitA: {PeerRestartedGeneration: passedA, PeerRestartWanted: wanted},
				unitB: {PeerRestartedGeneration: passedB},
			},
		}
		g := p.Generation()
		if g < 0 {
			t.Fatalf("negative generation %d from %q", g, gen)
		}
		if n, ok := parseGeneration(gen); ok && (n != g || strings.TrimLeft(gen, "0123456789") != "") {
			t.Fatalf("generation %q parsed as %d", gen, n)
		}
		blocker := p.Blocker(self, g)
		if blocker != "" {
			if blocker != unitA && blocker != unitB {
				t.Fatalf("blocked by unknown unit %q", blocker)
			}
			if unitNumber(blocker) >= unitNumber(self) {
				t.Fatalf("%q held by %q, which is not before it", self, blocker)
			}
			passed, ok := parseGeneration(p.Units[blocker][PeerRestartedGeneration])
			if !ok || passed >= g {
				t.Fatalf("%q held by %q, which passed generation %d", self, blocker, g)
			}
		}
		for _, u := range p.Pending(g) {
			if u != unitA && u != unitB {
				t.Fatalf("pending unknown unit %q", u)
			}
		}
		_ = p.RestartWanted(g)
	})
}

// FuzzSharedBasicUsers feeds the basic-users the leader shares to the charm: it never panics,
// accepted entries are kept verbatim, and a problem never shows a hash.
func FuzzSharedBasicUsers(f *testing.F) {
	f.Add("admin:$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy,ops:$2y$10$WfSWqEsSvlqFyUcOa6aL9.MsBzkQoh0CC8EL9w0nvIamJESwDHmhe")
	f.Add("admin:plaintext-password,,")
	f.Fuzz(func(t *testing.T, list string) {
		users, err := parseBasicUsers(list)
		if err != nil {
			// Messages name users, so only a secret that is no part of a user name of the
			// list can be told apart.
			var names, secrets []string
			for entry := range strings.SplitSeq(list, ",") {
				user, secret, _ := strings.Cut(strings.TrimSpace(entry), ":")
				names, secrets = append(names, user), append(secrets, secret)
			}
			allNames := strings.Join(names, "\n")
			for _, secret := range secrets {
				if len(secret) >= 8 && !strings.Contains(allNames, secret) && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows a password or hash", err)
				}
			}
			return
		}
		for _, u := range users {
			if !strings.Contains(list, u.entry) || !strings.HasPrefix(u.entry, u.name+":") {
				t.Fatalf("entry %q of user %q is not from the list", u.entry, u.name)
			}
		}
	})
}
