package livepatch_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
