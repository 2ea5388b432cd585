package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/e2e/deploy"
	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func TestMain(m *testing.M) { deploy.Main(m) }

// migrationTag builds the server of the newer charm revision with one more migration
// (server/postgres/migrations_e2e.go).
const migrationTag = "e2emigration"

// TestDeployment walks one deployment through the deployment guide, a scale-out and a
// rolling upgrade, in that order: each scenario starts from the state the previous one
// left, as an operator's deployment lives on.
func TestDeployment(t *testing.T) {
	t.Parallel()
	deploy.CheckRequirements(t) // before the build starts: under -short, nothing is built
	// The newer charm revision compiles while the guide runs.
	go deploy.PrebuildLivepatchCharm(migrationTag)
	d := deploy.New(t, deploy.Options{})
	var m *deploy.Machine
	if !t.Run("guide", func(t *testing.T) { m = testGuide(t, d) }) {
		t.FailNow()
	}
	if !t.Run("scale-out", func(t *testing.T) { testScaleOut(t, d) }) {
		t.FailNow()
	}
	t.Run("rolling-upgrade", func(t *testing.T) { testRollingUpgrade(t, d, m) })
}

// testGuide follows Canonical's on-prem deployment guide (as bundle/README.md retells it),
// step by step, on a freshly deployed bundle, and returns the machine it enabled.
func testGuide(t *testing.T, d *deploy.Deployment) *deploy.Machine {
	// $ juju deploy ./bundle/bundle.yaml --overlay ./bundle/local-overlay.yaml
	// "The livepatch application will initially be in blocked state."
	st := d.Model.Status()
	wantUnit(t, st, "livepatch/0", "blocked", deploy.MessageURLTemplateNotSet)
	wantUnit(t, st, "ubuntu-advantage/0", "blocked", "No token configured")
	wantUnit(t, st, "haproxy/0", "active", "")
	wantUnit(t, st, "postgresql/0", "active", "")

	// What the emulator needs beyond the guide: the contracts stand-in and the upstream
	// instead of Canonical's services. It does not unblock anything.
	d.SetSyncSettings(t)
	d.WaitUnit(t, "livepatch/0", "blocked", deploy.MessageURLTemplateNotSet)

	// $ juju configure livepatch url_template='http://{haproxy}/patches/{filename}'
	// The leader initialises the database and starts the server, which serves at once
	// through haproxy; it waits for a sync token.
	d.SetURLTemplate(t)
	d.WaitUnit(t, "livepatch/0", "blocked", deploy.MessageSyncTokenNotSet)
	d.WaitServing(t)
	if code, body := deploy.Get(t, d.URL+"/"); code != http.StatusOK || !strings.HasPrefix(body, "Canonical Livepatch on-prem server") {
		t.Errorf("GET %s/ = %d %q, want the banner through haproxy", d.URL, code, body)
	}

	// $ htpasswd -bnBC 10 <username> <password>
	// $ juju config livepatch auth_basic_users='<OUTPUT>'
	d.SetAdminUsers(t)
	cfg, err := d.Model.Config("livepatch")
	if err != nil {
		t.Fatal(err)
	}
	if users, _ := cfg["auth_basic_users"].(string); !strings.HasPrefix(users, d.AdminUser+":$2y$10$") {
		t.Errorf("auth_basic_users = %q, want htpasswd -B output", users)
	}

	// $ juju configure ubuntu-advantage token=<token>
	// (wait for the ubuntu-advantage applications to reach state 'Attached')
	d.Attach(t)
	st = d.Model.Status()
	if u, _ := st.Unit("ubuntu-advantage/0"); !strings.Contains(u.Workload.Message, "livepatch") {
		t.Errorf("ubuntu-advantage/0: %q, want the livepatch service among those attached", u.Workload.Message)
	}

	// $ juju run-action livepatch get-resource-token --wait
	res := d.GetResourceToken(t)
	token := resourceToken(t, d.Model)
	if !d.Contracts.ValidResourceToken("livepatch-onprem", token) {
		t.Errorf("the units share a resource token the contracts server did not issue for livepatch-onprem")
	}
	if out := fmt.Sprint(res.Results, res.Stdout, res.Stderr, res.Log); strings.Contains(out, token) {
		t.Errorf("get-resource-token printed the resource token: %s", out)
	}
	d.WaitActive(t)
	for _, e := range d.Model.Logs() {
		if strings.Contains(e.Message, token) {
			t.Errorf("the debug log shows the resource token: %s", e)
		}
	}

	// Patches sync from the upstream: those of its stable tier, byte for byte, not the
	// beta one.
	patches := d.WaitSynced(t)
	var got, want []string
	for _, p := range patches {
		got = append(got, fmt.Sprintf("%s sha256:%s source:%s tier:%s", p.Filename, p.SHA256, p.Source, p.Tier))
	}
	for _, p := range d.Upstream.Patches {
		if p.Tier == deploy.UpstreamTier {
			want = append(want, fmt.Sprintf("%s sha256:%s source:sync tier:edge", p.Filename, p.SHA256))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("synced patches (-upstream stable tier +downstream):\n%s", diff)
	}
	sync, err := d.AdminClient(t).SyncStatus(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !d.HasOption(t, "livepatch", "sync_trusted_key") {
		t.Logf("the livepatch charm has no sync_trusted_key option: the upstream's signatures are not verified (%v)", sync.Warnings)
	} else if len(sync.Warnings) > 0 {
		t.Errorf("sync warnings with sync_trusted_key set: %v", sync.Warnings)
	}

	// $ LIVEPATCH_URL='http://{haproxy ip}' livepatch-admin login -a username:password
	out := d.Admin(t, "login", "-a", d.AdminUser+":"+d.AdminPassword)
	if !strings.HasPrefix(out, "Logged in as "+d.AdminUser) {
		t.Errorf("livepatch-admin login: %q", out)
	}
	// Synced patches land in the first tier; the administrator promotes them.
	d.Admin(t, "patch", "promote", deploy.DemoPatch, "stable")

	// $ LIVEPATCH_URL='http://{haproxy ip}' livepatch-admin auth-token <id> <tier>
	authToken := strings.TrimSpace(d.Admin(t, "auth-token", "web-servers", "stable"))
	if authToken == "" || strings.ContainsAny(authToken, " \n") {
		t.Fatalf("livepatch-admin auth-token printed %q, want the token alone", authToken)
	}

	// $ sudo canonical-livepatch config remote-server=<haproxy>
	// $ sudo canonical-livepatch enable <token>
	m := d.Enrol(t, deploy.MachineConfig{Tier: "stable", Token: authToken, TrustedKey: d.Upstream.PublicKey})
	ms := m.Status(t)
	state, version := ms.PatchState()
	if ms.Server != d.URL || ms.Tier != "stable" || ms.CheckError != "" || state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine status: server %s, tier %s, check error %q, patch %s %s; want %s, stable, no error, %s %s (mode no-apply)",
			ms.Server, ms.Tier, ms.CheckError, state, version, d.URL, server.StateUnapplied, deploy.DemoPatch)
	}
	// It received the upstream's file, through haproxy, and verified it.
	var offered struct {
		Offered *server.PatchOffer `json:"offered"`
	}
	readJSON(t, filepath.Join(m.StateDir, "state.json"), &offered)
	var upstream server.Patch
	for _, p := range d.Upstream.Patches {
		if p.Version == deploy.DemoPatch && p.Flavour == "generic" {
			upstream = p
		}
	}
	if offered.Offered == nil || offered.Offered.Filename != upstream.Filename || offered.Offered.SHA256 != upstream.SHA256 ||
		!strings.HasPrefix(offered.Offered.URL, d.URL+"/v1/patches/") {
		t.Errorf("offer %+v, want %s sha256 %s from %s/v1/patches/", offered.Offered, upstream.Filename, upstream.SHA256, d.URL)
	}
	files := m.PatchFiles(t)
	if len(files) != 1 {
		t.Fatalf("machine keeps patch files %v, want one", files)
	}
	data, err := os.ReadFile(filepath.Join(m.StateDir, "patches", files[0]))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != upstream.SHA256 {
		t.Errorf("the machine's patch file has sha256 %x, want the upstream's %s", sum, upstream.SHA256)
	}
	// The administrator sees the machine.
	var machines []server.Machine
	if err := json.Unmarshal([]byte(d.Admin(t, "report", "machines", "stable", "--format", "json")), &machines); err != nil {
		t.Fatal(err)
	}
	if len(machines) != 1 || machines[0].ID != m.ID || machines[0].PatchState != server.StateUnapplied {
		t.Errorf("report machines stable = %+v, want %s unapplied", machines, m.ID)
	}
	// By the hostname the client reported through haproxy (this host's).
	if host, err := os.ReadFile("/proc/sys/kernel/hostname"); err == nil {
		name := strings.TrimSpace(string(host))
		if len(machines) == 1 && machines[0].Hostname != name {
			t.Errorf("report machines: hostname %q, want this host's %q", machines[0].Hostname, name)
		}
		if out := d.Admin(t, "report", "machines", "--hostname", name); !strings.Contains(out, m.ID) {
			t.Errorf("report machines --hostname %s:\n%s", name, out)
		}
	}
	if out := d.Admin(t, "machine", "show", m.ID); !strings.Contains(out, "\nhistory:\n") || !strings.Contains(out, " enable ") {
		t.Errorf("machine show %s:\n%s", m.ID, out)
	}

	// The offer carried the upstream's own signature of the file, passed on by the on-prem
	// server, which the client checked against its trusted key. A machine trusting another
	// key refuses the same patch, before downloading it.
	upstreamKey, err := server.ParsePublicKey(d.Upstream.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.VerifyPatch(upstreamKey, offered.Offered.Signature, upstream.Filename, upstream.SHA256, upstream.Size); err != nil {
		t.Errorf("the offer's signature: %v", err)
	}
	otherPub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	wary := d.Enrol(t, deploy.MachineConfig{Tier: "stable", Token: authToken, TrustedKey: server.MarshalPublicKey(otherPub)})
	ws := wary.Status(t)
	state, _ = ws.PatchState()
	wantReason := "patch " + deploy.DemoPatch + " failed verification: bad signature: the patch is signed by key " +
		server.KeyID(upstreamKey) + ", not by the trusted key " + server.KeyID(otherPub)
	if state != server.StateCheckFailed || len(ws.Status) == 0 || ws.Status[0].Livepatch.Reason != wantReason || len(wary.PatchFiles(t)) != 0 {
		t.Errorf("machine trusting another key: state %s, status %+v, files %v; want check-failed: %s", state, ws.Status, wary.PatchFiles(t), wantReason)
	}
	wary.Client(t, "disable")
	return m
}

// testScaleOut adds two units, checks that haproxy sends check-ins to all three, and
// removes one under a stream of check-ins without losing any.
func testScaleOut(t *testing.T, d *deploy.Deployment) {
	ctx, cancel := context.WithTimeout(t.Context(), deploy.Timeout)
	defer cancel()
	stream := d.StartCheckIns(t, ctx, 20, 40)

	// $ juju add-unit livepatch -n 2
	if _, err := d.Model.AddUnit("livepatch", 2); err != nil {
		t.Fatal(err)
	}
	active := d.ActiveMessage(t)
	d.WaitIdle(t, func(st *jujusim.Status) bool {
		return len(st.UnitNames("livepatch")) == 3 && deploy.AllUnits(st, "livepatch", func(u jujusim.UnitStatus) bool {
			return u.Workload.Current == "active" && u.Workload.Message == active
		})
	})
	units := d.Units("livepatch")
	// Every unit serves a share of the check-ins: its own counter grows.
	base := map[string]float64{}
	for _, u := range units {
		base[u] = d.UnitMetric(t, u, "livepatch_server_checkins_total")
	}
	err := pollUntil(ctx, func() bool {
		for _, u := range units {
			if d.UnitMetric(t, u, "livepatch_server_checkins_total") <= base[u] {
				return false
			}
		}
		return true
	})
	if err == nil {
		// A while longer, to see the shares.
		err = stream.WaitEnded(ctx, stream.Stats().Sent+80)
	}
	served := map[string]float64{}
	for _, u := range units {
		served[u] = d.UnitMetric(t, u, "livepatch_server_checkins_total") - base[u]
	}
	if err != nil {
		t.Fatalf("haproxy does not balance over every unit: check-ins per unit since scale-out %v (%v)", served, err)
	}
	t.Logf("check-ins per unit since scale-out: %v", served)

	// $ juju remove-unit <the unit that served the most>, under the stream.
	busiest := units[0]
	for _, u := range units {
		if served[u] > served[busiest] {
			busiest = u
		}
	}
	before := stream.Stats()
	if err := d.Model.RemoveUnit(busiest); err != nil {
		t.Fatal(err)
	}
	d.WaitIdle(t, func(st *jujusim.Status) bool { return len(st.UnitNames("livepatch")) == 2 })
	// Keep going for a while on the two units left.
	if err := stream.WaitEnded(ctx, stream.Stats().Sent+80); err != nil {
		t.Fatal(err)
	}
	final := stream.Stop()
	t.Logf("check-ins: %v (%d during the removal of %s)", final, final.Sent-before.Sent, busiest)
	if final.Failed > 0 || final.Succeeded != final.Sent {
		t.Errorf("check-ins lost: %v\n%s", final, strings.Join(final.Errors, "\n"))
	}
	// When the leader was the unit removed, nobody leads until its lease lapses (up to a
	// minute); then one of the two units left is elected and the model settles.
	t.Logf("leader after the removal: %s", d.WaitLeader(t, "livepatch"))
}

// testRollingUpgrade upgrades the charm to a revision whose server has one more
// migration: the leader asks for schema-upgrade, the old servers keep serving, and after
// the action every unit runs the new server on the upgraded schema with nothing lost.
func testRollingUpgrade(t *testing.T, d *deploy.Deployment, m *deploy.Machine) {
	// Some more state to keep: a tier of our own, a blocked patch, a token, machines.
	d.Admin(t, "tier", "add", "qa", "--after", "beta")
	d.Admin(t, "patch", "block", "45.1", "--reason", "breaks nfs")
	d.EnrolMachine(t, "qa")
	before := d.Inventory(t)
	if len(before.Machines) < 2 || len(before.Patches) == 0 || len(before.Tokens) < 2 {
		t.Fatalf("too little state to check the upgrade with: %+v", before)
	}
	oldVersion := serverVersion(t, d.URL)
	v := schemaVersion(t, d)

	charm := deploy.BuildLivepatchCharm(t, migrationTag)
	// $ juju upgrade-charm livepatch (refresh --path)
	if err := d.Model.Upgrade("livepatch", charm); err != nil {
		t.Fatal(err)
	}
	// The leader asks for the schema upgrade; the other units wait for it, serving.
	leader := d.WaitLeader(t, "livepatch")
	d.WaitUnit(t, leader, "blocked", deploy.MessageSchemaUpgrade)
	for _, u := range d.Units("livepatch") {
		if st, _ := d.Model.Status().Unit(u); u != leader {
			if st.Workload.Current == "error" || st.Workload.Current == "blocked" {
				t.Errorf("%s: %s %q, want it waiting for the leader's schema upgrade", u, st.Workload.Current, st.Workload.Message)
			}
			t.Logf("%s before schema-upgrade: %s %q", u, st.Workload.Current, st.Workload.Message)
		}
	}
	// The old servers keep serving meanwhile.
	if got := serverVersion(t, d.URL); got != oldVersion {
		t.Errorf("before schema-upgrade haproxy serves version %q, want the old %q", got, oldVersion)
	}
	m.Refresh(t)

	// $ juju run-action livepatch/leader schema-upgrade
	res := d.RunAction(t, "livepatch/leader", "schema-upgrade", nil)
	if res.Results["from-version"] != fmt.Sprint(v.Current) || res.Results["to-version"] != fmt.Sprint(v.Latest+1) {
		t.Errorf("schema-upgrade results %v, want from %d to %d", res.Results, v.Current, v.Latest+1)
	}
	d.WaitActive(t)
	for _, u := range d.Units("livepatch") {
		got := serverVersion(t, d.UnitURL(t, u))
		if !strings.HasSuffix(got, "+"+migrationTag) {
			t.Errorf("%s runs version %q, want the new revision's (+%s)", u, got, migrationTag)
		}
	}
	after := schemaVersion(t, d)
	if after.Current != v.Latest+1 || after.Latest != v.Latest+1 {
		t.Errorf("schema after upgrade %+v, want current = latest = %d", after, v.Latest+1)
	}
	if diff := cmp.Diff(before, d.Inventory(t)); diff != "" {
		t.Errorf("state changed across the upgrade (-before +after):\n%s", diff)
	}
	// Machines enrolled before keep checking in and keep their patch.
	m.Refresh(t)
	if state, version := m.Status(t).PatchState(); state != server.StateUnapplied || version != deploy.DemoPatch {
		t.Errorf("machine after upgrade: %s %s, want %s %s", state, version, server.StateUnapplied, deploy.DemoPatch)
	}
}

// schema is the result of the schema-version action.
type schema struct{ Current, Latest int }

func schemaVersion(t *testing.T, d *deploy.Deployment) schema {
	t.Helper()
	res := d.RunAction(t, "livepatch/leader", "schema-version", nil)
	var s schema
	if _, err := fmt.Sscan(fmt.Sprint(res.Results["current"], " ", res.Results["latest"]), &s.Current, &s.Latest); err != nil {
		t.Fatalf("schema-version results %v: %v", res.Results, err)
	}
	return s
}

// serverVersion returns the version a server (or haproxy) reports at /debug/info.
func serverVersion(t *testing.T, base string) string {
	t.Helper()
	code, body := deploy.Get(t, base+"/debug/info")
	var info struct {
		Version string `json:"version"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &info) != nil {
		t.Fatalf("GET %s/debug/info: %d %s", base, code, body)
	}
	return info.Version
}

// resourceToken returns the resource token the leader shares on the peer relation.
func resourceToken(t *testing.T, model *jujusim.Model) string {
	t.Helper()
	for _, r := range model.Status().Relations {
		if r.Type == "peer" && r.Provider == "livepatch:"+livepatch.PeerEndpoint {
			data, err := model.RelationData(r.ID, "livepatch")
			if err != nil {
				t.Fatal(err)
			}
			if tok := data[livepatch.PeerResourceToken]; tok != "" {
				return tok
			}
		}
	}
	t.Fatal("no resource token on the livepatch peer relation")
	return ""
}

// wantUnit checks a unit's workload status and that its message contains msg.
func wantUnit(t *testing.T, st *jujusim.Status, unit, status, msg string) {
	t.Helper()
	u, ok := st.Unit(unit)
	if !ok {
		t.Errorf("no unit %s", unit)
		return
	}
	if u.Workload.Current != status || !strings.Contains(u.Workload.Message, msg) {
		t.Errorf("%s: %s %q, want %s %q", unit, u.Workload.Current, u.Workload.Message, status, msg)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// pollUntil checks cond every 100ms until it holds or ctx ends; for what announces no
// change (counters of other processes).
func pollUntil(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
