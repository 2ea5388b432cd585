package livepatch

import (
	"net"
	"net/url"
	"strings"
	"testing"
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
		if !ok {
			return
		}
		if port == "" {
			port = "5432"
		}
		if sslmode == "" {
			sslmode = "disable"
		}
		checkDSN(t, dsn, user, password, []string{net.JoinHostPort(host, port)}, url.Values{"sslmode": {sslmode}})
	})
}

// FuzzPostgresqlClientRelation feeds the provider's application bag of a postgresql_client
// relation to the charm, with the same properties as FuzzPgsqlRelation.
func FuzzPostgresqlClientRelation(f *testing.F) {
	f.Add("10.0.0.9:5432,10.0.0.10:5432", "relation-4", "pg-s3cret/pass", "livepatch")
	f.Add("db.internal:5432", "u", "p@ss:w/rd?#", "")
	f.Add("[fe80::1]:5432", "u", "p", "other")
	f.Add("10.0.0.9:5432/x?y=z", "u", "p", "livepatch")
	f.Fuzz(func(t *testing.T, endpoints, username, password, database string) {
		data := map[string]string{"endpoints": endpoints, "username": username, "password": password, "database": database}
		dsn, problem, ok := postgresqlClientCredentials(data, "livepatch")
		if len(password) >= 4 && strings.Contains(problem, password) && !strings.Contains(endpoints, password) {
			t.Fatalf("problem %q shows the password", problem)
		}
		if !ok {
			return
		}
		checkDSN(t, dsn, username, password, splitList(endpoints), url.Values{"sslmode": {"disable"}, "target_session_attrs": {"read-write"}})
	})
}

func checkDSN(t *testing.T, dsn, user, password string, hosts []string, query url.Values) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DSN does not parse: %v", err)
	}
	gotPassword, _ := u.User.Password()
	switch {
	case u.Scheme != "postgres":
		t.Fatalf("scheme %q", u.Scheme)
	case u.User.Username() != user || gotPassword != password:
		t.Fatalf("credentials %q:%q, want %q:%q", u.User.Username(), gotPassword, user, password)
	case u.Host != strings.Join(hosts, ","):
		t.Fatalf("host %q, want %q", u.Host, strings.Join(hosts, ","))
	case u.Path != "/livepatch" || u.Fragment != "" || u.Opaque != "":
		t.Fatalf("DSN %q names another database", dsn)
	case u.Query().Encode() != query.Encode():
		t.Fatalf("query %q, want %q", u.Query().Encode(), query.Encode())
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
