package upstream_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/httpapi"
)

// TestDownstreamReport: the administrator of an upstream sees, through its admin API, the
// downstream servers that sync from it, and the machines of the one that sends reports.
func TestDownstreamReport(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const password = "central-s3cret"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	a := newNode(t, "central", func(o *httpapi.Options) { o.BasicUsers = []string{"admin:" + string(hash)} }).start()
	eu := newNode(t, "eu").start()
	lab := newNode(t, "lab").start()
	a.upload("5.15.0-107.117", "generic", "107.1", "amd64", "stable")

	// Two machines enrolled on eu, one with the patch applied.
	if _, err := eu.db.CreateAuthToken(ctx, server.NewAuthToken{ID: "web", Tier: "stable", Hash: server.HashToken("auth")}); err != nil {
		t.Fatal(err)
	}
	machineIDs := []string{"4c4c4544003957108052b4c04f384e32", "9a3e0f7c2b6d4e18a5c1f0b2d3e4f5a6"}
	for i, id := range machineIDs {
		mt := server.HashToken("m" + id)
		if _, err := eu.db.Enable(ctx, server.Enrolment{AuthTokenHash: server.HashToken("auth"), MachineID: id, MachineTokenHash: mt}, time.Now()); err != nil {
			t.Fatal(err)
		}
		st := server.Status{Kernel: "5.15.0-107-generic", Architecture: "amd64", PatchState: server.StateApplied, PatchVersion: "107.1"}
		if i == 1 {
			st.PatchState, st.PatchVersion = server.StateNothingToApply, ""
		}
		if _, err := eu.db.CheckIn(ctx, server.CheckIn{MachineID: id, MachineTokenHash: mt, Status: st}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	euCfg := follow(a, a.syncToken("region-eu", "stable", nil), "stable")
	euCfg.ID, euCfg.MachineCount, euCfg.SendMachineReports = "eu-model-uuid", "exact", true
	wantReport(t, eu.syncer(euCfg).SyncOnce(ctx), server.SyncSuccess, 1, "")
	// lab syncs edge without reports, its machine count bucketed.
	labCfg := follow(a, a.syncToken("lab", "edge", nil), "edge")
	labCfg.ID = "lab-model-uuid"
	wantReport(t, lab.syncer(labCfg).SyncOnce(ctx), server.SyncSuccess, 1, "")

	login, err := mustClient(t, a).Login(ctx, "admin", password)
	if err != nil {
		t.Fatal(err)
	}
	cl := mustClient(t, a).WithToken(login.Token)
	deployments, err := cl.Downstreams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		ID, Via, SyncToken, Tier string
		MachineCount             int
		Reported                 int
		States                   map[string]int
	}
	var got []summary
	for _, d := range deployments {
		if d.LastSync.IsZero() || d.FirstSeen.IsZero() || d.MachineCount == nil {
			t.Errorf("deployment %s lacks its sync telemetry: %+v", d.ID, d)
			continue
		}
		if d.ReportedMachines > 0 && d.LastReport.Before(d.LastSync) {
			t.Errorf("deployment %s: last report %s before its last sync %s", d.ID, d.LastReport, d.LastSync)
		}
		got = append(got, summary{d.ID, d.Via, d.SyncToken, d.Tier, *d.MachineCount, d.ReportedMachines, d.PatchStates})
	}
	want := []summary{
		{"eu-model-uuid", server.ViaSyncToken, "region-eu", "stable", 2, 2, map[string]int{"applied": 1, "nothing-to-apply": 1}},
		{"lab-model-uuid", server.ViaSyncToken, "lab", "edge", 0, 0, map[string]int{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("downstream deployments (-want +got):\n%s", diff)
	}

	// eu's machines, under ids the central server cannot turn back into eu's.
	hashed := func(id string) string {
		mac := hmac.New(sha256.New, []byte("eu-model-uuid"))
		mac.Write([]byte(id))
		return hex.EncodeToString(mac.Sum(nil))
	}
	machines, next, err := cl.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "eu-model-uuid", PatchState: server.StateApplied})
	if err != nil {
		t.Fatal(err)
	}
	if len(machines) != 1 || machines[0].ID != hashed(machineIDs[0]) || machines[0].Tier != "stable" || machines[0].PatchVersion != "107.1" || next != "" {
		t.Errorf("eu's applied machines = %+v (next %q), want %s", machines, next, hashed(machineIDs[0]))
	}
	machines, _, err = cl.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "lab-model-uuid"})
	if err != nil || len(machines) != 0 {
		t.Errorf("lab's machines = %+v, %v; want none", machines, err)
	}
	if _, _, err := cl.DownstreamMachines(ctx, server.DownstreamMachineFilter{DeploymentID: "nosuch"}); server.ErrorCode(err) != server.CodeNotFound {
		t.Errorf("machines of an unknown deployment: %v, want not-found", err)
	}
}

// mustClient returns an API client of n.
func mustClient(t *testing.T, n *node) *client.Client {
	t.Helper()
	c, err := client.New(n.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
