package livepatch_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/hookstest"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	lpt "github.com/livepatch-onprem/livepatch/hooks/livepatch/livepatchtest"
	"github.com/livepatch-onprem/livepatch/server/config"
)

const (
	s3SecretID  = "cq8ht8bh4ns7otrqs3s3"
	s3SecretKey = "s3-s3cret-key-value"
)

// s3State is a ready unit with patchstore s3 and its credentials in a user secret.
func s3State() hookstest.State {
	st := lpt.Ready(true)
	st.Config["patchstore"] = "s3"
	st.Config["s3_endpoint"] = "https://s3.example.com"
	st.Config["s3_bucket"] = "livepatch-patches"
	st.Config["s3_path_prefix"] = "site-a"
	st.Config["s3_credentials_secret"] = "secret:" + s3SecretID
	st.Config["s3_redirect_downloads"] = true
	if st.Secrets == nil {
		st.Secrets = map[string]hookstest.Secret{}
	}
	st.Secrets[s3SecretID] = hookstest.Secret{Revisions: []map[string]string{{"access-key": "AKIALIVEPATCH", "secret-key": s3SecretKey}}}
	return st
}

// patchstore s3 renders the bucket and the credentials of the secret, checks the bucket
// with the server, and never shows the secret key.
func TestS3Patchstore(t *testing.T) {
	e := lpt.New(t)
	st := s3State()
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Status.Name != "active" {
		t.Fatalf("status = %v, want active", res.Status)
	}
	want := config.PatchStorage{
		Type: config.StorageS3, S3Endpoint: "https://s3.example.com", S3Bucket: "livepatch-patches", S3PathPrefix: "site-a",
		S3AccessKey: "AKIALIVEPATCH", S3SecretKey: s3SecretKey, S3PathStyle: true, RedirectDownloads: true,
	}
	if diff := cmp.Diff(want, loadRendered(t, e).PatchStorage); diff != "" {
		t.Errorf("rendered patch storage (-want +got):\n%s", diff)
	}
	if len(e.Server.StorageChecks) == 0 || e.Server.StorageChecks[0] != want {
		t.Errorf("storage checks %+v, want one of %+v", e.Server.StorageChecks, want)
	}
	lpt.CheckNoLeaks(t, res, s3SecretKey)
}

// A bucket the server cannot use blocks the unit with the server's reason; fixed, the
// next hook clears it.
func TestS3PatchstoreUnusable(t *testing.T) {
	e := lpt.New(t)
	st := s3State()
	e.Install(t, st)
	e.Server.StorageProblem = `cannot open patch storage: s3 at s3.example.com refused the credentials for bucket "livepatch-patches"`
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Status.Name != "blocked" || res.Status.Message != "Patch storage unusable: "+e.Server.StorageProblem {
		t.Errorf("status = %v, want Blocked with the reason", res.Status)
	}
	lpt.CheckNoLeaks(t, res, s3SecretKey)
	e.Server.StorageProblem = ""
	if res := e.H.Run(t, "update-status", res.State); res.Status.Name != "active" {
		t.Errorf("after the bucket is fixed: %v, want active", res.Status)
	}
}

// Missing s3 options and a secret without its keys are Blocked statuses naming them.
func TestS3PatchstoreOptions(t *testing.T) {
	for _, test := range []struct {
		name  string
		setup func(*hookstest.State)
		want  string
	}{
		{"no endpoint", func(s *hookstest.State) { s.Config["s3_endpoint"] = "" }, "s3_endpoint must be set"},
		{"bad endpoint", func(s *hookstest.State) { s.Config["s3_endpoint"] = "https://a:b@s3.example.com" }, "s3_endpoint is not an http(s) URL"},
		{"no bucket", func(s *hookstest.State) { s.Config["s3_bucket"] = "" }, "s3_bucket must be set"},
		{"no secret", func(s *hookstest.State) { s.Config["s3_credentials_secret"] = "" }, "s3_credentials_secret must be set"},
		{"bad CA", func(s *hookstest.State) { s.Config["s3_ca"] = "not a certificate" }, "s3_ca holds no PEM certificate"},
		{"secret without secret-key", func(s *hookstest.State) {
			s.Secrets[s3SecretID] = hookstest.Secret{Revisions: []map[string]string{{"access-key": "AKIALIVEPATCH"}}}
		}, `the secret of s3_credentials_secret has no "secret-key" key`},
		{"secret not granted", func(s *hookstest.State) {
			sec := s.Secrets[s3SecretID]
			sec.Denied = true
			s.Secrets[s3SecretID] = sec
		}, "juju grant-secret"},
	} {
		t.Run(test.name, func(t *testing.T) {
			e := lpt.New(t)
			st := s3State()
			test.setup(&st)
			e.Install(t, st)
			res := e.H.Run(t, "config-changed", st)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Status.Name != "blocked" || !strings.Contains(res.Status.Message, test.want) {
				t.Errorf("status = %v, want Blocked with %q", res.Status, test.want)
			}
			lpt.CheckNoLeaks(t, res, s3SecretKey)
		})
	}
}

