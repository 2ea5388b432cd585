package jujusim

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/juju/charm/v12"
	"github.com/juju/clock"
	"github.com/juju/names/v5"
)

// Options configures a Model.
type Options struct {
	// Dir is the state directory of the model: logs and unpacked charms. Required.
	Dir string
	// Name is the model name (JUJU_MODEL_NAME); default "sim".
	Name string
	// ToolBinary is the multi-call binary installed as every hook tool, systemctl, pro and
	// apt-get; default os.Executable(), which must then call MultiCall first thing in main or
	// TestMain.
	ToolBinary string
	// UpdateStatusInterval runs update-status on idle units at this interval; 0 disables the
	// timer (TriggerUpdateStatus still works).
	UpdateStatusInterval time.Duration
	// Charms maps charm URLs used in bundles or Deploy (e.g. "ch:ubuntu-advantage") to local
	// charm paths (directories or .charm archives). The stand-ins "haproxy" and "postgresql"
	// are always known (also as "ch:haproxy", "ch:postgresql").
	Charms map[string]string
	// ExtraEnv is added to the environment of every hook and action (e.g. GOCOVERDIR).
	ExtraEnv []string
	// HookTimeout kills a hook that runs longer; default 5 minutes.
	HookTimeout time.Duration
	// Logf, if set, receives every debug-log line as it is written.
	Logf func(format string, args ...any)
	// Clock times hook retries and leadership leases; default clock.WallClock. Tests pass a
	// testclock.Clock and advance it, so nothing waits in real time.
	Clock clock.Clock
	// NoHookRetries starts the model with automatically-retry-hooks=false: a failed hook
	// leaves its unit in error until Resolved.
	NoHookRetries bool
	// Seed seeds the model's random choices (leaders, retry jitter); 0 takes JUJUSIM_SEED
	// from the environment, else a random seed. Seed reports the one in use.
	Seed int64
}

// Model is an emulated Juju model: a controller plus the unit agents of its units.
type Model struct {
	opts    Options
	uuid    string
	name    string
	dir     string
	runDir  string // short directory (/tmp/jsim*) for sockets and machine roots
	sock    string
	lis     net.Listener
	subnet  *subnetLease
	toolBin string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	changed     chan struct{}
	closed      bool
	apps        map[string]*application
	units       map[string]*unit
	machines    map[string]*machine
	relations   map[int]*relation
	contexts    map[string]*hookContext
	actions     map[string]*Action
	nextRel     int
	nextMachine int
	nextAction  int
	history     []HookRecord
	logs        []LogEntry
	sec         *secretStore // nil until the first secret
	clock       clock.Clock
	seed        int64
	retryHooks  bool // model config automatically-retry-hooks
}

// HookRecord is one hook or action run, in the order the model ran them.
type HookRecord struct {
	Unit       string
	Hook       string // hook name, or "action:<name>"
	RelationID string // "<endpoint>:<id>" for relation hooks
	RemoteUnit string
	RemoteApp  string
	Departing  string
	ExitCode   int
	// Start and Duration time the dispatch process, from start to exit.
	Start    time.Time
	Duration time.Duration
}

func (r HookRecord) String() string {
	s := r.Unit + " " + r.Hook
	if r.RemoteUnit != "" {
		s += " " + r.RemoteUnit
	} else if r.RelationID != "" && strings.HasSuffix(r.Hook, "-relation-changed") {
		s += " " + r.RemoteApp
	}
	if r.ExitCode != 0 {
		s += fmt.Sprintf(" (exit %d)", r.ExitCode)
	}
	return s
}

// LogEntry is one line of the model's debug log.
type LogEntry struct {
	Time    time.Time
	Unit    string
	Level   string
	Message string
}

func (e LogEntry) String() string {
	who := "controller-0" // the model's own lines, as Juju's controller agent logs them
	if e.Unit != "" {
		who = "unit-" + strings.ReplaceAll(e.Unit, "/", "-")
	}
	return fmt.Sprintf("%s: %s %s %s", who, e.Time.Format("15:04:05"), e.Level, e.Message)
}

type application struct {
	name        string
	charmURL    string
	ch          charm.Charm
	archive     []byte // the charm as Juju stores it: a zip archive
	revision    int
	charmGen    int // bumped by upgrade-charm
	settings    charm.Settings
	configGen   int
	nextUnit    int
	leader      string
	leaderGen   int
	leaderData  map[string]string
	leaderVer   int
	rng         *rand.Rand  // its leadership claims' race, from the model seed
	leaderSince time.Time   // when the leader's first claim succeeded
	leaseTimer  clock.Timer // running while a gone leader's lease lapses
	status      *StatusInfo // set by the leader with status-set --application
	version     string
	exposed     bool
	subordinate bool
}

