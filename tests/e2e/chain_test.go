package e2e

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// syncTokenName is the name the central server's operator gives the regional server's
// sync token.
const syncTokenName = "region-eu"

// TestChain chains two deployments of the bundle, each in its own model, as README's
// "Chaining two servers" and the charm's "Serving downstream servers" have an operator do
// it with the charms: a central deployment that originates patches (uploads) and serves
// downstream servers (sync_server), and a regional one that syncs from it through the
// central haproxy with a sync token and the central key (sync_trusted_key). A machine
// enrolled at the regional server gets a patch signed by the central server and checks it
// with the central key. Then the central key is rotated (prepare, activate) with the
// regional sync going on, and the sync token is revoked: the regional sync report and
// the regional units' status say so.
func TestChain(t *testing.T) {
	if testing.Short() {
		t.Skip("deploys two bundles")
	}
	t.Parallel()

	// $ juju deploy ./bundle/bundle.yaml --overlay ./bundle/local-overlay.yaml  (central model)
	// $ juju config livepatch sync_server=true patch_sync_enabled=false url_template=... auth_basic_users=...
	// The central deployment is configured while the regional one deploys.
	central := deploy.New(t, deploy.Options{NoUpstream: true})
	central.Config(t, "livepatch", map[string]string{
		"contract_server_url": central.Contracts.URL, // emulator only: the contracts stand-in
		"patch_sync_enabled":  "false",
		"sync_server":         "true",
		"url_template":        central.URLTemplate(),
		"auth_basic_users":    deploy.Htpasswd(t, central.AdminUser, central.AdminPassword),
	})
	regional := deploy.New(t, deploy.Options{NoUpstream: true})
	central.WaitActive(t)

	// $ juju run livepatch/leader get-signing-key
	key := signingKey(t, central)
	centralKey, err := server.ParsePublicKey(key["public-key"])
	if err != nil {
		t.Fatalf("get-signing-key public-key: %v", err)
	}
	if key["trusted-keys"] != key["public-key"] || key["key-id"] != server.KeyID(centralKey) {
		t.Errorf("get-signing-key = %v, want the one key trusted", key)
	}

	// The central operator uploads patches and makes the regional server's sync token,
	// with the admin CLI through the central haproxy.
	// $ LIVEPATCH_URL=http://<central haproxy> livepatch-admin login -a admin:...
	// $ livepatch-admin sync-tokens add stable region-eu
	central.Admin(t, "login", "-a", central.AdminUser+":"+central.AdminPassword)
	originated, err := deploy.SeedPatches(t.Context(), central.AdminClient(t), deploy.DemoPatches)
	if err != nil {
		t.Fatal(err)
	}
	syncToken := strings.TrimSpace(central.Admin(t, "sync-tokens", "add", deploy.UpstreamTier, syncTokenName))
	if syncToken == "" || strings.ContainsAny(syncToken, " \n") {
		t.Fatalf("sync-tokens add printed %q, want the token alone", syncToken)
	}

	// $ juju config livepatch sync_upstream=http://<central haproxy> sync_token=<token> \
	//       sync_upstream_tier=stable sync_trusted_key=<trusted-keys> sync_tier=stable url_template=... auth_basic_users=...
	regional.Config(t, "livepatch", map[string]string{
		"contract_server_url": regional.Contracts.URL,
		"sync_upstream":       central.URL,
		"sync_token":          syncToken,
		"sync_upstream_tier":  deploy.UpstreamTier,
		"sync_trusted_key":    key["trusted-keys"],
		"sync_tier":           deploy.UpstreamTier,
		"url_template":        regional.URLTemplate(),
		"auth_basic_users":    deploy.Htpasswd(t, regional.AdminUser, regional.AdminPassword),
	})
	regional.WaitActive(t)
	if got, want := unitMessage(t, regional, "livepatch/0"), livepatch.MessageActive+"; syncing from "+central.HAProxyAddress; got != want {
		t.Errorf("regional livepatch/0: %q, want %q", got, want)
	}
	regional.TriggerSync(t)
	wantRegionalPatches(t, regional, originated)
	if st, err := regional.AdminClient(t).SyncStatus(t.Context()); err != nil || len(st.Warnings) > 0 {
		t.Errorf("regional sync status: %v, warnings %v; want none with sync_trusted_key set", err, st.Warnings)
	}
	// The central server lists the regional one among its downstreams.
	if out := central.Admin(t, "report", "downstream"); !strings.Contains(out, syncTokenName) {
		t.Errorf("central report downstream:\n%s\nwant %s", out, syncTokenName)
	}

	// A machine at the regional server trusts the central key alone: the patch it gets
	// carries the central server's origin signature, passed on by the regional server.
	m := regional.Enrol(t, deploy.MachineConfig{Tier: deploy.UpstreamTier, TrustedKey: key["public-key"]})
	wantVerifiedPatch(t, m, centralKey, originated)

	if !t.Run("rotate-signing-key", func(t *testing.T) { testChainRotation(t, central, regional, m, key, originated) }) {
		t.FailNow()
	}
	t.Run("revoke", func(t *testing.T) { testChainRevoke(t, central, regional, m) })
}

