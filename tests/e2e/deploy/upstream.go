package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/config"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

// PatchSpec is one patch the upstream serves.
type PatchSpec struct {
	Kernel, Flavour, Version, Architecture string
	// Tier is the upstream tier the patch is promoted to ("" or the first tier: uploaded
	// only).
	Tier string
}

// Filename is the patch's file name.
func (p PatchSpec) Filename() string {
	return server.PatchName{Kernel: p.Kernel, Flavour: p.Flavour, Version: p.Version, Architecture: p.Architecture}.Filename()
}

// UpstreamTier is the tier of the upstream that deployments sync (sync_upstream_tier).
const UpstreamTier = "stable"

// DemoPatches are the patches an upstream serves unless told otherwise: two for the
// DemoKernel in UpstreamTier, a newer one still in beta (which a downstream syncing
// UpstreamTier must not get), and one for another kernel.
var DemoPatches = []PatchSpec{
	{Kernel: "5.15.0-107.117", Flavour: "generic", Version: "107.1", Architecture: "amd64", Tier: UpstreamTier},
	{Kernel: "5.15.0-107.117", Flavour: "lowlatency", Version: "107.1", Architecture: "amd64", Tier: UpstreamTier},
	{Kernel: "5.15.0-107.117", Flavour: "generic", Version: "107.2", Architecture: "amd64", Tier: "beta"},
	{Kernel: "6.8.0-45.45", Flavour: "generic", Version: "45.1", Architecture: "amd64", Tier: UpstreamTier},
}

// DemoKernel is the running kernel (uname -r) of enrolled machines; DemoPatch is the patch
// such a machine in any tier gets once synced patches are promoted to its tier.
const (
	DemoKernel = "5.15.0-107-generic"
	DemoPatch  = "107.1"
)

// SyncedPatches returns the patches of specs a downstream syncing UpstreamTier gets.
func SyncedPatches(specs []PatchSpec) []PatchSpec {
	var out []PatchSpec
	for _, p := range specs {
		if p.Tier == UpstreamTier {
			out = append(out, p)
		}
	}
	return out
}

// UpstreamOptions configures an upstream server.
type UpstreamOptions struct {
	// Dir holds its config, keys, patches and log. Required.
	Dir string
	// ServerBinary is livepatch-server. Required.
	ServerBinary string
	// DSN is its database (empty, or with its schema). Required.
	DSN string
	// ContractsURL is where it checks resource tokens (contracts.url).
	ContractsURL string
	// Patches to upload and promote; nil means DemoPatches.
	Patches []PatchSpec
	// Detach starts the server in its own session, to outlive this process (the demo);
	// stop it with StopUpstream(Dir).
	Detach bool
}

// Upstream is a livepatch-server outside the model, with its own database, a signing key
// and patches: the upstream a deployment syncs from.
type Upstream struct {
	// URL is the server's base URL (http://127.0.0.1:PORT).
	URL string
	// PublicKey is signing.pub: the base64 ed25519 key downstream servers and clients trust.
	PublicKey string
	// KeyDir holds signing.key and signing.pub.
	KeyDir string
	// AdminUser and AdminPassword log in to its admin API.
	AdminUser, AdminPassword string
	// Patches are the patches it serves, as recorded.
	Patches []server.Patch
	// Specs are the patches it was seeded with.
	Specs []PatchSpec
	// ConfigPath and LogPath are its config file and its output.
	ConfigPath, LogPath string

	dir    string
	opts   UpstreamOptions
	cmd    *exec.Cmd
	exited chan struct{}
}

// Upstream files in UpstreamOptions.Dir.
const (
	upstreamPIDFile = "livepatch-server.pid"
	upstreamLogFile = "livepatch-server.log"
)

// NewUpstream starts an upstream for a test: its own database (pgtest.DSN: in a cluster
// started once per test binary, which Main stops; or on the server of $LIVEPATCH_TEST_DSN),
// DemoPatches, contracts.url set to contractsURL. It is stopped when the test ends.
func NewUpstream(t testing.TB, b *Binaries, contractsURL string) *Upstream {
	t.Helper()
	dir := t.TempDir()
	u, err := StartUpstream(t.Context(), UpstreamOptions{
		Dir:          dir,
		ServerBinary: b.Server,
		DSN:          pgtest.DSN(t),
		ContractsURL: contractsURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("upstream log (%s):\n%s", u.LogPath, tail(u.LogPath, 40))
		}
		if err := u.Stop(); err != nil {
			t.Errorf("cannot stop the upstream: %v", err)
		}
	})
	return u
}

