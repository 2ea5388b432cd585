package jujusim_test

import (
	"encoding/base64"
	"testing"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/s3integrator"
)

const s3ClientMeta = `
name: client
summary: s3 requirer
description: s3 requirer
requires:
  s3-credentials: {interface: s3}
`

// s3Status returns a unit's workload status.
func s3Status(t *testing.T, m *jujusim.Model, unit string) (string, string) {
	t.Helper()
	u, ok := m.Status().Unit(unit)
	if !ok {
		t.Fatalf("no unit %s", unit)
	}
	return u.Workload.Current, u.Workload.Message
}

func runAction(t *testing.T, m *jujusim.Model, unit, name string, params map[string]any) jujusim.ActionResult {
	t.Helper()
	a, err := m.RunAction(unit, name, params)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Wait(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestS3IntegratorStandin: the stand-in is Blocked until sync-s3-credentials; it shares
// its options on config-changed and, to a requirer asking for a bucket (as the s3 library
// v0 does on relation-joined), the options, the keys and the requirer's bucket when no
// bucket option is set; a reset option is shared as "", a list option as json.dumps.
func TestS3IntegratorStandin(t *testing.T) {
	m, sc := newModel(t)
	sc.set(t, "s3-credentials-relation-joined", `
if [ "$(is-leader --format=json)" = true ]; then relation-set --app bucket=asked-bucket; fi
`)
	deploy(t, m, jujusim.DeployArgs{Charm: "s3-integrator", Config: map[string]any{"endpoint": "http://127.0.0.1:8333", "s3-uri-style": "path"}})
	deploy(t, m, jujusim.DeployArgs{Charm: testCharm(t, "client", s3ClientMeta, "", "")})
	waitIdle(t, m)
	if st, msg := s3Status(t, m, "s3-integrator/0"); st != "blocked" || msg != "Missing parameters: ['access-key', 'secret-key']" {
		t.Errorf("before the keys: %s %q", st, msg)
	}
	if res := runAction(t, m, "s3-integrator/0", "get-s3-credentials", nil); res.Status != "failed" || res.Message != s3integrator.MessageNotSet {
		t.Errorf("get-s3-credentials before sync: %s %q", res.Status, res.Message)
	}
	if res := runAction(t, m, "s3-integrator/0", "sync-s3-credentials", map[string]any{"access-key": "AK", "secret-key": "SK-s3cret"}); res.Status != "completed" || res.Results["ok"] != s3integrator.MessageSynced {
		t.Fatalf("sync-s3-credentials: %+v", res)
	}
	waitIdle(t, m)
	if st, msg := s3Status(t, m, "s3-integrator/0"); st != "active" || msg != "" {
		t.Errorf("after the keys: %s %q", st, msg)
	}
	info := runAction(t, m, "s3-integrator/0", "get-s3-connection-info", nil)
	if info.Results["secret-key"] != "************" || info.Results["endpoint"] != "http://127.0.0.1:8333" {
		t.Errorf("get-s3-connection-info: %v", info.Results)
	}

	id := relate(t, m, "client:s3-credentials", "s3-integrator:s3-credentials")
	waitIdle(t, m)
	got := bag(t, m, id, "s3-integrator")
	want := map[string]string{
		"access-key": "AK", "secret-key": "SK-s3cret", "endpoint": "http://127.0.0.1:8333",
		"s3-uri-style": "path", "bucket": "asked-bucket", "data": `{"bucket": "asked-bucket"}`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("provider bag %s = %q, want %q", k, got[k], v)
		}
	}

	// A CA chain and attributes are lists; a reset option goes as "" (json.dumps for lists).
	ca := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := m.SetConfig("s3-integrator", map[string]string{"tls-ca-chain": base64.StdEncoding.EncodeToString([]byte(ca)), "attributes": "a:1,b:2", "s3-uri-style": ""}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	got = bag(t, m, id, "s3-integrator")
	if got["tls-ca-chain"] != `["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"]` || got["attributes"] != `["a:1", "b:2"]` {
		t.Errorf("lists: tls-ca-chain %q, attributes %q", got["tls-ca-chain"], got["attributes"])
	}
	if _, ok := got["s3-uri-style"]; ok {
		t.Errorf("s3-uri-style still shared after its reset: %q", got["s3-uri-style"])
	}
	if err := m.SetConfig("s3-integrator", map[string]string{"attributes": ""}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m)
	if got := bag(t, m, id, "s3-integrator")["attributes"]; got != `""` {
		t.Errorf("attributes after its reset %q, want json.dumps(\"\")", got)
	}
}
