package postgres

import (
	"testing"
	"testing/fstest"
)

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	good := fstest.MapFS{"migrations/0001_a.sql": file("a"), "migrations/0002_b.sql": file("b")}
	ms, err := loadMigrations(good)
	if err != nil || len(ms) != 2 || ms[1].version != 2 || ms[1].sql != "b" || ms[1].name != "0002_b.sql" {
		t.Fatalf("loadMigrations() = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"migrations/0001_a.sql": file("a"), "migrations/0003_c.sql": file("c")},
		"duplicate": {"migrations/0001_a.sql": file("a"), "migrations/0001_b.sql": file("b")},
		"bad name":  {"migrations/1_a.sql": file("a")},
		"no number": {"migrations/initial.sql": file("a")},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("loadMigrations() of %s succeeded", name)
		}
	}
	// The embedded ones load (or the package would not have initialised).
	if LatestVersion() != len(migrations) || LatestVersion() < 1 {
		t.Fatalf("LatestVersion() = %d", LatestVersion())
	}
}
