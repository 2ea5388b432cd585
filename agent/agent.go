// Package agent is the logic of livepatch-client, the machine agent: its configuration and
// state files, enabling and disabling the machine with the on-prem server, the periodic
// check-in that reports the machine's status and receives the patch its tier offers, the
// download and verification of that patch, applying it to the running kernel, and the
// status the client shows.
//
// Everything the agent touches on the machine goes through injectable parts (Options):
// a filesystem root for /proc, /etc and /sys, the command runner that loads modules, the
// clock and the server API, so tests run it against fake trees and a real server.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livepatch-onprem/livepatch/internal/proxy"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// Version is the client version reported at every check; release builds set it with
// -ldflags "-X github.com/livepatch-onprem/livepatch/agent.Version=...".
var Version = "0.1.0"

// DefaultStateDir is where the client keeps its files unless told otherwise.
const DefaultStateDir = "/var/lib/livepatch-client"

// Files and directories in the state directory.
const (
	configFile  = "config.yaml"   // 0600: proxy URLs may carry credentials
	stateFile   = "state.json"    // 0644: no secrets, so status works without root
	tokenFile   = "machine-token" // 0600
	processLock = "lock"          // flock taken by every command that changes state
	patchesDir  = "patches"       // 0700: downloaded and verified patch archives
	locksDir    = "locks"         // crash-loop lockfiles, <module>.lock
)

// API is the part of the server API the agent uses; *client.Client implements it.
type API interface {
	// Reenable enrols the machine; currentToken is the machine token it holds for that
	// server and id ("" when none), its proof when it is enrolled already.
	Reenable(ctx context.Context, machineID, authToken, currentToken string, status *server.Status) (machineToken, tier string, err error)
	CheckIn(ctx context.Context, machineID, machineToken string, status server.Status) (server.Update, error)
	Disable(ctx context.Context, machineID, machineToken string) error
	Download(ctx context.Context, rawURL string, opts ...client.TransferOption) (body io.ReadCloser, size int64, err error)
}

