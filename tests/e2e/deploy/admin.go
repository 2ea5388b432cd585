package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// Client returns an API client of the deployment through haproxy, not logged in,
// trusting CACert when set.
func (d *Deployment) Client(t testing.TB) *client.Client {
	t.Helper()
	var opts []client.Option
	if d.CACert != nil {
		opts = append(opts, client.WithCACert(d.CACert))
	}
	c, err := client.New(d.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// AdminClient returns a client of the admin API through haproxy, logged in as AdminUser
// (once per deployment; the session is reused).
func (d *Deployment) AdminClient(t testing.TB) *client.Client {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.admin != nil {
		return d.admin
	}
	c := d.Client(t)
	login, err := c.Login(t.Context(), d.AdminUser, d.AdminPassword)
	if err != nil {
		t.Fatalf("cannot log in to %s as %s: %v", d.URL, d.AdminUser, err)
	}
	d.admin = c.WithToken(login.Token)
	return d.admin
}

// AdminEnv is the environment the deployment's livepatch-admin runs with: LIVEPATCH_URL
// (haproxy, as the guide sets it), LIVEPATCH_CA_CRT (CACert's PEM, when set) and a
// session directory of its own.
func (d *Deployment) AdminEnv() []string {
	env := []string{"LIVEPATCH_URL=" + d.URL, "LIVEPATCH_ADMIN_CONFIG_DIR=" + filepath.Join(d.Dir, "admin")}
	if d.CACert != nil {
		env = append(env, "LIVEPATCH_CA_CRT="+string(d.CACert))
	}
	return env
}

// RunAdmin runs the built livepatch-admin with AdminEnv and returns its output; err is
// an *exec.ExitError when it exits non-zero.
func (d *Deployment) RunAdmin(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, d.Bin.Admin, args...)
	cmd.Env = environ(d.AdminEnv()...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// Admin runs livepatch-admin and returns its standard output, failing the test when it
// exits non-zero.
func (d *Deployment) Admin(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	stdout, stderr, err := d.RunAdmin(ctx, args...)
	if err != nil {
		t.Fatalf("livepatch-admin %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// WaitSynced waits until the deployment recorded every patch of the upstream's
// UpstreamTier, polling the admin API (sync status and patch list), and fails with the
// last sync report when it does not happen within Timeout.
func (d *Deployment) WaitSynced(t testing.TB) []server.Patch {
	t.Helper()
	if d.Upstream == nil {
		t.Fatal("the deployment has no upstream")
	}
	c := d.AdminClient(t)
	want := map[string]bool{}
	for _, p := range SyncedPatches(d.Upstream.Specs) {
		want[p.Filename()] = true
	}
	var (
		last    server.SyncStatus
		patches []server.Patch
		lastErr error
	)
	err := poll(t.Context(), Timeout, func() (bool, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if last, lastErr = c.SyncStatus(ctx); lastErr != nil {
			return false, nil
		}
		if patches, lastErr = c.Patches(ctx, server.PatchFilter{}); lastErr != nil {
			return false, nil
		}
		got := 0
		for _, p := range patches {
			if want[p.Filename] {
				got++
			}
		}
		return last.LastSuccess != nil && got == len(want), nil
	})
	if err != nil {
		var names []string
		for _, p := range patches {
			names = append(names, p.Filename)
		}
		t.Fatalf("patches did not sync from %s: %v\nlast error: %v\nsync status: %s\nrecorded: %v",
			d.Upstream.URL, err, lastErr, describeSync(last), names)
	}
	return patches
}

// TriggerSync runs a sync now and waits for it (`livepatch-admin sync trigger --wait`
// through the API), failing the test unless it succeeds. A run another unit holds the
// lock for counts as skipped: it is retried until Timeout.
func (d *Deployment) TriggerSync(t testing.TB) server.SyncReport {
	t.Helper()
	c := d.AdminClient(t)
	var rep server.SyncReport
	err := poll(t.Context(), Timeout, func() (bool, error) {
		var err error
		if rep, err = c.TriggerSyncWait(t.Context()); err != nil {
			return false, err
		}
		switch rep.Outcome {
		case "success":
			return true, nil
		case "skipped":
			return false, nil
		}
		return false, fmt.Errorf("sync %s: %s", rep.Outcome, rep.Error)
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func describeSync(s server.SyncStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "enabled=%v upstream=%s upstream-tier=%s tier=%s", s.Enabled, s.Upstream, s.UpstreamTier, s.Tier)
	if s.LastRun != nil {
		fmt.Fprintf(&b, " last-run: %s (%d added) %s", s.LastRun.Outcome, s.LastRun.PatchesAdded, s.LastRun.Error)
	}
	for _, w := range s.Warnings {
		b.WriteString("; warning: " + w)
	}
	return b.String()
}

// AuthToken returns an auth token for a tier, issued once per deployment and tier
// through the admin API (id "e2e-<tier>").
func (d *Deployment) AuthToken(t testing.TB, tier string) string {
	t.Helper()
	d.mu.Lock()
	tok, ok := d.tokens[tier]
	d.mu.Unlock()
	if ok {
		return tok
	}
	c := d.AdminClient(t)
	at, err := c.CreateAuthToken(t.Context(), server.AuthTokenRequest{ID: "e2e-" + tier, Tier: tier})
	if err != nil {
		t.Fatalf("cannot create an auth token for tier %s: %v", tier, err)
	}
	d.mu.Lock()
	d.tokens[tier] = at.Token
	d.mu.Unlock()
	return at.Token
}

// Inventory is what an upgrade must keep: every tier, patch, auth token and machine.
type Inventory struct {
	Tiers    []string
	Patches  []string // filename@tier, blocked marked
	Tokens   []string // id@tier
	Machines []string // id@tier
}

// Inventory reads the tiers, patches, auth tokens and machines through the admin API.
func (d *Deployment) Inventory(t testing.TB) Inventory {
	t.Helper()
	ctx := t.Context()
	c := d.AdminClient(t)
	var inv Inventory
	tiers, err := c.Tiers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range tiers {
		inv.Tiers = append(inv.Tiers, tr.Name)
	}
	patches, err := c.Patches(ctx, server.PatchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range patches {
		s := p.Filename + "@" + p.Tier
		if p.Blocked {
			s += " blocked"
		}
		inv.Patches = append(inv.Patches, s)
	}
	tokens, err := c.AuthTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		inv.Tokens = append(inv.Tokens, tok.ID+"@"+tok.Tier)
	}
	for _, tier := range inv.Tiers {
		after := ""
		for range 1000 { // pages; bounded
			ms, next, err := c.ReportMachines(ctx, server.MachineFilter{Tier: tier, After: after})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				inv.Machines = append(inv.Machines, m.ID+"@"+m.Tier)
			}
			if next == "" {
				break
			}
			after = next
		}
	}
	slices.Sort(inv.Patches)
	slices.Sort(inv.Tokens)
	slices.Sort(inv.Machines)
	return inv
}

// IsExit reports whether err is a command's non-zero exit with the given code.
func IsExit(err error, code int) bool {
	ee, ok := errors.AsType[*exec.ExitError](err)
	return ok && ee.ExitCode() == code
}
