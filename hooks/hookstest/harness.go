package hookstest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/juju/charm/v12"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Harness runs hooks and actions of one charm for one unit. Its filesystem root persists
// across runs, so a test can run install, then config-changed, and look at the files.
type Harness struct {
	// Charm is the charm under test.
	Charm hooks.Charm
	// Root is the unit's filesystem root (a temporary directory).
	Root string
	// CharmDir is JUJU_CHARM_DIR (a temporary directory; put bundled files in it).
	CharmDir string
	// System runs system commands; Commands is a convenient fake. nil runs nothing.
	System hooks.Runner
	// HTTP is the HTTP client of the hook; nil means http.DefaultClient.
	HTTP *http.Client
	// Now is the clock; nil means Clock.Now.
	Now func() time.Time
	// Clock is the fake clock of the hooks when Now is nil, and the timer of Context.After
	// always: a hook that waits advances it instead of sleeping. New starts it at a fixed time.
	Clock *Clock

	// Meta, Config and Actions describe the charm (see LoadCharm). When set, relations must
	// be on declared endpoints, config defaults fill State.Config and is validated, and action
	// parameters are validated and completed with defaults, as Juju does.
	Meta    *charm.Meta
	Config  *charm.Config
	Actions *charm.Actions
}

// New returns a harness for ch with fresh temporary directories.
func New(t testing.TB, ch hooks.Charm) *Harness {
	t.Helper()
	return &Harness{Charm: ch, Root: t.TempDir(), CharmDir: t.TempDir(), Clock: NewClock(fixedTime)}
}

// fixedTime is where the clocks of harnesses start.
var fixedTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a fake clock. After advances it by the duration asked and fires at once, so a
// hook that polls with a deadline runs through to its end without sleeping, and a test
// can read how much time the hook waited.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// After advances the clock by d and returns a channel that already holds the new time.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.Advance(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// LoadCharm reads metadata.yaml, config.yaml and actions.yaml of the charm source directory
// dir into the harness.
func (h *Harness) LoadCharm(t testing.TB, dir string) {
	t.Helper()
	cd, err := charm.ReadCharmDir(dir)
	if err != nil {
		t.Fatalf("cannot read charm %s: %v", dir, err)
	}
	h.Meta, h.Config, h.Actions = cd.Meta(), cd.Config(), cd.Actions()
}

// Result is the outcome of one hook or action run.
type Result struct {
	// State is the state after the run. Relation data and ports changed by a failed run are
	// discarded, as Juju does; status and logs are kept.
	State
	// Err is the hook error (the dispatch process would have exited non-zero).
	Err error
	// Commands are the system commands run, in order.
	Commands []hooks.Command
	// ToolCalls are the hook tool calls made, in order.
	ToolCalls []hooks.Command
	// ActionResults are the results set with action-set.
	ActionResults map[string]string
	// ActionFailed reports whether action-fail was called; ActionMessage is its message.
	ActionFailed  bool
	ActionMessage string
	// ActionLogs are the action-log messages.
	ActionLogs []string
}

// Run runs the hook named hook (such as "config-changed" or "db-relation-changed") on state.
// For a relation hook, the first relation on the hook's endpoint is the current relation and
// remoteUnit, if given, the remote unit.
func (h *Harness) Run(t testing.TB, hook string, state State, remoteUnit ...string) Result {
	t.Helper()
	env := map[string]string{
		"JUJU_DISPATCH_PATH": "hooks/" + hook,
		"JUJU_HOOK_NAME":     hook,
	}
	for _, kind := range []string{"-relation-created", "-relation-joined", "-relation-changed", "-relation-departed", "-relation-broken"} {
		endpoint, ok := strings.CutSuffix(hook, kind)
		if !ok {
			continue
		}
		env["JUJU_RELATION"] = endpoint
		env["JUJU_REMOTE_UNIT"] = ""
		if r := state.Relation(endpoint); r != nil {
			env["JUJU_RELATION_ID"] = r.RelID()
			env["JUJU_REMOTE_APP"] = r.RemoteApp
		}
		if len(remoteUnit) > 0 {
			env["JUJU_REMOTE_UNIT"] = remoteUnit[0]
		}
	}
	return h.run(t, state, env, nil)
}

// RunAction runs the action named action with params on state. As Juju does, it refuses
// (Result.Err) an action or parameters the charm's actions.yaml does not accept.
func (h *Harness) RunAction(t testing.TB, action string, params map[string]any, state State) Result {
	t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	if h.Actions != nil {
		spec, ok := h.Actions.ActionSpecs[action]
		if !ok {
			return Result{State: state, Err: fmt.Errorf("action %q not defined on unit %q", action, state.Unit)}
		}
		if err := spec.ValidateParams(params); err != nil {
			return Result{State: state, Err: fmt.Errorf("invalid parameters: %w", err)}
		}
		withDefaults, err := spec.InsertDefaults(params)
		if err != nil {
			return Result{State: state, Err: fmt.Errorf("cannot insert defaults: %w", err)}
		}
		params = withDefaults
	}
	env := map[string]string{
		"JUJU_DISPATCH_PATH": "actions/" + action,
		"JUJU_HOOK_NAME":     "",
		"JUJU_ACTION_NAME":   action,
		"JUJU_ACTION_UUID":   "1",
	}
	return h.run(t, state, env, params)
}

