package pgtest

import (
	"strings"
	"testing"
)

func TestWithDatabase(t *testing.T) {
	tests := []struct{ dsn, name, want string }{
		{"host=h user=u", "", "host=h user=u sslmode=disable"},
		{"host=h user=u sslmode=require", "db1", "host=h user=u sslmode=require dbname=db1"},
		{"postgres://u:p@h:5432/postgres", "db1", "postgres://u:p@h:5432/db1?sslmode=disable"},
		{"postgresql://u@h/postgres?sslmode=verify-full", "", "postgresql://u@h/postgres?sslmode=verify-full"},
	}
	for _, test := range tests {
		got, err := withDatabase(test.dsn, test.name)
		if err != nil || got != test.want {
			t.Errorf("withDatabase(%q, %q) = %q, %v; want %q", test.dsn, test.name, got, err, test.want)
		}
	}
}

func TestDatabaseName(t *testing.T) {
	a, b := databaseName("TestX/sub case"), databaseName(strings.Repeat("TestLong", 20))
	if a == b || len(b) > 63 || !strings.HasSuffix(a, "_testx_sub_case") {
		t.Errorf("databaseName() = %q, %q", a, b)
	}
}

func TestConfig(t *testing.T) {
	got := config(Options{}, "/c/sock", 5433)
	want := `
listen_addresses = '127.0.0.1'
port = 5433
unix_socket_directories = '/c/sock'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
`
	if got != want {
		t.Errorf("config(defaults) = %s\nwant:%s", got, want)
	}
	got = config(Options{MaxConnections: 300, Durable: true, Config: "work_mem = 16MB\n"}, "/c/sock", 5433)
	for _, line := range []string{"\nmax_connections = 300\n", "\nfsync = on\n", "\nsynchronous_commit = on\n", "\nfull_page_writes = on\n"} {
		if !strings.Contains(got, line) {
			t.Errorf("config(durable) lacks %q:\n%s", line[1:], got)
		}
	}
	if !strings.HasSuffix(got, "\nwork_mem = 16MB\n") {
		t.Errorf("config(durable) does not end with Config:\n%s", got)
	}
}
