package reliability

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
)

// contracting matches statements a migration may not hold: they break the server of the
// previous release during a rolling upgrade (server/postgres/migrations/README.md).
var contracting = regexp.MustCompile(`(?is)\b(DROP\s+(TABLE|COLUMN|INDEX|CONSTRAINT|VIEW|FUNCTION|TYPE|SCHEMA)` +
	`|RENAME\b|ALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b|SET\s+NOT\s+NULL|TRUNCATE\b|DELETE\s+FROM)`)

// TestMigrationsAreExpandOnly checks every migration after the first for statements that
// remove or change what an older server uses.
func TestMigrationsAreExpandOnly(t *testing.T) {
	root, err := deploy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "server", "postgres", "migrations", "*.sql"))
	if err != nil || len(files) < 2 {
		t.Fatalf("migrations: %v %v", files, err)
	}
	for _, f := range files[1:] {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var sql strings.Builder
		for line := range strings.Lines(string(data)) {
			code, _, _ := strings.Cut(line, "--")
			sql.WriteString(code)
		}
		if m := contracting.FindString(sql.String()); m != "" {
			t.Errorf("%s: %q is not expand-only: keep it for a later release (server/postgres/migrations/README.md)", filepath.Base(f), m)
		}
	}
}

func TestContractingPattern(t *testing.T) {
	for stmt, bad := range map[string]bool{
		"CREATE TABLE x (id int)":                                       false,
		"ALTER TABLE machines ADD COLUMN note text":                     false,
		"CREATE INDEX machines_note_idx ON machines (note)":             false,
		"ALTER TABLE machines DROP COLUMN note":                         true,
		"alter table machines rename column kernel to release":          true,
		"ALTER TABLE machines ALTER COLUMN uptime TYPE numeric":         true,
		"ALTER TABLE machines ALTER COLUMN uptime SET DATA TYPE bigint": true,
		"ALTER TABLE machines ALTER COLUMN tier_id SET NOT NULL":        true,
		"DROP INDEX machines_tier_id_patch_version_idx":                 true,
		"DELETE FROM machine_reports":                                   true,
	} {
		if got := contracting.MatchString(stmt); got != bad {
			t.Errorf("%q: contracting %v, want %v", stmt, got, bad)
		}
	}
}