type machine struct {
	id      string
	addr    string
	root    string
	binDir  string
	lock    sync.Mutex
	sd      *systemd
	removed bool
}

type unit struct {
	name      string
	app       string
	machine   *machine
	principal string
	charmDir  string
	toolsDir  string
	local     localState
	workload  StatusInfo
	agent     StatusInfo
	archive   []byte // the charm in charmDir
	failed    *op    // the hook that failed, while in error
	retry     retryState
	rng       *rand.Rand // its retry jitter, from the model seed
	dying     bool
	removed   bool
	running   bool
	actions   []*Action
	ports     map[string]bool
	state     map[string]string
	updateDue bool
}

// localState is what the unit agent has seen, as Juju's uniter keeps it.
type localState struct {
	installed     bool
	started       bool
	stopped       bool
	charmSeen     int // the charm generation upgrade-charm ran for
	charmDeployed int // the charm generation in the charm directory
	configSeen    int
	leaderGenSeen int
	leaderVerSeen int
	rels          map[int]*relState
}

type relState struct {
	members map[string]int // remote unit -> settings version seen; -1 = joined, changed pending
	appSeen int
	broken  bool
}

type endpoint struct {
	app string
	rel charm.Relation
}

func (e endpoint) String() string { return e.app + ":" + e.rel.Name }

type bag struct {
	data    map[string]string
	version int
}

type relUnit struct {
	inScope bool
	bag     *bag
}

type relation struct {
	id        int
	eps       []endpoint // one for peers
	container bool
	units     map[string]*relUnit
	apps      map[string]*bag
	dying     bool
}

// New starts an empty model. Close it to stop every process it started.
func New(opts Options) (*Model, error) {
	if opts.Dir == "" {
		return nil, errors.New("cannot create model: no state directory")
	}
	if opts.Name == "" {
		opts.Name = "sim"
	}
	if opts.HookTimeout == 0 {
		opts.HookTimeout = 5 * time.Minute
	}
	bin := opts.ToolBinary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("cannot find tool binary: %w", err)
		}
		bin = exe
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create model directory: %w", err)
	}
	runDir, err := os.MkdirTemp("", "jsim")
	if err != nil {
		return nil, fmt.Errorf("cannot create run directory: %w", err)
	}
	// Services such as postgres run as other users and must reach their files under it.
	if err := os.Chmod(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create run directory: %w", err)
	}
	lease, err := leaseSubnet()
	if err != nil {
		os.RemoveAll(runDir)
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.WallClock
	}
	seed, err := modelSeed(opts.Seed)
	if err != nil {
		lease.release()
		os.RemoveAll(runDir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Model{
		clock:      opts.Clock,
		seed:       seed,
		retryHooks: !opts.NoHookRetries,
		opts:       opts,
		uuid:       newUUID(),
		name:       opts.Name,
		dir:        opts.Dir,
		runDir:     runDir,
		sock:       filepath.Join(runDir, "agent.sock"),
		subnet:     lease,
		toolBin:    bin,
		ctx:        ctx,
		cancel:     cancel,
		changed:    make(chan struct{}),
		apps:       map[string]*application{},
		units:      map[string]*unit{},
		machines:   map[string]*machine{},
		relations:  map[int]*relation{},
		contexts:   map[string]*hookContext{},
		actions:    map[string]*Action{},
	}
	if err := m.serveTools(); err != nil {
		cancel()
		lease.release()
		os.RemoveAll(runDir)
		return nil, err
	}
	m.logf("", "INFO", "model %s seed %d (JUJUSIM_SEED=%d replays its random choices)", m.name, seed, seed)
	if opts.UpdateStatusInterval > 0 {
		m.wg.Add(1)
		go m.updateStatusTimer(opts.UpdateStatusInterval)
	}
	return m, nil
}

// UUID returns the model UUID (JUJU_MODEL_UUID).
func (m *Model) UUID() string { return m.uuid }

// Close stops all agents, kills running hooks and every service process, and releases the
// model's addresses. The state directory is left for inspection.
func (m *Model) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.stopTimersLocked()
	m.notifyLocked()
	machines := slices.Collect(maps.Values(m.machines))
	m.mu.Unlock()
	m.cancel()
	m.lis.Close()
	m.wg.Wait()
	for _, mc := range machines {
		mc.sd.stopAll()
	}
	m.subnet.release()
	return os.RemoveAll(m.runDir)
}

func (m *Model) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Model) logf(unit, level, format string, args ...any) {
	e := LogEntry{Time: time.Now(), Unit: unit, Level: level, Message: fmt.Sprintf(format, args...)}
	m.mu.Lock()
	m.logs = append(m.logs, e)
	m.notifyLocked()
	m.mu.Unlock()
	if m.opts.Logf != nil {
		m.opts.Logf("%s", e)
	}
}