// testChainRotation rotates the central signing key, prepare then activate, and checks
// that the regional server syncs at each step and that the machine, trusting what
// get-signing-key lists, keeps getting its patch.
func testChainRotation(t *testing.T, central, regional *deploy.Deployment, m *deploy.Machine, old map[string]string, originated []server.Patch) {
	// $ juju run livepatch/leader rotate-signing-key step=prepare
	prepared := rotate(t, central, "prepare")
	next, err := server.ParsePublicKey(prepared["next-key"])
	if err != nil {
		t.Fatalf("rotate-signing-key step=prepare next-key: %v", err)
	}
	if prepared["public-key"] != old["public-key"] || prepared["trusted-keys"] != old["public-key"]+","+prepared["next-key"] {
		t.Errorf("after prepare: %v; want the old key signing and both trusted", prepared)
	}
	// The prepared key does not sign yet: the regional server, trusting the old key
	// alone, syncs as before.
	regional.TriggerSync(t)

	// $ juju config livepatch sync_trusted_key=<trusted-keys>   (regional model)
	// $ livepatch-client config trusted-key=<trusted-keys>
	regional.Config(t, "livepatch", map[string]string{"sync_trusted_key": prepared["trusted-keys"]})
	regional.WaitActive(t)
	m.Client(t, "config", "trusted-key="+prepared["trusted-keys"])

	// $ juju run livepatch/leader rotate-signing-key step=activate
	activated := rotate(t, central, "activate")
	central.WaitActive(t)
	if activated["public-key"] != prepared["next-key"] || !slices.Contains(strings.Split(activated["trusted-keys"], ","), old["public-key"]) ||
		activated["retired-keys"] != old["public-key"] {
		t.Errorf("after activate: %v; want the new key signing and the old one retired, still trusted", activated)
	}
	if got := signingKey(t, central); got["public-key"] != prepared["next-key"] || got["trusted-keys"] != activated["trusted-keys"] {
		t.Errorf("get-signing-key after activate = %v, want %v", got, activated)
	}
	// The central server signs its list and patches with the new key; the regional server,
	// trusting both, syncs and records the new signatures; the machine checks them.
	regional.TriggerSync(t)
	wantRegionalPatches(t, regional, originated)
	// The regional server's catalog picks the new signatures up within its refresh
	// interval (httpapi.Options.CatalogRefresh): check in until the offer carries them.
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	if err := pollUntil(ctx, func() bool {
		m.Refresh(t)
		return offerKeyID(t, m) == server.KeyID(next)
	}); err != nil {
		t.Fatalf("the machine is still offered the patch signed by key %s, want %s: %v", offerKeyID(t, m), server.KeyID(next), err)
	}
	wantVerifiedPatch(t, m, next, originated)
}

// offerKeyID returns the key id of the signature of the machine's last offer.
func offerKeyID(t *testing.T, m *deploy.Machine) string {
	t.Helper()
	var st struct {
		Offered *server.PatchOffer `json:"offered"`
	}
	readJSON(t, filepath.Join(m.StateDir, "state.json"), &st)
	if st.Offered == nil || st.Offered.Signature == nil {
		return ""
	}
	return st.Offered.Signature.KeyID
}

// testChainRevoke revokes the regional server's sync token on the central server and
// checks what the regional operator sees: a failed sync saying why, in the sync trigger,
// the sync reports and the units' status; the machine keeps its patch.
func testChainRevoke(t *testing.T, central, regional *deploy.Deployment, m *deploy.Machine) {
	// $ livepatch-admin sync-tokens revoke region-eu   (central)
	central.Admin(t, "sync-tokens", "revoke", syncTokenName)
	if out := central.Admin(t, "sync-tokens", "list"); !hasRow(out, syncTokenName, "revoked") {
		t.Errorf("central sync-tokens list:\n%s\nwant %s revoked", out, syncTokenName)
	}
	revoked := `sync token "` + syncTokenName + `" has been revoked`

	// $ livepatch-admin sync trigger --wait   (regional): exit 1 with the reason
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	regional.Admin(t, "login", "-a", regional.AdminUser+":"+regional.AdminPassword)
	stdout, stderr, err := regional.RunAdmin(ctx, "sync", "trigger", "--wait")
	wantErr := "refused patch-sync.token: 401 " + revoked + ": ask the upstream's administrator for a new one"
	if !deploy.IsExit(err, 1) || !strings.Contains(stderr, "sync failed on ") || !strings.Contains(stderr, wantErr) {
		t.Errorf("regional sync trigger --wait: %v\n%s%s\nwant exit 1 saying %q", err, stdout, stderr, wantErr)
	}
	// $ livepatch-admin sync reports
	if out := regional.Admin(t, "sync", "reports", "--limit", "1"); !hasRow(out, "failed", wantErr) {
		t.Errorf("regional sync reports:\n%s\nwant the last run failed: %s", out, wantErr)
	}

	// $ juju status   (regional, after update-status): Blocked with the reason.
	regional.Model.TriggerUpdateStatus()
	wantStatus := livepatch.MessageSyncFailedPrefix + "the upstream at " + central.URL + " " + wantErr
	regional.WaitIdle(t, func(st *jujusim.Status) bool {
		return deploy.AllUnits(st, "livepatch", func(u jujusim.UnitStatus) bool {
			return u.Workload.Current == "blocked" && u.Workload.Message == wantStatus
		})
	})

	// The regional server keeps serving what it synced.
	m.Refresh(t)
	if state, version := m.Status(t).PatchState(); state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine after the revocation: %s %s, want %s %s", state, version, server.StateUnapplied, deploy.DemoPatch)
	}

	// A new token under the same name: the regional units sync again and are Active at
	// the next update-status.
	// $ livepatch-admin sync-tokens add stable region-eu   (central)
	// $ juju config livepatch sync_token=<the new token>   (regional)
	token := strings.TrimSpace(central.Admin(t, "sync-tokens", "add", deploy.UpstreamTier, syncTokenName))
	regional.Config(t, "livepatch", map[string]string{"sync_token": token})
	regional.WaitActive(t)
	regional.TriggerSync(t)
	regional.Model.TriggerUpdateStatus()
	regional.WaitActive(t)
}