// StartUpstream generates a signing key, writes the config, initialises the schema, starts
// livepatch-server on a free loopback port, waits until it answers, and uploads and
// promotes the patches.
func StartUpstream(ctx context.Context, opts UpstreamOptions) (*Upstream, error) {
	if opts.Dir == "" || opts.ServerBinary == "" || opts.DSN == "" {
		return nil, errors.New("cannot start upstream: Dir, ServerBinary and DSN are required")
	}
	if opts.Patches == nil {
		opts.Patches = DemoPatches
	}
	u := &Upstream{
		KeyDir:        filepath.Join(opts.Dir, "keys"),
		AdminUser:     "upstream-admin",
		AdminPassword: randomHex(12),
		Specs:         opts.Patches,
		ConfigPath:    filepath.Join(opts.Dir, "livepatch-server.yaml"),
		LogPath:       filepath.Join(opts.Dir, upstreamLogFile),
		dir:           opts.Dir,
		opts:          opts,
	}
	if out, err := exec.CommandContext(ctx, opts.ServerBinary, "keys", "generate", "--out", u.KeyDir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cannot generate the upstream's signing key: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(filepath.Join(u.KeyDir, "signing.pub"))
	if err != nil {
		return nil, fmt.Errorf("cannot read the upstream's public key: %w", err)
	}
	u.PublicKey = strings.TrimSpace(string(pub))
	hash, err := bcrypt.GenerateFromPassword([]byte(u.AdminPassword), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("cannot hash the upstream's admin password: %w", err)
	}
	// A port that was free a moment ago may be taken before the server binds it: try again
	// with another a few times.
	var lastErr error
	for range 3 {
		port, err := pgtest.FreePort()
		if err != nil {
			return nil, err
		}
		u.URL = "http://127.0.0.1:" + strconv.Itoa(port)
		cfg := config.Default()
		cfg.Server.Address = "127.0.0.1:" + strconv.Itoa(port)
		cfg.Server.URLTemplate = u.URL + "/v1/patches/{filename}"
		cfg.Database.ConnectionString = opts.DSN
		cfg.Database.ConnectionPoolMax = 5
		cfg.Auth.BasicUsers = []string{u.AdminUser + ":" + string(hash)}
		cfg.PatchStorage.Type = config.StoragePostgres
		cfg.Contracts.URL = opts.ContractsURL
		cfg.SyncServer.SigningKey = filepath.Join(u.KeyDir, "signing.key")
		data, err := cfg.Marshal()
		if err != nil {
			return nil, fmt.Errorf("cannot render the upstream's config: %w", err)
		}
		if err := os.WriteFile(u.ConfigPath, data, 0o600); err != nil {
			return nil, fmt.Errorf("cannot write the upstream's config: %w", err)
		}
		if out, err := exec.CommandContext(ctx, opts.ServerBinary, "schema", "upgrade", "--config", u.ConfigPath).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("cannot initialise the upstream's database: %v\n%s", err, out)
		}
		if lastErr = u.start(ctx, opts); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if err := u.seed(ctx, opts.Patches); err != nil {
		u.Stop()
		return nil, err
	}
	return u, nil
}

// start runs the server and waits until it answers GET /debug/info.
func (u *Upstream) start(ctx context.Context, opts UpstreamOptions) error {
	logf, err := os.OpenFile(u.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot start the upstream: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(opts.ServerBinary, "serve", "--config", u.ConfigPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: opts.Detach}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start the upstream: %w", err)
	}
	u.cmd = cmd
	u.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		close(u.exited)
	}()
	if err := os.WriteFile(filepath.Join(u.dir, upstreamPIDFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		u.Stop()
		return fmt.Errorf("cannot start the upstream: %w", err)
	}
	err = poll(ctx, 30*time.Second, func() (bool, error) {
		select {
		case <-u.exited:
			return false, fmt.Errorf("the upstream exited: %s", tail(u.LogPath, 20))
		default:
		}
		resp, err := http.Get(u.URL + "/debug/info")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		u.Stop()
		return fmt.Errorf("cannot start the upstream: %w", err)
	}
	return nil
}

// seed uploads and promotes the patches.
func (u *Upstream) seed(ctx context.Context, specs []PatchSpec) error {
	c, err := u.Client(ctx)
	if err != nil {
		return err
	}
	if u.Patches, err = SeedPatches(ctx, c, specs); err != nil {
		return fmt.Errorf("cannot seed the upstream: %w", err)
	}
	return nil
}

// SeedPatches uploads generated patch archives of specs through an admin client (an
// upstream's, or a deployment's that originates patches), promotes each to its tier, and
// returns the server's patch list.
func SeedPatches(ctx context.Context, c *client.Client, specs []PatchSpec) ([]server.Patch, error) {
	for _, p := range specs {
		var buf bytes.Buffer
		if err := patchfile.Generate(&buf, patchfile.Metadata(p.Kernel, p.Flavour, p.Version, p.Architecture), 16<<10); err != nil {
			return nil, err
		}
		if _, _, err := c.UploadPatch(ctx, p.Filename(), &buf, int64(buf.Len())); err != nil {
			return nil, fmt.Errorf("cannot upload %s: %w", p.Filename(), err)
		}
	}
	tiers, err := c.Tiers(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list the tiers: %w", err)
	}
	promoted := map[[2]string]bool{}
	for _, p := range specs {
		key := [2]string{p.Version, p.Tier}
		if p.Tier == "" || p.Tier == tiers[0].Name || promoted[key] {
			continue
		}
		// Promoting a version promotes every file of it.
		if _, err := c.PromotePatch(ctx, p.Version, p.Tier); err != nil {
			return nil, fmt.Errorf("cannot promote %s to %s: %w", p.Version, p.Tier, err)
		}
		promoted[key] = true
	}
	patches, err := c.Patches(ctx, server.PatchFilter{})
	if err != nil {
		return nil, fmt.Errorf("cannot list the patches: %w", err)
	}
	return patches, nil
}

// Client returns an admin client of the upstream, logged in.
func (u *Upstream) Client(ctx context.Context) (*client.Client, error) {
	c, err := client.New(u.URL)
	if err != nil {
		return nil, err
	}
	login, err := c.Login(ctx, u.AdminUser, u.AdminPassword)
	if err != nil {
		return nil, fmt.Errorf("cannot log in to the upstream: %w", err)
	}
	return c.WithToken(login.Token), nil
}

// Restart starts a stopped upstream again, on the same address and database: the
// upstream coming back after an outage.
func (u *Upstream) Restart(ctx context.Context) error {
	if u.cmd != nil {
		select {
		case <-u.exited:
		default:
			return errors.New("cannot restart the upstream: it is running")
		}
	}
	return u.start(ctx, u.opts)
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 seconds).
func (u *Upstream) Stop() error {
	if u.cmd == nil {
		return nil
	}
	u.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-u.exited:
	case <-t.C:
		u.cmd.Process.Kill()
		<-u.exited
	}
	os.Remove(filepath.Join(u.dir, upstreamPIDFile))
	return nil
}

// StopUpstream stops a detached upstream started with UpstreamOptions.Dir = dir by another
// process. It is not an error when none runs.
func StopUpstream(dir string) error {
	pidFile := filepath.Join(dir, upstreamPIDFile)
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("invalid pid file %s", pidFile)
	}
	if err := stopPID(pid, 10*time.Second); err != nil {
		return err
	}
	return os.Remove(pidFile)
}

// stopPID sends SIGTERM to a process we do not parent, waits for it to go, then SIGKILL.
func stopPID(pid int, grace time.Duration) error {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return nil // already gone
	}
	gone := func() (bool, error) { return syscall.Kill(pid, 0) != nil, nil }
	if poll(context.Background(), grace, gone) == nil {
		return nil
	}
	syscall.Kill(pid, syscall.SIGKILL)
	return poll(context.Background(), 5*time.Second, gone)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// poll calls check every 50ms until it reports done or an error, ctx ends, or timeout
// passes. Used only for what announces no change (a port opening, a process exiting).
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %v: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
}