func (m *Model) logLocked(unit, level, msg string) {
	e := LogEntry{Time: time.Now(), Unit: unit, Level: level, Message: msg}
	m.logs = append(m.logs, e)
	if m.opts.Logf != nil {
		m.opts.Logf("%s", e)
	}
}

// Logs returns the debug log so far.
func (m *Model) Logs() []LogEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.logs)
}

// History returns every hook and action run so far, in order.
func (m *Model) History() []HookRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history)
}

// HookNames returns the hooks run so far on one unit, as "<hook>" or "<hook> <remote>" strings
// (see HookRecord.String without the unit), handy for comparing orders in tests.
func (m *Model) HookNames(unitName string) []string {
	var out []string
	for _, r := range m.History() {
		if r.Unit == unitName {
			out = append(out, strings.TrimPrefix(r.String(), unitName+" "))
		}
	}
	return out
}

// DeployArgs describes one application to deploy.
type DeployArgs struct {
	// Charm is a local path (directory or .charm archive) or a URL known to Options.Charms or
	// the stand-ins (haproxy, postgresql).
	Charm string
	// Application defaults to the charm name.
	Application string
	// NumUnits defaults to 1 for principals; subordinates always get 0.
	NumUnits int
	// Config holds option values, typed as in a bundle (or strings, parsed as the CLI does).
	Config map[string]any
	Expose bool
}