// signingKey runs get-signing-key on the leader and returns its results.
func signingKey(t *testing.T, d *deploy.Deployment) map[string]string {
	t.Helper()
	return actionStrings(t, d.RunAction(t, "livepatch/leader", "get-signing-key", nil))
}

// rotate runs one step of rotate-signing-key on the leader and returns its results.
func rotate(t *testing.T, d *deploy.Deployment, step string) map[string]string {
	t.Helper()
	return actionStrings(t, d.RunAction(t, "livepatch/leader", "rotate-signing-key", map[string]any{"step": step}))
}

// actionStrings returns an action's results, checking that none is a private key.
func actionStrings(t *testing.T, res jujusim.ActionResult) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range res.Results {
		s, _ := v.(string)
		if strings.Contains(s, "PRIVATE KEY") {
			t.Errorf("action %s printed a private key in %s", res.Name, k)
		}
		out[k] = s
	}
	return out
}

// wantRegionalPatches checks that the regional server holds the central stable tier's
// patches, byte for byte, synced into its stable tier, and nothing else.
func wantRegionalPatches(t *testing.T, regional *deploy.Deployment, originated []server.Patch) {
	t.Helper()
	patches, err := regional.AdminClient(t).Patches(t.Context(), server.PatchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, p := range patches {
		got = append(got, p.Filename+" "+p.SHA256+" "+p.Source+" "+p.Tier)
	}
	for _, p := range originated {
		if p.Tier == deploy.UpstreamTier {
			want = append(want, p.Filename+" "+p.SHA256+" sync "+deploy.UpstreamTier)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("regional patches:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// wantVerifiedPatch checks that the machine got DemoPatch, verified, with an origin
// signature by key of the central server's file.
func wantVerifiedPatch(t *testing.T, m *deploy.Machine, key ed25519.PublicKey, originated []server.Patch) {
	t.Helper()
	ms := m.Status(t)
	if state, version := ms.PatchState(); ms.CheckError != "" || state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Fatalf("machine status: check error %q, patch %s %s; want %s %s (mode no-apply)", ms.CheckError, state, version, server.StateUnapplied, deploy.DemoPatch)
	}
	var offered struct {
		Offered *server.PatchOffer `json:"offered"`
	}
	readJSON(t, filepath.Join(m.StateDir, "state.json"), &offered)
	var file server.Patch
	for _, p := range originated {
		if p.Version == deploy.DemoPatch && p.Flavour == "generic" {
			file = p
		}
	}
	o := offered.Offered
	if o == nil || o.Filename != file.Filename || o.SHA256 != file.SHA256 {
		t.Fatalf("offer %+v, want the central server's %s sha256 %s", o, file.Filename, file.SHA256)
	}
	if err := server.VerifyPatch(key, o.Signature, file.Filename, file.SHA256, file.Size); err != nil {
		t.Errorf("the offer's origin signature, by the central key %s: %v", server.KeyID(key), err)
	}
	if files := m.PatchFiles(t); len(files) != 1 {
		t.Errorf("machine keeps patch files %v, want one", files)
	}
}

// unitMessage returns a unit's workload status message.
func unitMessage(t *testing.T, d *deploy.Deployment, unit string) string {
	t.Helper()
	u, ok := d.Model.Status().Unit(unit)
	if !ok {
		t.Fatalf("no unit %s", unit)
	}
	return u.Workload.Message
}

// hasRow reports whether a table printed by livepatch-admin has a line holding every cell.
func hasRow(table string, cells ...string) bool {
	for line := range strings.Lines(table) {
		if !slices.ContainsFunc(cells, func(c string) bool { return !strings.Contains(line, c) }) {
			return true
		}
	}
	return false
}
