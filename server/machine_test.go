package server_test

import (
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

// TestStatusCheckRefusesWhatTheDatabaseRefuses: a check-in shares its statement with
// others, so values the columns cannot hold are refused before it reaches the database.
func TestStatusCheckRefusesWhatTheDatabaseRefuses(t *testing.T) {
	good := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*server.Status){
		"NUL in cpu-model":      func(s *server.Status) { s.CPUModel = "Xeon\x00" },
		"NUL in client-version": func(s *server.Status) { s.ClientVersion = "1\x00" },
		"boot-time before 1970": func(s *server.Status) { s.BootTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) },
		"boot-time far ahead":   func(s *server.Status) { s.BootTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC) },
	} {
		bad := good
		change(&bad)
		if err := bad.Check(); server.ErrorCode(err) != server.CodeInvalid {
			t.Errorf("%s: Check() = %v, want an invalid error", name, err)
		}
	}
}