// Deploy adds an application and its units, and returns the application name.
func (m *Model) Deploy(args DeployArgs) (string, error) {
	path, err := m.resolveCharm(args.Charm, "")
	if err != nil {
		return "", err
	}
	ch, archive, err := readCharm(path)
	if err != nil {
		return "", err
	}
	name := args.Application
	if name == "" {
		name = ch.Meta().Name
	}
	settings, err := parseConfig(ch, args.Config)
	if err != nil {
		return "", fmt.Errorf("cannot deploy %q: %w", name, err)
	}
	n := args.NumUnits
	if n == 0 && !ch.Meta().Subordinate {
		n = 1
	}
	if ch.Meta().Subordinate && n > 0 {
		return "", fmt.Errorf("cannot deploy %q: subordinate application must be deployed without units", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.addApplicationLocked(name, args.Charm, ch, archive, settings); err != nil {
		return "", err
	}
	m.apps[name].exposed = args.Expose
	for range n {
		if _, err := m.addUnitLocked(name, nil); err != nil {
			return name, err
		}
	}
	return name, nil
}

func (m *Model) addApplicationLocked(name, url string, ch charm.Charm, archive []byte, settings charm.Settings) error {
	if m.closed {
		return errors.New("cannot deploy: model closed")
	}
	if !names.IsValidApplication(name) {
		return fmt.Errorf("cannot deploy: invalid application name %q", name)
	}
	if _, ok := m.apps[name]; ok {
		return fmt.Errorf("cannot deploy: application %q already exists", name)
	}
	app := &application{
		name:        name,
		charmURL:    url,
		ch:          ch,
		archive:     archive,
		revision:    ch.Revision(),
		settings:    settings,
		leaderData:  map[string]string{},
		subordinate: ch.Meta().Subordinate,
		rng:         m.newRand(name),
	}
	m.apps[name] = app
	for _, rel := range ch.Meta().Peers {
		m.addRelationLocked([]endpoint{{app: name, rel: rel}})
	}
	m.logLocked("", "INFO", fmt.Sprintf("deployed %q from %s", name, url))
	m.notifyLocked()
	return nil
}

// AddUnit adds n units of a principal application and returns their names.
func (m *Model) AddUnit(app string, n int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.apps[app]
	if !ok {
		return nil, fmt.Errorf("cannot add unit: application %q not found", app)
	}
	if a.subordinate {
		return nil, fmt.Errorf("cannot add unit to subordinate application %q", app)
	}
	var out []string
	for range n {
		u, err := m.addUnitLocked(app, nil)
		if err != nil {
			return out, err
		}
		out = append(out, u.name)
	}
	return out, nil
}

func (m *Model) addUnitLocked(app string, principal *unit) (*unit, error) {
	a := m.apps[app]
	name := fmt.Sprintf("%s/%d", app, a.nextUnit)
	if !names.IsValidUnit(name) {
		return nil, fmt.Errorf("cannot add unit: invalid unit name %q", name)
	}
	a.nextUnit++
	var mc *machine
	if principal != nil {
		mc = principal.machine
	} else {
		var err error
		if mc, err = m.addMachineLocked(); err != nil {
			return nil, err
		}
	}
	tag := "unit-" + strings.ReplaceAll(name, "/", "-")
	u := &unit{
		name:     name,
		app:      app,
		machine:  mc,
		charmDir: filepath.Join(mc.root, "var/lib/juju/agents", tag, "charm"),
		toolsDir: filepath.Join(mc.root, "var/lib/juju/tools", tag),
		workload: StatusInfo{Current: "waiting", Message: "agent initialising", Since: time.Now()},
		agent:    StatusInfo{Current: "allocating", Since: time.Now()},
		ports:    map[string]bool{},
		state:    map[string]string{},
		rng:      m.newRand(name),
		archive:  a.archive,
		local:    localState{charmSeen: a.charmGen, charmDeployed: a.charmGen, configSeen: -1, leaderGenSeen: -1, leaderVerSeen: -1, rels: map[int]*relState{}},
	}
	if principal != nil {
		u.principal = principal.name
	}
	if err := m.installAgent(u, a); err != nil {
		return nil, err
	}
	m.units[name] = u
	// Subordinates follow their principal onto the machine.
	if principal == nil {
		for _, r := range m.sortedRelations() {
			if !r.container || r.dying || len(r.eps) != 2 {
				continue
			}
			for i, ep := range r.eps {
				other := r.eps[1-i]
				if ep.app == app && m.apps[other.app].subordinate {
					if _, err := m.addUnitLocked(other.app, u); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	m.logLocked(name, "INFO", "unit added on machine "+mc.id)
	m.wg.Add(1)
	go m.runAgent(u)
	m.notifyLocked()
	return u, nil
}

func (m *Model) addMachineLocked() (*machine, error) {
	id := strconv.Itoa(m.nextMachine)
	addr, err := m.subnet.addr(m.nextMachine)
	if err != nil {
		return nil, err
	}
	m.nextMachine++
	root := filepath.Join(m.runDir, "m"+id)
	binDir := filepath.Join(m.runDir, "bin"+id)
	for _, d := range []string{root, binDir, filepath.Join(root, "etc/systemd/system"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cannot create machine %s: %w", id, err)
		}
	}
	for _, name := range machineCommands {
		if err := os.Symlink(m.toolBin, filepath.Join(binDir, name)); err != nil {
			return nil, fmt.Errorf("cannot create machine %s: %w", id, err)
		}
	}
	// A link from the state directory makes machine roots easy to find.
	os.MkdirAll(filepath.Join(m.dir, "machines"), 0o755)
	os.Symlink(root, filepath.Join(m.dir, "machines", id))
	mc := &machine{id: id, addr: addr, root: root, binDir: binDir}
	mc.sd = newSystemd(mc, func(level, msg string) { m.logf("machine-"+id, level, "%s", msg) }, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if !m.closed {
			m.notifyLocked()
		}
	})
	m.machines[id] = mc
	return mc, nil
}

// installAgent unpacks the charm and links the hook tools for a new unit.
func (m *Model) installAgent(u *unit, a *application) error {
	if err := unpackCharm(a.archive, u.charmDir); err != nil {
		return fmt.Errorf("cannot install agent of %s: %w", u.name, err)
	}
	if err := os.MkdirAll(u.toolsDir, 0o755); err != nil {
		return fmt.Errorf("cannot install agent of %s: %w", u.name, err)
	}
	for _, name := range ToolNames() {
		p := filepath.Join(u.toolsDir, name)
		os.Remove(p)
		if err := os.Symlink(m.toolBin, p); err != nil {
			return fmt.Errorf("cannot install agent of %s: %w", u.name, err)
		}
	}
	return nil
}

func unitNumber(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndex(name, "/")+1:])
	return n
}

// resolveUnitLocked accepts "app/N" and "app/leader".
func (m *Model) resolveUnitLocked(name string) (*unit, error) {
	if app, ok := strings.CutSuffix(name, "/leader"); ok {
		a, ok := m.apps[app]
		if !ok || a.leader == "" {
			return nil, fmt.Errorf("no leader for application %q", app)
		}
		name = a.leader
	}
	u, ok := m.units[name]
	if !ok {
		return nil, fmt.Errorf("unit %q not found", name)
	}
	return u, nil
}

// RemoveUnit starts the removal of units: they leave their relations (departed, broken), stop
// and are removed, with their subordinates. Use WaitIdle to wait for the end.
func (m *Model) RemoveUnit(unitNames ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range unitNames {
		u, err := m.resolveUnitLocked(name)
		if err != nil {
			return fmt.Errorf("cannot remove unit: %w", err)
		}
		if m.apps[u.app].subordinate {
			return fmt.Errorf("cannot remove unit %q: subordinate units are removed with their principal", u.name)
		}
		m.killUnitLocked(u)
	}
	m.notifyLocked()
	return nil
}

func (m *Model) killUnitLocked(u *unit) {
	if u.dying {
		return
	}
	u.dying = true
	for _, r := range m.relations {
		if ru, ok := r.units[u.name]; ok {
			ru.inScope = false
		}
	}
	for _, s := range m.units {
		if s.principal == u.name {
			m.killUnitLocked(s)
		}
	}
}

// RemoveApplication removes all units of an application, then the application.
func (m *Model) RemoveApplication(app string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.apps[app]; !ok {
		return fmt.Errorf("cannot remove application: %q not found", app)
	}
	for _, r := range m.relations {
		for _, ep := range r.eps {
			if ep.app == app {
				m.removeRelationLocked(r)
			}
		}
	}
	for _, u := range m.units {
		if u.app == app {
			m.killUnitLocked(u)
		}
	}
	m.notifyLocked()
	return nil
}

// Relate adds a relation between two "app[:endpoint]" specs, inferring endpoints as Juju does,
// and returns its id.
func (m *Model) Relate(a, b string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	eps, err := m.inferEndpointsLocked(a, b)
	if err != nil {
		return 0, fmt.Errorf("cannot relate %s and %s: %w", a, b, err)
	}
	key := relationKey(eps)
	for _, r := range m.relations {
		if relationKey(r.eps) == key && !r.dying {
			return 0, fmt.Errorf("cannot relate %s and %s: relation %q already exists", a, b, key)
		}
	}
	for _, ep := range eps {
		if ep.rel.Limit > 0 && m.establishedLocked(ep) >= ep.rel.Limit {
			return 0, fmt.Errorf("cannot add relation %q: establishing a new relation for %s would exceed its maximum relation limit of %d %w",
				key, ep, ep.rel.Limit, ErrQuotaLimitExceeded)
		}
	}
	r := m.addRelationLocked(eps)
	if r.container {
		m.addSubordinatesLocked(r)
	}
	m.notifyLocked()
	return r.id, nil
}

func (m *Model) addSubordinatesLocked(r *relation) {
	for i, ep := range r.eps {
		sub := r.eps[1-i].app
		if m.apps[ep.app].subordinate || !m.apps[sub].subordinate {
			continue
		}
		for _, u := range m.sortedUnits() {
			if u.app != ep.app || u.dying || u.principal != "" {
				continue
			}
			has := false
			for _, s := range m.units {
				if s.app == sub && s.principal == u.name {
					has = true
				}
			}
			if !has {
				if _, err := m.addUnitLocked(sub, u); err != nil {
					m.logLocked(u.name, "ERROR", "cannot add subordinate: "+err.Error())
				}
			}
		}
	}
}

// ErrQuotaLimitExceeded is the error Relate wraps when an endpoint's limit is reached; its text
// is the code Juju's API attaches, which the juju CLI prints in parentheses.
var ErrQuotaLimitExceeded = errors.New("(quota limit exceeded)")

// establishedLocked counts the relations that use ep, as Juju's establishedRelationCount: a
// dying relation still counts until it is gone.
func (m *Model) establishedLocked(ep endpoint) int {
	n := 0
	for _, r := range m.relations {
		for _, e := range r.eps {
			if e.app == ep.app && e.rel.Name == ep.rel.Name && e.rel.Interface == ep.rel.Interface {
				n++
				break
			}
		}
	}
	return n
}

// relationKey is Juju's natural key of a relation: requirer, then provider, then peer
// endpoints, each role sorted by name.
func relationKey(eps []endpoint) string {
	order := map[charm.RelationRole]int{charm.RoleRequirer: 0, charm.RoleProvider: 1, charm.RolePeer: 2}
	sorted := slices.Clone(eps)
	sort.Slice(sorted, func(i, j int) bool {
		if oi, oj := order[sorted[i].rel.Role], order[sorted[j].rel.Role]; oi != oj {
			return oi < oj
		}
		return sorted[i].String() < sorted[j].String()
	})
	s := make([]string, len(sorted))
	for i, ep := range sorted {
		s[i] = ep.String()
	}
	return strings.Join(s, " ")
}

func (m *Model) addRelationLocked(eps []endpoint) *relation {
	r := &relation{id: m.nextRel, eps: eps, units: map[string]*relUnit{}, apps: map[string]*bag{}}
	m.nextRel++
	for _, ep := range eps {
		if ep.rel.Scope == charm.ScopeContainer {
			r.container = true
		}
		r.apps[ep.app] = &bag{data: map[string]string{}}
	}
	m.relations[r.id] = r
	return r
}

// RemoveRelation removes the relation between two "app[:endpoint]" specs.
func (m *Model) RemoveRelation(a, b string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	eps, err := m.inferEndpointsLocked(a, b)
	if err != nil {
		return fmt.Errorf("cannot remove relation %s %s: %w", a, b, err)
	}
	key := relationKey(eps)
	for _, r := range m.relations {
		if relationKey(r.eps) == key && !r.dying {
			m.removeRelationLocked(r)
			m.notifyLocked()
			return nil
		}
	}
	return fmt.Errorf("cannot remove relation %s %s: not found", a, b)
}

func (m *Model) removeRelationLocked(r *relation) {
	r.dying = true
	for _, ru := range r.units {
		ru.inScope = false
	}
	if !r.container {
		return
	}
	// Subordinates whose principal leaves the container relation die with it.
	for i, ep := range r.eps {
		if !m.apps[ep.app].subordinate {
			continue
		}
		principalApp := r.eps[1-i].app
		for _, u := range m.units {
			if u.app == ep.app && u.principal != "" && m.units[u.principal] != nil && m.units[u.principal].app == principalApp {
				m.killUnitLocked(u)
			}
		}
	}
}

// inferEndpointsLocked resolves "app[:endpoint]" pairs like Juju: explicit names must exist;
// otherwise the unique provider/requirer pair with matching interfaces is chosen, with the
// implicit juju-info endpoint only as a last resort.
func (m *Model) inferEndpointsLocked(a, b string) ([]endpoint, error) {
	ca, err := m.candidatesLocked(a)
	if err != nil {
		return nil, err
	}
	cb, err := m.candidatesLocked(b)
	if err != nil {
		return nil, err
	}
	var explicit, implicit [][]endpoint
	for _, x := range ca {
		for _, y := range cb {
			if x.app == y.app || x.rel.Interface != y.rel.Interface {
				continue
			}
			if !(x.rel.Role == charm.RoleProvider && y.rel.Role == charm.RoleRequirer ||
				x.rel.Role == charm.RoleRequirer && y.rel.Role == charm.RoleProvider) {
				continue
			}
			pair := []endpoint{x.endpoint, y.endpoint}
			if x.implicit || y.implicit {
				implicit = append(implicit, pair)
			} else {
				explicit = append(explicit, pair)
			}
		}
	}
	found := explicit
	if len(found) == 0 {
		found = implicit
	}
	switch len(found) {
	case 0:
		return nil, errors.New("no relations found")
	case 1:
		pair := found[0]
		if pair[0].rel.Scope == charm.ScopeContainer || pair[1].rel.Scope == charm.ScopeContainer {
			pair[0].rel.Scope, pair[1].rel.Scope = charm.ScopeContainer, charm.ScopeContainer
		}
		return pair, nil
	}
	var s []string
	for _, p := range found {
		s = append(s, fmt.Sprintf("%q", relationKey(p)))
	}
	return nil, fmt.Errorf("ambiguous relation: %s", strings.Join(s, " "))
}

type candidate struct {
	endpoint
	implicit bool
}

func (m *Model) candidatesLocked(spec string) ([]candidate, error) {
	appName, epName, _ := strings.Cut(spec, ":")
	a, ok := m.apps[appName]
	if !ok {
		return nil, fmt.Errorf("application %q not found", appName)
	}
	var out []candidate
	for name, rel := range a.ch.Meta().CombinedRelations() {
		if rel.Role == charm.RolePeer || (epName != "" && name != epName) {
			continue
		}
		out = append(out, candidate{endpoint: endpoint{app: appName, rel: rel}})
	}
	if _, declared := a.ch.Meta().CombinedRelations()["juju-info"]; !declared && (epName == "" || epName == "juju-info") {
		rel := charm.Relation{Name: "juju-info", Role: charm.RoleProvider, Interface: "juju-info", Scope: charm.ScopeGlobal}
		out = append(out, candidate{endpoint: endpoint{app: appName, rel: rel}, implicit: epName == ""})
	}
	if len(out) == 0 && epName != "" {
		return nil, fmt.Errorf("application %q has no %q relation", appName, epName)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rel.Name < out[j].rel.Name })
	return out, nil
}

// SetConfig sets options from their string forms, as `juju config app k=v` does. An empty value
// resets the option to its default.
func (m *Model) SetConfig(app string, values map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.apps[app]
	if !ok {
		return fmt.Errorf("cannot set config: application %q not found", app)
	}
	set := map[string]string{}
	var reset []string
	for k, v := range values {
		if _, ok := a.ch.Config().Options[k]; !ok {
			return fmt.Errorf("cannot set config: unknown option %q", k)
		}
		if v == "" {
			reset = append(reset, k)
			continue
		}
		set[k] = v
	}
	parsed, err := a.ch.Config().ParseSettingsStrings(set)
	if err != nil {
		return fmt.Errorf("cannot set config: %w", err)
	}
	next := maps.Clone(a.settings)
	maps.Copy(next, parsed)
	for _, k := range reset {
		delete(next, k)
	}
	m.setSettingsLocked(a, next)
	return nil
}

// ResetConfig resets options to their defaults.
func (m *Model) ResetConfig(app string, keys ...string) error {
	values := map[string]string{}
	for _, k := range keys {
		values[k] = ""
	}
	return m.SetConfig(app, values)
}

func (m *Model) setSettingsLocked(a *application, next charm.Settings) {
	before := effectiveConfig(a.ch, a.settings)
	a.settings = next
	if !equalSettings(before, effectiveConfig(a.ch, next)) {
		a.configGen++
		m.notifyLocked()
	}
}

// Config returns the effective configuration of an application (defaults included).
func (m *Model) Config(app string) (charm.Settings, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.apps[app]
	if !ok {
		return nil, fmt.Errorf("cannot get config: application %q not found", app)
	}
	return effectiveConfig(a.ch, a.settings), nil
}

// Upgrade replaces an application's charm (upgrade-charm / refresh --path); an empty path
// re-reads the charm the application was deployed from (e.g. a rebuilt .charm file). Options
// the new charm dropped are discarded.
func (m *Model) Upgrade(app, charmPath string) error {
	if charmPath == "" {
		m.mu.Lock()
		if a, ok := m.apps[app]; ok {
			charmPath = a.charmURL
		}
		m.mu.Unlock()
	}
	path, err := m.resolveCharm(charmPath, "")
	if err != nil {
		return err
	}
	ch, archive, err := readCharm(path)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.apps[app]
	if !ok {
		return fmt.Errorf("cannot upgrade: application %q not found", app)
	}
	if ch.Meta().Name != a.ch.Meta().Name {
		return fmt.Errorf("cannot upgrade %q: charm name %q does not match %q", app, ch.Meta().Name, a.ch.Meta().Name)
	}
	for name, rel := range ch.Meta().CombinedRelations() {
		if n := m.establishedLocked(endpoint{app: app, rel: rel}); rel.Limit > 0 && n > rel.Limit {
			return fmt.Errorf("cannot upgrade %q: new charm version imposes a maximum relation limit of %d for %s:%s which cannot be satisfied by the number of already established relations (%d) %w",
				app, rel.Limit, app, name, n, ErrQuotaLimitExceeded)
		}
	}
	a.ch, a.archive, a.charmURL = ch, archive, charmPath
	a.revision++
	a.charmGen++
	a.settings = ch.Config().FilterSettings(a.settings)
	// Each unit agent puts the new charm in place between two hooks (opDeployCharm).
	m.notifyLocked()
	return nil
}

// Expose marks an application exposed (shown in status; ports are reachable on loopback
// anyway).
func (m *Model) Expose(app string, exposed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.apps[app]
	if !ok {
		return fmt.Errorf("cannot expose: application %q not found", app)
	}
	a.exposed = exposed
	return nil
}

// Resolved clears a unit's hook error. With retry the failed hook runs again; without it the
// hook is skipped as if it had succeeded (juju resolved --no-retry), its changes discarded.
func (m *Model) Resolved(unitName string, retry bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(unitName)
	if err != nil {
		return fmt.Errorf("cannot resolve: %w", err)
	}
	if u.failed == nil {
		return fmt.Errorf("cannot resolve: unit %q is not in an error state", u.name)
	}
	if !retry {
		m.applyOpLocked(u, u.failed)
	}
	m.stopRetryLocked(u, true)
	u.failed = nil
	u.agent = StatusInfo{Current: "idle", Since: time.Now()}
	m.notifyLocked()
	return nil
}

// TriggerUpdateStatus queues update-status on every unit; it runs once the unit is idle.
func (m *Model) TriggerUpdateStatus() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range m.units {
		u.updateDue = true
	}
	m.notifyLocked()
}

func (m *Model) updateStatusTimer(every time.Duration) {
	defer m.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.TriggerUpdateStatus()
		}
	}
}

