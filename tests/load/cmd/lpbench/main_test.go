package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

func TestPick(t *testing.T) {
	w := []float64{1, 2, 1}
	for _, tc := range []struct {
		r    float64
		want int
	}{{0, 0}, {0.24, 0}, {0.25, 1}, {0.74, 1}, {0.75, 2}, {0.999, 2}} {
		if got := pick(tc.r, w); got != tc.want {
			t.Errorf("pick(%v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

func TestNewMachines(t *testing.T) {
	ms := newMachines(2000)
	ids := map[string]bool{}
	tiers := map[string]int{}
	kernels := map[string]bool{}
	for _, m := range ms {
		if ids[m.id] {
			t.Fatalf("machine id %s twice", m.id)
		}
		ids[m.id] = true
		if err := server.CheckMachineID(m.id); err != nil {
			t.Fatal(err)
		}
		var st server.Status
		if err := json.Unmarshal(m.body, &st); err != nil {
			t.Fatal(err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("machine %s: %v", m.id, err)
		}
		tiers[m.tier]++
		kernels[st.Kernel+"/"+st.Architecture] = true
	}
	if len(tiers) != len(load.FleetTiers) || tiers["stable"] < 1200 || tiers["stable"] > 1600 {
		t.Errorf("tiers %v: want all four, about 70%% stable", tiers)
	}
	if len(kernels) != len(load.FleetKernels) {
		t.Errorf("%d kernels, want %d", len(kernels), len(load.FleetKernels))
	}
	if again := newMachines(2000); again[1999].id != ms[1999].id {
		t.Error("the same n gave other machines")
	}
}

func TestCommands(t *testing.T) {
	got := commands([]string{"-size", "full", "-bin", "build/bench/bin"})
	if !strings.HasPrefix(got[0], "make bench BENCH_SIZE=full") || !strings.HasSuffix(got[3], "lpbench -size full -bin build/bench/bin") ||
		!strings.HasPrefix(got[4], "go test -count=1 -run '^$' -bench DeployBundle") {
		t.Errorf("commands = %q", got)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"-size", "quick", "-note", "it's noisy", "-pg-options", "-c synchronous_commit=off"})
	want := `-size quick -note 'it'\''s noisy' -pg-options '-c synchronous_commit=off'`
	if got != want {
		t.Errorf("shellJoin = %s, want %s", got, want)
	}
}

func TestDatabaseEvidence(t *testing.T) {
	got := databaseEvidence(walStats{}, walStats{records: 5000, bytes: 480000, syncs: 250, updates: 1000, hotUpdates: 950}, 1000,
		[]waitCount{{"idle: ClientRead", 0.6}, {"active: LWLock WALWrite", 0.395}, {"active: on CPU", 0.005}}, 15)
	for _, want := range []string{"480 WAL bytes", "5.0 WAL records", "0.25 WAL flushes", "4.0 commits share a flush", "95% of the machines updates were HOT",
		"(pool of 15)", "idle: ClientRead 60%, active: LWLock WALWrite 40%."} {
		if !strings.Contains(got, want) {
			t.Errorf("evidence lacks %q:\n%s", want, got)
		}
	}
}
