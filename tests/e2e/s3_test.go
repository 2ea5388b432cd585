package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/internal/s3test"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
	"github.com/livepatch-onprem/livepatch/tests/standin/s3integrator"
)

// TestS3IntegratorPatchstore deploys the bundle with livepatch on patchstore s3, related
// to the s3-integrator stand-in on s3-credentials, a real SeaweedFS behind it: as the
// s3-integrator README has it, the operator configures endpoint, bucket and uri style and
// runs sync-s3-credentials. The bucket does not exist yet: livepatch is Blocked saying so;
// once it is created (the next update-status) it serves, the upstream's patches sync into
// the bucket and, promoted, a machine downloads one through haproxy and verifies it. Keys the service
// refuses (sync-s3-credentials again) block it with a clear message, and the right keys
// bring it back. No key shows in a status or a livepatch log line.
func TestS3IntegratorPatchstore(t *testing.T) {
	t.Parallel()
	srv := s3test.Get(t)
	d := deploy.New(t, deploy.Options{})
	m := d.Model
	bucket := fmt.Sprintf("lp-e2e-%d", m.Seed()%1_000_000)
	if _, err := m.Deploy(jujusim.DeployArgs{Charm: "s3-integrator", Config: map[string]any{
		"endpoint": srv.Endpoint, "bucket": bucket, "s3-uri-style": "path",
	}}); err != nil {
		t.Fatal(err)
	}
	d.WaitUnit(t, "s3-integrator/0", "blocked", s3integrator.MissingMessage("access-key", "secret-key"))
	d.RunAction(t, "s3-integrator/leader", "sync-s3-credentials", map[string]any{"access-key": s3test.AccessKey, "secret-key": s3test.SecretKey})
	d.WaitUnit(t, "s3-integrator/0", "active", "")
	if _, err := m.Relate("livepatch:s3-credentials", "s3-integrator:s3-credentials"); err != nil {
		t.Fatal(err)
	}
	d.Config(t, "livepatch", map[string]string{"patchstore": "s3"})
	d.SetSyncSettings(t)
	d.SetURLTemplate(t)
	d.SetAdminUsers(t)
	d.Attach(t)
	d.WaitUnit(t, "livepatch/0", "blocked", fmt.Sprintf("Patch storage unusable: cannot open patch storage: s3 bucket %q does not exist at", bucket))

	if err := srv.MakeBucket(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.RemoveBucket(context.Background(), bucket) })
	m.TriggerUpdateStatus()
	d.GetResourceToken(t)
	d.WaitActive(t)
	d.WaitSynced(t)
	keys := bucketKeys(t, srv, bucket)
	if !strings.Contains(strings.Join(keys, " "), deploy.DemoPatch) {
		t.Errorf("bucket %s holds %v, want the synced %s", bucket, keys, deploy.DemoPatch)
	}
	// Synced patches land in the first tier; the administrator promotes them.
	d.Admin(t, "login", "-a", d.AdminUser+":"+d.AdminPassword)
	d.Admin(t, "patch", "promote", deploy.DemoPatch, deploy.UpstreamTier)
	machine := d.Enrol(t, deploy.MachineConfig{Tier: deploy.UpstreamTier, TrustedKey: d.Upstream.PublicKey})
	if state, version := machine.Status(t).PatchState(); state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine: patch %s %s, want %s %s", state, version, server.StateUnapplied, deploy.DemoPatch)
	}
	if files := machine.PatchFiles(t); len(files) != 1 {
		t.Errorf("machine keeps %v, want the one patch downloaded", files)
	}

	// Keys the service refuses, then the right ones again.
	const wrongSecret = "wr0ng-s3-secret-key-value"
	d.RunAction(t, "s3-integrator/leader", "sync-s3-credentials", map[string]any{"access-key": s3test.AccessKey, "secret-key": wrongSecret})
	d.WaitUnit(t, "livepatch/0", "blocked", fmt.Sprintf("refused the credentials for bucket %q", bucket))
	d.RunAction(t, "s3-integrator/leader", "sync-s3-credentials", map[string]any{"access-key": s3test.AccessKey, "secret-key": s3test.SecretKey})
	d.WaitActive(t)
	machine.Refresh(t)
	if st := machine.Status(t); st.CheckError != "" {
		t.Errorf("check-in after the keys are fixed: %s", st.CheckError)
	}

	for _, secret := range []string{s3test.SecretKey, wrongSecret} {
		for _, unit := range d.Units("livepatch") {
			if us, _ := m.Status().Unit(unit); strings.Contains(us.Workload.Message, secret) {
				t.Errorf("a secret key in the status of %s", unit)
			}
		}
		for _, e := range m.Logs() {
			if strings.HasPrefix(e.Unit, "livepatch/") && strings.Contains(e.Message, secret) {
				t.Errorf("a secret key in a log line of %s", e.Unit)
			}
		}
	}
}