// WaitIdle blocks until no unit has a hook or action to run or running, or ctx ends. Units in
// error count as idle.
func (m *Model) WaitIdle(ctx context.Context) error {
	return m.waitLocked(ctx, m.idleLocked)
}

// Wait blocks until cond, evaluated on status snapshots after every model change, is true.
// The condition runs under the model lock: it must not call the model.
func (m *Model) Wait(ctx context.Context, cond func(*Status) bool) error {
	return m.waitLocked(ctx, func() bool { return cond(m.statusLocked()) })
}

// WaitHistory blocks until cond holds for the hook history. Like Wait's, the condition runs
// under the model lock: it must only look at its argument.
func (m *Model) WaitHistory(ctx context.Context, cond func([]HookRecord) bool) error {
	return m.waitLocked(ctx, func() bool { return cond(m.history) })
}

// WaitIdleStatus waits until the model is idle and cond holds.
func (m *Model) WaitIdleStatus(ctx context.Context, cond func(*Status) bool) error {
	return m.waitLocked(ctx, func() bool { return m.idleLocked() && cond(m.statusLocked()) })
}

func (m *Model) waitLocked(ctx context.Context, cond func() bool) error {
	for {
		m.mu.Lock()
		ok := cond()
		ch := m.changed
		closed := m.closed
		m.mu.Unlock()
		if ok {
			return nil
		}
		if closed {
			return errors.New("model closed")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			m.mu.Lock()
			pending := m.pendingLocked()
			m.mu.Unlock()
			return fmt.Errorf("cannot wait: %w (pending: %s)", ctx.Err(), pending)
		}
	}
}