// Options configure an Agent; zero fields take production defaults.
type Options struct {
	// StateDir holds config, state, token, patches and locks (default DefaultStateDir).
	StateDir string
	// System reads machine facts (default HostSystem()).
	System System
	// Applier loads modules (default: a KernelApplier on System.Root/sys/kernel/livepatch
	// running insmod with Runner).
	Applier Applier
	// Runner runs insmod for the default applier (default ExecRunner).
	Runner Runner
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NewAPI returns the API of a server with the options of the configuration (default:
	// a *client.Client).
	NewAPI func(serverURL string, opts ...client.Option) (API, error)
	// Logger receives the daemon's messages (default: discard).
	Logger *slog.Logger
}

// Agent carries out the client's commands on one state directory.
type Agent struct {
	dir     string
	sys     System
	applier Applier
	now     func() time.Time
	newAPI  func(serverURL string, opts ...client.Option) (API, error)
	log     *slog.Logger
}

// New returns an Agent.
func New(o Options) *Agent {
	a := &Agent{dir: o.StateDir, sys: o.System, applier: o.Applier, now: o.Now, newAPI: o.NewAPI, log: o.Logger}
	if a.dir == "" {
		a.dir = DefaultStateDir
	}
	if a.sys.Root == "" {
		a.sys = HostSystem()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.applier == nil {
		run := o.Runner
		if run == nil {
			run = ExecRunner
		}
		a.applier = &KernelApplier{
			SysfsDir: filepath.Join(a.sys.Root, "sys/kernel/livepatch"),
			LockDir:  filepath.Join(a.dir, locksDir),
			Run:      run,
			Now:      a.now,
		}
	}
	if a.newAPI == nil {
		a.newAPI = func(serverURL string, opts ...client.Option) (API, error) {
			return client.New(serverURL, opts...)
		}
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

func (a *Agent) path(name string) string { return filepath.Join(a.dir, name) }

// ErrNotEnabled is returned by commands that need an enabled machine.
var ErrNotEnabled = errors.New("machine is not enabled: run livepatch-client enable <token>")

// ErrNoServer is returned when remote-server is not configured.
var ErrNoServer = errors.New("remote-server is not set: run livepatch-client config remote-server=<URL> first")

// PermissionError says a command needs more privileges than it has.
type PermissionError struct {
	Path string
	Err  error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("cannot access %s: permission denied: run livepatch-client as root (sudo), or use --state-dir", e.Path)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// permission turns permission errors into a *PermissionError naming path.
func permission(path string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return &PermissionError{Path: path, Err: err}
	}
	return err
}

// LoadConfig reads the configuration.
func (a *Agent) LoadConfig() (*Config, error) {
	c, err := LoadConfig(a.path(configFile))
	return c, permission(a.path(configFile), err)
}

// ConfigDefaults returns the machine's defaults for config keys that have them.
func (a *Agent) ConfigDefaults() ConfigDefaults {
	kernel, _ := a.sys.Kernel()
	return ConfigDefaults{MachineID: a.sys.MachineID(), Kernel: kernel}
}

// SaveConfig saves a configuration. Changing remote-server or machine-id of an enabled
// machine invalidates its machine token, which is then forgotten: the returned notes tell
// the user to enable again.
func (a *Agent) SaveConfig(c *Config) (notes []string, err error) {
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := c.check(); err != nil {
		return nil, err
	}
	st, err := a.loadState()
	if err != nil {
		return nil, err
	}
	if err := c.Save(a.path(configFile)); err != nil {
		return nil, permission(a.path(configFile), err)
	}
	if !st.Enabled {
		return nil, nil
	}
	machineID := c.MachineID
	if machineID == "" {
		machineID = a.sys.MachineID()
	}
	var changed string
	switch {
	case c.RemoteServer != st.Server:
		changed = "remote-server"
	case machineID != st.MachineID:
		changed = "machine-id"
	default:
		return nil, nil
	}
	a.forget(st)
	if err := a.saveState(st); err != nil {
		return nil, err
	}
	return []string{fmt.Sprintf("%s changed: the machine token is no longer valid and was forgotten; run livepatch-client enable <token>", changed)}, nil
}

// lock takes the state directory's process lock, creating the directory if needed, so
// that the daemon and commands never change state at the same time.
func (a *Agent) lock() (unlock func(), err error) {
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, permission(a.dir, fmt.Errorf("cannot create state directory: %w", err))
	}
	f, err := os.OpenFile(a.path(processLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, permission(a.path(processLock), fmt.Errorf("cannot open lock: %w", err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot lock %s: %w", a.path(processLock), err)
	}
	return func() { f.Close() }, nil
}

func (a *Agent) loadState() (*State, error) {
	st, err := loadState(a.path(stateFile))
	return st, permission(a.path(stateFile), err)
}

func (a *Agent) saveState(st *State) error {
	return permission(a.path(stateFile), st.save(a.path(stateFile)))
}

func (a *Agent) readToken() (string, error) {
	data, err := os.ReadFile(a.path(tokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", permission(a.path(tokenFile), fmt.Errorf("cannot read machine token: %w", err))
	}
	return strings.TrimSpace(string(data)), nil
}

// forget drops the enrolment: the token file and the server-side facts of the state. The
// applied patch stays recorded: its module stays loaded until reboot.
func (a *Agent) forget(st *State) {
	os.Remove(a.path(tokenFile))
	a.dropWaiting(st)
	*st = State{Applied: st.Applied, System: st.System}
	if st.Applied != nil {
		st.PatchState = server.StateApplied
	}
}

// machineID returns the configured or the machine's id.
func (a *Agent) machineID(c *Config) (string, error) {
	id := c.MachineID
	if id == "" {
		id = a.sys.MachineID()
	}
	if id == "" {
		return "", fmt.Errorf("cannot find a machine id: %s is missing or empty; set one with livepatch-client config machine-id=<ID>", filepath.Join(a.sys.Root, "etc/machine-id"))
	}
	if err := server.CheckMachineID(id); err != nil {
		return "", err
	}
	return id, nil
}

// kernel returns the configured or the running kernel release.
func (a *Agent) kernel(c *Config) (string, error) {
	release := c.Kernel
	if release == "" {
		var err error
		if release, err = a.sys.Kernel(); err != nil {
			return "", err
		}
	}
	if _, _, err := server.SplitKernelRelease(release); err != nil {
		return "", fmt.Errorf("%w: set the release to report with livepatch-client config kernel=<release>", err)
	}
	return release, nil
}

// api returns the API of serverURL with the configured proxies, certificates and
// timeouts.
func (a *Agent) api(c *Config, serverURL string) (API, error) {
	t := c.Timeouts()
	hc, err := httpClient(c, t)
	if err != nil {
		return nil, err
	}
	return a.newAPI(serverURL, client.WithHTTPClient(hc), client.WithTimeouts(t), client.WithUserAgent("livepatch-client/"+Version))
}

// httpClient returns an HTTP client with the configured proxies (the environment's when
// none is configured) and CA certificates, whose connections and TLS handshakes wait at
// most t.Connect (dial-timeout). The API client bounds the rest (request-timeout).
func httpClient(c *Config, t client.Timeouts) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = t.Connect
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACerts != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(c.CACerts)) {
			return nil, errors.New("cannot use ca-certs: no PEM certificate found")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	if c.HTTPProxy != "" || c.HTTPSProxy != "" {
		tr.Proxy = proxy.Func(c.HTTPProxy, c.HTTPSProxy, c.NoProxy)
	}
	return &http.Client{Transport: tr}, nil
}

// explain rewrites API errors into what the user should know.
func explain(err error) error {
	if _, ok := errors.AsType[*client.TimeoutError](err); ok {
		return fmt.Errorf("%w (a slow server needs a longer request-timeout: livepatch-client config request-timeout=5m)", err)
	}
	apiErr, ok := errors.AsType[*client.APIError](err)
	if !ok {
		return err
	}
	switch apiErr.Status {
	case http.StatusUnauthorized:
		return fmt.Errorf("the server refused the token: %w", err)
	case http.StatusForbidden:
		return fmt.Errorf("the server refused this machine: %w", err)
	}
	return fmt.Errorf("the server answered: %w", err)
}

// EnableResult says what enable did.
type EnableResult struct {
	Tier      string
	Server    string
	Mode      string
	Reenabled bool // the machine was enabled before and registered again
	// Checked is true when the first check ran (not in modes no-refresh and stop); CheckErr
	// is its error, if any: the machine is enabled either way.
	Checked  bool
	CheckErr error
	State    *State
}

// Enable registers the machine with the configured server using an auth token, stores the
// machine token it gets back and runs a first check. Enabling an enabled machine registers
// it again and replaces its token.
func (a *Agent) Enable(ctx context.Context, authToken string) (*EnableResult, error) {
	authToken = strings.TrimSpace(authToken)
	if authToken == "" {
		return nil, errors.New("the token is empty")
	}
	c, err := a.LoadConfig()
	if err != nil {
		return nil, err
	}
	if c.RemoteServer == "" {
		return nil, ErrNoServer
	}
	machineID, err := a.machineID(c)
	if err != nil {
		return nil, err
	}
	kernel, err := a.kernel(c)
	if err != nil {
		return nil, err
	}
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := a.loadState()
	if err != nil {
		return nil, err
	}
	api, err := a.api(c, c.RemoteServer)
	if err != nil {
		return nil, err
	}
	a.reconcile(st, kernel)
	status := a.sys.status(kernel, c.ReportsHostname())
	status.PatchState, status.PatchVersion = st.reportedPatchState(), st.reportedVersion()
	// Enabled here before under the same id: the token held proves it is this machine.
	var current string
	if st.Enabled && st.Server == c.RemoteServer && st.MachineID == machineID {
		if current, err = a.readToken(); err != nil {
			return nil, err
		}
	}
	token, tier, err := api.Reenable(ctx, machineID, authToken, current, &status)
	if err != nil {
		return nil, explain(err)
	}
	res := &EnableResult{Tier: tier, Server: c.RemoteServer, Mode: c.EffectiveMode(), Reenabled: st.Enabled}
	if st.Server != c.RemoteServer || st.MachineID != machineID {
		// Another server or identity: what the old one offered means nothing here.
		a.dropWaiting(st)
		st.Offered, st.Reason = nil, ""
		st.PatchState = ""
		if st.Applied != nil {
			st.PatchState = server.StateApplied
		}
	}
	if err := writeFileAtomic(a.path(tokenFile), []byte(token+"\n"), 0o600); err != nil {
		return nil, permission(a.path(tokenFile), err)
	}
	st.Enabled, st.Server, st.MachineID, st.Tier = true, c.RemoteServer, machineID, tier
	st.EnabledAt = a.now().UTC()
	st.CheckState, st.CheckError = CheckNeeded, ""
	st.System = status
	if err := a.saveState(st); err != nil {
		return nil, err
	}
	switch c.EffectiveMode() {
	case ModeNormal, ModeNoApply:
		res.Checked = true
		res.CheckErr = a.check(ctx, c, st, token)
	}
	res.State = st
	return res, nil
}

// lockEnabled locks the state directory and returns the state and machine token of an
// enabled machine; ErrNotEnabled (unlocked) when the machine is not enabled. The caller
// runs unlock when done.
func (a *Agent) lockEnabled() (st *State, token string, unlock func(), err error) {
	if unlock, err = a.lock(); err != nil {
		return nil, "", nil, err
	}
	if st, err = a.loadState(); err == nil {
		token, err = a.readToken()
	}
	if err == nil && (!st.Enabled || token == "") {
		err = ErrNotEnabled
	}
	if err != nil {
		unlock()
		return nil, "", nil, err
	}
	return st, token, unlock, nil
}

// DisableResult says what disable did.
type DisableResult struct {
	WasEnabled bool
	// Refused is the server's message when it refused the machine token (the machine was
	// forgotten locally all the same).
	Refused string
}

// Disable unregisters the machine and forgets its token. When the server refuses the token
// (it no longer knows the machine), the machine is forgotten locally anyway.
func (a *Agent) Disable(ctx context.Context) (*DisableResult, error) {
	st, token, unlock, err := a.lockEnabled()
	if errors.Is(err, ErrNotEnabled) {
		return &DisableResult{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := a.LoadConfig()
	if err != nil {
		return nil, err
	}
	api, err := a.api(c, st.Server)
	if err != nil {
		return nil, err
	}
	res := &DisableResult{WasEnabled: true}
	if err := api.Disable(ctx, st.MachineID, token); err != nil {
		apiErr, ok := errors.AsType[*client.APIError](err)
		if !ok || (apiErr.Status != http.StatusUnauthorized && apiErr.Status != http.StatusNotFound) {
			return nil, fmt.Errorf("%w (the machine is still enabled)", explain(err))
		}
		res.Refused = apiErr.Message
	}
	a.forget(st)
	if err := a.saveState(st); err != nil {
		return nil, err
	}
	return res, nil
}