// bucketKeys lists the keys of a bucket.
func bucketKeys(t *testing.T, srv *s3test.Server, bucket string) []string {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for oi := range c.ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// TestS3IntegratorSecretPatchstore is patchstore s3 through s3-integrator 2/ (the s3
// library v1): the keys are in a Juju user secret granted to s3-integrator, which creates
// the bucket and shares the keys with livepatch in a secret of its own (secret-extra), never
// in the relation data. Keys the service refuses block s3-integrator ("Could not ensure
// bucket(s)"), and livepatch waits for the credentials; the right keys (juju update-secret)
// bring both back, and a machine downloads a synced patch.
func TestS3IntegratorSecretPatchstore(t *testing.T) {
	t.Parallel()
	srv := s3test.Get(t)
	d := deploy.New(t, deploy.Options{})
	m := d.Model
	bucket := fmt.Sprintf("lp-e2e-v1-%d", m.Seed()%1_000_000)
	t.Cleanup(func() { srv.RemoveBucket(context.Background(), bucket) })
	const wrongSecret = "wr0ng-s3-secret-key-value"
	uri, err := m.AddSecret("s3-keys", "", map[string]string{"access-key": s3test.AccessKey, "secret-key": wrongSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Deploy(jujusim.DeployArgs{Charm: "s3-integrator-2", Config: map[string]any{
		"endpoint": srv.Endpoint, "bucket": bucket, "s3-uri-style": "path",
	}}); err != nil {
		t.Fatal(err)
	}
	d.WaitUnit(t, "s3-integrator/0", "blocked", s3integrator.MessageMissingCredentials)
	if err := m.GrantSecret(uri, "s3-integrator"); err != nil {
		t.Fatal(err)
	}
	d.Config(t, "s3-integrator", map[string]string{"credentials": uri})
	d.WaitUnit(t, "s3-integrator/0", "blocked", s3integrator.MessageBucketUnavailable(bucket))
	relID, err := m.Relate("livepatch:s3-credentials", "s3-integrator:s3-credentials")
	if err != nil {
		t.Fatal(err)
	}
	d.Config(t, "livepatch", map[string]string{"patchstore": "s3"})
	d.WaitUnit(t, "livepatch/0", "waiting", livepatch.MessageS3CredentialsWaiting)

	if err := m.UpdateSecret(uri, jujusim.UpdateSecretArgs{Content: map[string]string{"access-key": s3test.AccessKey, "secret-key": s3test.SecretKey}}); err != nil {
		t.Fatal(err)
	}
	d.WaitUnit(t, "s3-integrator/0", "active", "")
	d.Configure(t)
	provider, err := m.RelationData(relID, "s3-integrator")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := provider["secret-key"]; ok || provider["secret-extra"] == "" || provider["lib-version"] != "1.0" || provider["bucket"] != bucket {
		t.Errorf("s3-integrator's bag %v, want the keys in secret-extra", keys(provider))
	}
	d.Admin(t, "login", "-a", d.AdminUser+":"+d.AdminPassword)
	d.Admin(t, "patch", "promote", deploy.DemoPatch, deploy.UpstreamTier)
	machine := d.Enrol(t, deploy.MachineConfig{Tier: deploy.UpstreamTier, TrustedKey: d.Upstream.PublicKey})
	if state, version := machine.Status(t).PatchState(); state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine: patch %s %s, want %s %s", state, version, server.StateUnapplied, deploy.DemoPatch)
	}
	if ks := bucketKeys(t, srv, bucket); !strings.Contains(strings.Join(ks, " "), deploy.DemoPatch) {
		t.Errorf("bucket %s holds %v, want the synced %s", bucket, ks, deploy.DemoPatch)
	}
	for _, secret := range []string{s3test.SecretKey, wrongSecret} {
		for _, e := range m.Logs() {
			if strings.HasPrefix(e.Unit, "livepatch/") && strings.Contains(e.Message, secret) {
				t.Errorf("a secret key in a log line of %s", e.Unit)
			}
		}
	}
}