func (m *Model) idleLocked() bool {
	for _, u := range m.units {
		if u.running || m.nextOpLocked(u) != nil {
			return false
		}
	}
	return true
}

func (m *Model) pendingLocked() string {
	var s []string
	for _, u := range m.sortedUnits() {
		if u.running {
			s = append(s, u.name+" running")
		} else if op := m.nextOpLocked(u); op != nil {
			s = append(s, u.name+" next "+op.hookName())
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func (m *Model) sortedUnits() []*unit {
	us := slices.Collect(maps.Values(m.units))
	sort.Slice(us, func(i, j int) bool {
		if us[i].app != us[j].app {
			return us[i].app < us[j].app
		}
		return unitNumber(us[i].name) < unitNumber(us[j].name)
	})
	return us
}

func (m *Model) sortedRelations() []*relation {
	rs := slices.Collect(maps.Values(m.relations))
	sort.Slice(rs, func(i, j int) bool { return rs[i].id < rs[j].id })
	return rs
}

// UnitAddress returns the loopback address of a unit's machine.
func (m *Model) UnitAddress(unitName string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(unitName)
	if err != nil {
		return "", err
	}
	return u.machine.addr, nil
}

// UnitRoot returns the filesystem root of a unit's machine (JUJU_SIM_ROOT).
func (m *Model) UnitRoot(unitName string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(unitName)
	if err != nil {
		return "", err
	}
	return u.machine.root, nil
}

// Leader returns the leader unit of an application.
func (m *Model) Leader(app string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.apps[app]; ok {
		return a.leader
	}
	return ""
}

// RelationData returns the committed data of a unit or application bag in a relation.
func (m *Model) RelationData(relID int, unitOrApp string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.relations[relID]
	if !ok {
		return nil, fmt.Errorf("relation %d not found", relID)
	}
	if b, ok := r.apps[unitOrApp]; ok {
		return maps.Clone(b.data), nil
	}
	if ru, ok := r.units[unitOrApp]; ok {
		return maps.Clone(ru.bag.data), nil
	}
	return nil, fmt.Errorf("no data for %q in relation %d", unitOrApp, relID)
}

// RelationID returns the id of the live relation between two "app[:endpoint]" specs.
func (m *Model) RelationID(a, b string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	eps, err := m.inferEndpointsLocked(a, b)
	if err != nil {
		return 0, err
	}
	key := relationKey(eps)
	for _, r := range m.relations {
		if relationKey(r.eps) == key && !r.dying {
			return r.id, nil
		}
	}
	return 0, fmt.Errorf("relation %s %s not found", a, b)
}

// UnitState returns a unit's committed charm state (state-set).
func (m *Model) UnitState(unitName string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(unitName)
	if err != nil {
		return nil, err
	}
	return maps.Clone(u.state), nil
}

// LeaderSettings returns an application's leader settings (leader-set).
func (m *Model) LeaderSettings(app string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.apps[app]; ok {
		return maps.Clone(a.leaderData)
	}
	return nil
}

func newUUID() string {
	b := make([]byte, 16)
	crand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	crand.Read(b)
	return hex.EncodeToString(b)
}

// modelSeed picks the seed: the option, else JUJUSIM_SEED, else a random one.
func modelSeed(opt int64) (int64, error) {
	if opt != 0 {
		return opt, nil
	}
	if v := os.Getenv("JUJUSIM_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("cannot create model: JUJUSIM_SEED=%q is not a non-zero integer", v)
		}
		return n, nil
	}
	for {
		if n := rand.Int64(); n != 0 {
			return n, nil
		}
	}
}

// Seed returns the seed of the model's random choices; pass it as Options.Seed or JUJUSIM_SEED
// to replay a run.
func (m *Model) Seed() int64 { return m.seed }

// newRand returns the random source of one application or unit: the model seed and the name
// alone fix its choices, whatever order the agents run in.
func (m *Model) newRand(name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(uint64(m.seed), h.Sum64()))
}