// s3_ca is written for the server and named in its configuration; unset, it is removed.
func TestS3PatchstoreCA(t *testing.T) {
	e := lpt.New(t)
	st := s3State()
	ca := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	st.Config["s3_ca"] = ca
	e.Install(t, st)
	res := e.H.Run(t, "config-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := e.H.ReadFile(t, livepatch.S3CAPath); got != ca {
		t.Errorf("%s = %q, want %q", livepatch.S3CAPath, got, ca)
	}
	if got := loadRendered(t, e).PatchStorage.S3CAFile; got != livepatch.S3CAPath {
		t.Errorf("s3-ca-file = %q, want %s", got, livepatch.S3CAPath)
	}
	st = res.State
	st.Config["s3_ca"] = ""
	if res := e.H.Run(t, "config-changed", st); res.Err != nil || loadRendered(t, e).PatchStorage.S3CAFile != "" {
		t.Errorf("after unsetting s3_ca: %v, s3-ca-file %q", res.Err, loadRendered(t, e).PatchStorage.S3CAFile)
	}
}

// s3Relation is the s3-credentials relation as s3-integrator (data_platform_libs' S3
// provider, v0) fills its application bag.
func s3Relation() hookstest.Relation {
	return hookstest.Relation{
		ID: 9, Endpoint: livepatch.S3CredentialsEndpoint, RemoteApp: "s3-integrator",
		RemoteUnits: map[string]map[string]string{"s3-integrator/0": {}},
		RemoteAppData: map[string]string{
			"access-key": "AKIARELATION", "secret-key": s3SecretKey, "endpoint": "http://rgw.example:7480",
			"bucket": "lp-patches", "region": "eu-central-1", "path": "/livepatch/", "s3-uri-style": "host",
			"tls-ca-chain": `["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"]`,
		},
	}
}

// With the s3-credentials relation the bucket and credentials come from s3-integrator,
// replacing the s3_* options; no secret option is needed. The leader asks for s3_bucket.
func TestS3CredentialsRelation(t *testing.T) {
	e := lpt.New(t)
	st := s3State()
	st.Config["s3_credentials_secret"] = ""
	st.Relations = append(st.Relations, s3Relation())
	e.Install(t, st)
	res := e.H.Run(t, "s3-credentials-relation-changed", st)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Status.Name != "active" {
		t.Fatalf("status = %v, want active", res.Status)
	}
	want := config.PatchStorage{
		Type: config.StorageS3, S3Endpoint: "http://rgw.example:7480", S3Region: "eu-central-1", S3Bucket: "lp-patches",
		S3PathPrefix: "livepatch", S3AccessKey: "AKIARELATION", S3SecretKey: s3SecretKey, S3CAFile: livepatch.S3CAPath,
		RedirectDownloads: true,
	}
	if diff := cmp.Diff(want, loadRendered(t, e).PatchStorage); diff != "" {
		t.Errorf("rendered patch storage (-want +got):\n%s", diff)
	}
	if got := res.Relation(livepatch.S3CredentialsEndpoint).LocalAppData["bucket"]; got != "livepatch-patches" {
		t.Errorf("requested bucket %q, want livepatch-patches (s3_bucket)", got)
	}
	lpt.CheckNoLeaks(t, res, s3SecretKey)

	// Until s3-integrator shares credentials, the unit waits.
	st = res.State
	r := st.Relation(livepatch.S3CredentialsEndpoint)
	r.RemoteAppData = map[string]string{}
	if res := e.H.Run(t, "s3-credentials-relation-changed", st); res.Status.Name != "waiting" || res.Status.Message != livepatch.MessageS3CredentialsWaiting {
		t.Errorf("without credentials: %v, want waiting", res.Status)
	}
}

