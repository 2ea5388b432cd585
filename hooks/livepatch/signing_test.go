package livepatch_test

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
	"github.com/livepatch-onprem/livepatch/server"
)

// TestSigningKeyWithoutSecrets: where Juju has no secrets (the harness's tools have none),
// the leader keeps the key set in the peer application bag; every unit serves with it, and
// no key material shows in a status, a log, an argument or an action result.
func TestSigningKeyWithoutSecrets(t *testing.T) {
	e := lpt.New(t)
	st := lpt.Ready(true)
	st.Config["sync_server"] = true
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	data := res.State.Relation(livepatch.PeerEndpoint).LocalAppData[livepatch.PeerSigningKeys]
	var content map[string]string
	if err := json.Unmarshal([]byte(data), &content); err != nil {
		t.Fatalf("peer bag %s = %q: %v", livepatch.PeerSigningKeys, data, err)
	}
	pem := content["signing-key"]
	if !strings.Contains(pem, "PRIVATE KEY") {
		t.Fatalf("signing-key is not a PEM private key")
	}
	lpt.CheckNoLeaks(t, res, pem[40:80])
	if got := loadRendered(t, e).SyncServer.SigningKey; got != pem {
		t.Errorf("rendered sync-server.signing-key differs from the key in the peer bag")
	}
	// A second hook keeps the key.
	again := e.H.Run(t, "update-status", res.State)
	if again.State.Relation(livepatch.PeerEndpoint).LocalAppData[livepatch.PeerSigningKeys] != data {
		t.Errorf("the key set changed on a second hook")
	}

	// A non-leader waits for the leader's key, then serves with it.
	e2 := lpt.New(t)
	nl := lpt.Ready(false)
	nl.Config["sync_server"] = true
	e2.Install(t, nl)
	if r := e2.H.Run(t, "config-changed", nl); r.Status != hooks.Waiting(livepatch.MessageSigningKeyWait) {
		t.Errorf("non-leader status without a key = %v", r.Status)
	}
	nl.Relation(livepatch.PeerEndpoint).LocalAppData[livepatch.PeerSigningKeys] = data
	if r := e2.H.Run(t, "config-changed", nl); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := loadRendered(t, e2).SyncServer.SigningKey; got != pem {
		t.Errorf("the non-leader serves with another key")
	}

	// get-signing-key prints public keys only; a rotation goes prepare, activate, drop-retired.
	state := again.State
	get := e.H.RunAction(t, "get-signing-key", nil, state)
	lpt.CheckNoLeaks(t, get, pem[40:80])
	key, err := server.ParsePrivateKey([]byte(pem))
	if err != nil {
		t.Fatal(err)
	}
	oldPub := server.MarshalPublicKey(key.Public().(ed25519.PublicKey))
	if get.ActionResults["public-key"] != oldPub || get.ActionResults["trusted-keys"] != oldPub {
		t.Errorf("get-signing-key = %v, want public-key and trusted-keys %s", get.ActionResults, oldPub)
	}
	if r := e.H.RunAction(t, "rotate-signing-key", map[string]any{"step": "activate"}, state); !r.ActionFailed {
		t.Errorf("activate without a prepared key succeeded")
	}
	prep := e.H.RunAction(t, "rotate-signing-key", map[string]any{"step": "prepare"}, state)
	if prep.ActionFailed || prep.Err != nil {
		t.Fatalf("prepare: %v %s", prep.Err, prep.ActionMessage)
	}
	next := prep.ActionResults["next-key"]
	if prep.ActionResults["public-key"] != oldPub || prep.ActionResults["trusted-keys"] != oldPub+","+next {
		t.Errorf("after prepare: %v", prep.ActionResults)
	}
	act := e.H.RunAction(t, "rotate-signing-key", map[string]any{"step": "activate"}, prep.State)
	if act.ActionResults["public-key"] != next || act.ActionResults["trusted-keys"] != next+","+oldPub {
		t.Errorf("after activate: %v", act.ActionResults)
	}
	if loadRendered(t, e).SyncServer.SigningKey == pem {
		t.Errorf("the server still signs with the old key after activate")
	}
	drop := e.H.RunAction(t, "rotate-signing-key", map[string]any{"step": "drop-retired"}, act.State)
	if drop.ActionResults["trusted-keys"] != next {
		t.Errorf("after drop-retired: %v", drop.ActionResults)
	}
	lpt.CheckNoLeaks(t, prep, pem[40:80])
	lpt.CheckNoLeaks(t, act, pem[40:80])
}

// TestSecretOptionsWithoutSecrets: a *_secret option on a Juju without secrets is a
// Blocked status naming the option, never a hook error.
func TestSecretOptionsWithoutSecrets(t *testing.T) {
	for _, opt := range []string{"auth_basic_users_secret", "sync_token_secret"} {
		t.Run(opt, func(t *testing.T) {
			e := lpt.New(t)
			st := lpt.Ready(true)
			st.Config[opt] = "secret:cq8ht8bh4ns7otrqvf8g"
			e.Install(t, st)
			res := e.H.Run(t, "config-changed", st)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Status.Name != "blocked" || !strings.Contains(res.Status.Message, opt) {
				t.Errorf("status = %v, want Blocked naming %s", res.Status, opt)
			}
		})
	}
}