func (h *Harness) run(t testing.TB, in State, env map[string]string, params map[string]any) Result {
	t.Helper()
	st := in.Clone()
	if st.Unit == "" {
		st.Unit = "unit/0"
	}
	if st.Address == "" {
		st.Address = "192.0.2.10"
	}
	if st.ModelUUID == "" {
		st.ModelUUID = "00000000-0000-4000-8000-000000000000"
	}
	config, err := h.config(st.Config)
	if err != nil {
		t.Fatalf("invalid state: %v", err)
	}
	if h.Meta != nil {
		rels := h.Meta.CombinedRelations()
		for _, r := range st.Relations {
			if _, ok := rels[r.Endpoint]; !ok {
				t.Fatalf("invalid state: charm %q has no endpoint %q", h.Meta.Name, r.Endpoint)
			}
		}
	}
	tl := &tools{
		st:       &st,
		rels:     cloneRelations(st.Relations),
		ports:    slices.Clone(st.Ports),
		config:   config,
		meta:     h.Meta,
		inAction: params != nil,
		params:   params,
		results:  map[string]string{},
	}
	fullEnv := map[string]string{
		"JUJU_UNIT_NAME":  st.Unit,
		"JUJU_MODEL_UUID": st.ModelUUID,
		"JUJU_MODEL_NAME": "test",
		"JUJU_VERSION":    "3.6.4",
		"JUJU_CHARM_DIR":  h.CharmDir,
		"CHARM_DIR":       h.CharmDir,
	}
	maps.Copy(fullEnv, st.Env)
	maps.Copy(fullEnv, env)
	sys := &recorder{next: h.System}
	if h.Clock == nil {
		h.Clock = NewClock(fixedTime)
	}
	now := h.Now
	if now == nil {
		now = h.Clock.Now
	}
	client := h.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	c := &hooks.Context{
		Tools:  tl,
		System: sys,
		Root:   h.Root,
		Getenv: func(k string) string { return fullEnv[k] },
		Now:    now,
		After:  h.Clock.After,
		HTTP:   client,
	}
	runErr := hooks.Run(t.Context(), c, h.Charm, "dispatch")
	res := Result{
		State:     st,
		Err:       runErr,
		Commands:  sys.cmds,
		ToolCalls: tl.calls,
	}
	if runErr == nil {
		res.Relations = tl.rels
		res.Ports = tl.ports
	}
	if params != nil {
		res.ActionResults = tl.results
		res.ActionFailed = tl.failed
		res.ActionMessage = tl.failMsg
		res.ActionLogs = tl.actLogs
	}
	return res
}

// config returns the settings config-get reports: config.yaml defaults overlaid with set.
func (h *Harness) config(set map[string]any) (map[string]any, error) {
	if h.Config == nil {
		return maps.Clone(set), nil
	}
	settings := charm.Settings{}
	for k, v := range set {
		if i, ok := v.(int); ok {
			v = int64(i)
		}
		settings[k] = v
	}
	settings, err := h.Config.ValidateSettings(settings)
	if err != nil {
		return nil, err
	}
	out := map[string]any(h.Config.DefaultSettings())
	maps.Copy(out, settings)
	for k, v := range out {
		if v == nil {
			delete(out, k)
		}
	}
	return out, nil
}

// ReadFile returns the content of the machine file p under the harness root.
func (h *Harness) ReadFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.Root, p))
	if err != nil {
		t.Fatalf("cannot read %s: %v", p, err)
	}
	return string(b)
}

// WriteFile creates the machine file p under the harness root.
func (h *Harness) WriteFile(t testing.TB, p, content string, perm os.FileMode) {
	t.Helper()
	path := filepath.Join(h.Root, p)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// recorder records system commands and passes them on.
type recorder struct {
	mu   sync.Mutex
	next hooks.Runner
	cmds []hooks.Command
}

func (r *recorder) Run(ctx context.Context, cmd hooks.Command) ([]byte, error) {
	r.mu.Lock()
	r.cmds = append(r.cmds, hooks.Command{Name: cmd.Name, Args: slices.Clone(cmd.Args), Stdin: slices.Clone(cmd.Stdin), Env: slices.Clone(cmd.Env)})
	r.mu.Unlock()
	if r.next == nil {
		return nil, nil
	}
	return r.next.Run(ctx, cmd)
}

// Commands fakes system commands, keyed by the base name of the program ("systemctl",
// "livepatch-server"). A command without an entry is not found.
type Commands map[string]func(args []string, stdin []byte) ([]byte, error)

// Run runs the fake for cmd.
func (m Commands) Run(_ context.Context, cmd hooks.Command) ([]byte, error) {
	f := m[filepath.Base(cmd.Name)]
	if f == nil {
		return nil, fmt.Errorf("cannot run %s: %w", cmd.Name, exec.ErrNotFound)
	}
	return f(cmd.Args, cmd.Stdin)
}

// Exit returns the error of a command that exited with code and printed stderr.
func Exit(code int, stderr string) error {
	return &hooks.ExitError{Command: "fake", Code: code, Stderr: stderr}
}

// CommandLines returns the command lines of cmds with base program names
// ("systemctl restart x", "livepatch-server schema check ..."), for comparisons.
func CommandLines(cmds []hooks.Command) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, hooks.Command{Name: filepath.Base(c.Name), Args: c.Args}.String())
	}
	return out
}