// A v1 provider (s3-integrator 2/) shares the keys in the secret secret-extra names when the
// leader asks for them in requested-secrets; the charm reads them from the secret, says its
// lib-version, and no hook shows the secret key.
func TestS3CredentialsRelationSecret(t *testing.T) {
	const extraID = "d0s3extrasecret00000"
	e := lpt.New(t)
	st := s3State()
	st.Config["s3_credentials_secret"] = ""
	r := s3Relation()
	delete(r.RemoteAppData, "access-key")
	delete(r.RemoteAppData, "secret-key")
	r.RemoteAppData["lib-version"] = "1.0"
	r.RemoteAppData["secret-extra"] = "secret://" + lpt.ModelUUID + "/" + extraID
	st.Relations = append(st.Relations, r)
	st.Secrets[extraID] = hookstest.Secret{Revisions: []map[string]string{{"access-key": "AKIASECRET", "secret-key": s3SecretKey}}}
	e.Install(t, st)
	res := e.H.Run(t, "s3-credentials-relation-changed", st)
	if res.Err != nil || res.Status.Name != "active" {
		t.Fatalf("status %v (%v), want active", res.Status, res.Err)
	}
	if got := loadRendered(t, e).PatchStorage; got.S3AccessKey != "AKIASECRET" || got.S3SecretKey != s3SecretKey {
		t.Errorf("rendered access key %q, want the secret's", got.S3AccessKey)
	}
	ours := res.Relation(livepatch.S3CredentialsEndpoint).LocalAppData
	want := map[string]string{"bucket": "livepatch-patches", "lib-version": "1.0", "path": "site-a", "requested-secrets": `["access-key", "secret-key"]`}
	if diff := cmp.Diff(want, ours); diff != "" {
		t.Errorf("requirer bag (-want +got):\n%s", diff)
	}
	lpt.CheckNoLeaks(t, res, s3SecretKey)

	// Not granted (yet): the unit waits, naming the field, not the content.
	st = res.State
	s := st.Secrets[extraID]
	s.Denied = true
	st.Secrets[extraID] = s
	res = e.H.Run(t, "config-changed", st)
	if want := hooks.Waiting("Waiting for s3-integrator to grant the secret it shares on the s3-credentials relation (secret-extra: permission denied)"); res.Status != want {
		t.Errorf("status %v (%v), want %v", res.Status, res.Err, want)
	}
}

// Without s3_bucket the leader asks for no bucket (a v1 provider has its own); a v0
// provider answers only to a bucket request, so once it shows itself (it writes its
// relation-changed diff in data, without lib-version) the leader asks for relation-<id>,
// as the s3 libraries do.
func TestS3CredentialsRelationBucketForV0(t *testing.T) {
	e := lpt.New(t)
	st := s3State()
	st.Config["s3_credentials_secret"] = ""
	st.Config["s3_bucket"] = ""
	r := s3Relation()
	r.RemoteAppData = map[string]string{}
	st.Relations = append(st.Relations, r)
	e.Install(t, st)
	res := e.H.Run(t, "s3-credentials-relation-joined", st)
	if got := res.Relation(livepatch.S3CredentialsEndpoint).LocalAppData; got["bucket"] != "" || got["lib-version"] != "1.0" {
		t.Errorf("before the provider answers: bag %v, want lib-version and no bucket", got)
	}
	st = res.State
	st.Relation(livepatch.S3CredentialsEndpoint).RemoteAppData = map[string]string{"data": `{"lib-version": "1.0"}`}
	res = e.H.Run(t, "s3-credentials-relation-changed", st)
	if got := res.Relation(livepatch.S3CredentialsEndpoint).LocalAppData["bucket"]; got != "relation-9" {
		t.Errorf("bucket %q with a v0 provider, want relation-9", got)
	}
	if res.Status != hooks.Waiting(livepatch.MessageS3CredentialsWaiting) {
		t.Errorf("status %v, want waiting for the credentials", res.Status)
	}
}
