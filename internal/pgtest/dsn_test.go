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
