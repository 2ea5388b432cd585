package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Machine is a machine enrolled with the built livepatch-client: its own state directory,
// mode no-apply (it downloads and verifies patches, never loads them), its own machine id
// and kernel.
type Machine struct {
	// ID is its machine id; Kernel its running kernel (uname -r form).
	ID, Kernel string
	// StateDir is the client's --state-dir.
	StateDir string
	// Tier is the tier it enrolled in.
	Tier string

	bin string
}

// MachineConfig says how to enrol a machine; zero fields take defaults.
type MachineConfig struct {
	// Tier is the tier of the auth token created when Token is empty; default "stable".
	Tier string
	// Token is the auth token to enable with; default Deployment.AuthToken(Tier).
	Token string
	// Kernel is the kernel to report; default DemoKernel.
	Kernel string
	// TrustedKey is set as the client's trusted-key when not empty.
	TrustedKey string
}

// EnrolMachine enrols a new machine in tier through haproxy with the built livepatch-client
// (config remote-server=<haproxy> mode=no-apply machine-id=... kernel=DemoKernel, and
// ca-certs=<CACert> over https, then enable <token>) and returns it. enable makes a first
// check at once.
func (d *Deployment) EnrolMachine(t testing.TB, tier string) *Machine {
	t.Helper()
	return d.Enrol(t, MachineConfig{Tier: tier})
}

// Enrol enrols a new machine as cfg says.
func (d *Deployment) Enrol(t testing.TB, cfg MachineConfig) *Machine {
	t.Helper()
	if cfg.Tier == "" {
		cfg.Tier = UpstreamTier
	}
	if cfg.Kernel == "" {
		cfg.Kernel = DemoKernel
	}
	if cfg.Token == "" {
		cfg.Token = d.AuthToken(t, cfg.Tier)
	}
	d.mu.Lock()
	d.nextMac++
	n := d.nextMac
	d.mu.Unlock()
	m := &Machine{
		ID:       fmt.Sprintf("e2e%05d%s", n, randomHex(12)),
		Kernel:   cfg.Kernel,
		StateDir: filepath.Join(d.Dir, "machines", strconv.Itoa(n)),
		Tier:     cfg.Tier,
		bin:      d.Bin.Client,
	}
	if err := os.MkdirAll(m.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"config", "remote-server=" + d.URL, "mode=no-apply", "machine-id=" + m.ID, "kernel=" + m.Kernel}
	if cfg.TrustedKey != "" {
		args = append(args, "trusted-key="+cfg.TrustedKey)
	}
	if d.CACert != nil {
		args = append(args, "ca-certs="+string(d.CACert))
	}
	m.Client(t, args...)
	m.Client(t, "enable", cfg.Token)
	return m
}

// RunClient runs livepatch-client --state-dir <StateDir> with args.
func (m *Machine) RunClient(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, m.bin, append([]string{"--state-dir", m.StateDir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// Client runs livepatch-client and returns its standard output, failing the test when it
// exits non-zero.
func (m *Machine) Client(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	stdout, stderr, err := m.RunClient(ctx, args...)
	if err != nil {
		t.Fatalf("livepatch-client %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// Refresh checks in now (livepatch-client refresh).
func (m *Machine) Refresh(t testing.TB) string {
	t.Helper()
	return m.Client(t, "refresh")
}

// MachineStatus is what `livepatch-client status --format json` says about a machine, the
// fields tests look at.
type MachineStatus struct {
	Server     string `json:"Server"`
	Tier       string `json:"tier"`
	MachineID  string `json:"Machine-Id"`
	CheckError string `json:"Check-Error"`
	Status     []struct {
		Kernel    string `json:"Kernel"`
		Livepatch struct {
			CheckState     string `json:"CheckState"`
			State          string `json:"State"`
			Version        string `json:"Version"`
			WaitingVersion string `json:"WaitingVersion"`
			Reason         string `json:"Reason"`
			Fixes          []struct {
				Name string `json:"Name"`
			} `json:"Fixes"`
		} `json:"Livepatch"`
	} `json:"Status"`
}

// PatchState returns the patch state and the version applied or waiting (mode no-apply
// downloads and verifies, so a received patch is "unapplied" and waiting).
func (s MachineStatus) PatchState() (state, version string) {
	if len(s.Status) == 0 {
		return "", ""
	}
	lp := s.Status[0].Livepatch
	return lp.State, lp.Version + lp.WaitingVersion
}

// Status returns the machine's status.
func (m *Machine) Status(t testing.TB) MachineStatus {
	t.Helper()
	out := m.Client(t, "status", "--format", "json")
	var s MachineStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("cannot parse livepatch-client status: %v\n%s", err, out)
	}
	return s
}

// PatchFiles returns the names of the verified patch archives the machine keeps.
func (m *Machine) PatchFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(m.StateDir, "patches"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
