package jujusim_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func init() { jujusim.RegisterCommand("simtest-signing", signingMain) }

// signingMain runs the livepatch charm's signing key code in a hook context, on the peer
// relation "cluster": "create" (the leader makes the key when there is none), "load", or
// "rotate" (prepare and activate at once). It prints the active key id and the secret id.
func signingMain(args []string) int {
	ctx := context.Background()
	c := hooks.NewContext()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "ERROR", err); return 1 }
	ids, err := c.RelationIDs(ctx, "cluster")
	if err != nil || len(ids) == 0 {
		return fail(fmt.Errorf("no peer relation: %v", err))
	}
	data, err := c.RelationGetApp(ctx, ids[0], c.AppName())
	if err != nil {
		return fail(err)
	}
	peer := livepatch.Peer{RelID: ids[0], Data: data}
	leader, err := c.IsLeader(ctx)
	if err != nil {
		return fail(err)
	}
	keys, ok, err := livepatch.LoadSigningKeys(ctx, c, peer, args[0] == "create" && leader)
	if err != nil {
		return fail(err)
	}
	if !ok {
		fmt.Println("none")
		return 0
	}
	if args[0] == "rotate" {
		_, next, _ := ed25519.GenerateKey(nil)
		keys.Retired = append(keys.Retired, keys.Active.Public().(ed25519.PublicKey))
		keys.Active = next
		if err := livepatch.SaveSigningKeys(ctx, c, peer, &keys); err != nil {
			return fail(err)
		}
	}
	fmt.Println(server.KeyID(keys.Active.Public().(ed25519.PublicKey)), hooks.SecretID(keys.URI))
	return 0
}

// TestCharmSigningKeySecret runs the charm's signing key code against the emulator's
// secrets: the leader keeps the key in an application secret whose URI it shares in the
// peer bag, the other unit reads it, and a rotation reaches it with secret-changed.
func TestCharmSigningKeySecret(t *testing.T) {
	m, sc, _ := secretModel(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "simtest-signing")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	if got := run(t, m, "srv/1", bin+" create", 0); got != "none\n" {
		t.Errorf("non-leader before the leader made the key: %q", got)
	}
	created := strings.Fields(run(t, m, "srv/0", bin+" create", 0))
	if len(created) != 2 || created[1] == "" {
		t.Fatalf("leader create printed %q, want a key id and a secret id", created)
	}
	secrets := m.Secrets()
	if len(secrets) != 1 || secrets[0].Label != livepatch.SigningSecretLabel || secrets[0].Owner != "srv" {
		t.Fatalf("secrets = %+v, want one application secret labelled %s", secrets, livepatch.SigningSecretLabel)
	}
	if got := strings.Fields(run(t, m, "srv/0", bin+" create", 0)); got[0] != created[0] {
		t.Errorf("a second create made another key: %v", got)
	}
	if got := strings.Fields(run(t, m, "srv/1", bin+" load", 0)); got[0] != created[0] || got[1] != created[1] {
		t.Errorf("srv/1 reads %v, want %v", got, created)
	}
	rotated := strings.Fields(run(t, m, "srv/0", bin+" rotate", 0))
	waitIdle(t, m)
	if got := strings.Fields(run(t, m, "srv/1", bin+" load", 0)); got[0] != rotated[0] {
		t.Errorf("srv/1 reads key %s after rotation, want %s", got[0], rotated[0])
	}
	if !containsLine(events(t, sc), "srv/1 secret-changed "+created[1]+" label= rev=2") {
		t.Errorf("srv/1 did not get secret-changed: %v", events(t, sc))
	}
	for _, e := range m.Logs() {
		if strings.Contains(e.Message, "PRIVATE KEY") {
			t.Errorf("key material in the log: %s", e)
		}
	}
}
