package jujusim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// hookContext is what the hook tools of one running hook, action or exec see: who is running,
// why, and the changes buffered until the process exits 0.
type hookContext struct {
	id         string
	unit       *unit
	op         *op
	hook       string
	relID      int // -1 outside relation hooks
	remoteUnit string
	remoteApp  string
	departing  string
	action     *Action

	pendingUnit  map[int]map[string]string // "" deletes
	pendingApp   map[int]map[string]string
	pendingPorts []portChange
	pendingState map[string]*string // nil deletes
	stateLoaded  map[string]string
	secrets      *pendingSecrets
}

type portChange struct {
	open bool
	port string
}

func (m *Model) newContextLocked(u *unit, o *op) *hookContext {
	what := "exec"
	if o != nil {
		what = strings.ReplaceAll(o.hookName(), " ", "-")
	}
	c := &hookContext{
		id:           u.name + "-" + what + "-" + randomHex(8),
		unit:         u,
		op:           o,
		relID:        -1,
		pendingUnit:  map[int]map[string]string{},
		pendingApp:   map[int]map[string]string{},
		pendingState: map[string]*string{},
	}
	if o != nil {
		if o.kind != opAction {
			c.hook = o.hookName()
		}
		c.action = o.action
		if o.isRelation() {
			c.relID, c.remoteUnit, c.remoteApp, c.departing = o.relID, o.remoteUnit, o.remoteApp, o.departing
		}
	}
	m.contexts[c.id] = c
	return c
}

// env builds the hook's environment from scratch, as Juju's HookVars does.
func (m *Model) envLocked(c *hookContext) []string {
	u := c.unit
	dispatch := "hooks/" + c.hook
	if c.action != nil {
		dispatch = "actions/" + c.action.Name
	}
	sysPath := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	env := []string{
		"CHARM_DIR=" + u.charmDir,
		"JUJU_CHARM_DIR=" + u.charmDir,
		"JUJU_CONTEXT_ID=" + c.id,
		"JUJU_HOOK_NAME=" + c.hook,
		"JUJU_DISPATCH_PATH=" + dispatch,
		"JUJU_AGENT_SOCKET_ADDRESS=" + m.sock,
		"JUJU_AGENT_SOCKET_NETWORK=unix",
		"JUJU_UNIT_NAME=" + u.name,
		"JUJU_MODEL_UUID=" + m.uuid,
		"JUJU_MODEL_NAME=" + m.name,
		"JUJU_API_ADDRESSES=127.0.0.1:17070",
		"JUJU_MACHINE_ID=" + u.machine.id,
		"JUJU_PRINCIPAL_UNIT=" + u.principal,
		"JUJU_AVAILABILITY_ZONE=",
		"JUJU_VERSION=" + jujuVersion,
		"CLOUD_API_VERSION=",
		"JUJU_SLA=unsupported",
		"JUJU_CHARM_HTTP_PROXY=",
		"JUJU_CHARM_HTTPS_PROXY=",
		"JUJU_CHARM_FTP_PROXY=",
		"JUJU_CHARM_NO_PROXY=127.0.0.1,localhost,::1",
		"PATH=" + u.toolsDir + ":" + u.machine.binDir + ":" + sysPath,
		"APT_LISTCHANGES_FRONTEND=none",
		"DEBIAN_FRONTEND=noninteractive",
		"LANG=C.UTF-8",
		"TERM=tmux-256color",
		"JUJU_SIM_ROOT=" + u.machine.root,
	}
	if c.op != nil && c.op.isRelation() {
		env = append(env,
			"JUJU_RELATION="+c.op.endpoint,
			"JUJU_RELATION_ID="+c.op.endpoint+":"+strconv.Itoa(c.relID),
			"JUJU_REMOTE_APP="+c.remoteApp,
			"JUJU_REMOTE_UNIT="+c.remoteUnit,
		)
		if c.op.kind == opRelationDeparted {
			env = append(env, "JUJU_DEPARTING_UNIT="+c.departing)
		}
	}
	if c.action != nil {
		env = append(env,
			"JUJU_ACTION_NAME="+c.action.Name,
			"JUJU_ACTION_UUID="+c.action.ID,
			"JUJU_ACTION_TAG=action-"+c.action.ID,
		)
	}
	env = append(env, secretEnv(c.op)...)
	// Race-enabled tool binaries (a test binary under -race) would otherwise sleep 1s at exit.
	env = append(env, "GORACE=atexit_sleep_ms=0")
	return append(env, m.opts.ExtraEnv...)
}

// jujuVersion is the agent version reported to charms.
const jujuVersion = "3.6.4"

// execOp runs one op on its unit (the machine lock is held) and records the outcome.
func (m *Model) execOp(u *unit, o *op) {
	if o.kind == opDeployCharm {
		m.deployCharm(u, o)
		return
	}
	if o.silent {
		m.mu.Lock()
		m.applyOpLocked(u, o)
		u.running = false
		m.notifyLocked()
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	c := m.newContextLocked(u, o)
	env := m.envLocked(c)
	name := o.hookName()
	u.agent = StatusInfo{Current: "executing", Message: "running " + name + " hook", Since: time.Now()}
	if o.kind == opAction {
		u.agent.Message = "running action " + o.action.Name
		o.action.status, o.action.started = "running", time.Now()
	}
	if o.kind == opInstall && u.workload.Current == "waiting" {
		u.workload = StatusInfo{Current: "maintenance", Message: "installing charm software", Since: time.Now()}
	}
	m.notifyLocked()
	m.mu.Unlock()

	path, args := m.handler(u, c)
	var code int
	var stdout, stderr []byte
	var runErr error
	if path == "" {
		m.logf(u.name, "INFO", "skipped %q hook (missing)", name)
		if o.kind == opAction {
			code, runErr = 1, fmt.Errorf("action not implemented on unit %q", u.name)
		}
	}
	start := time.Now()
	if path != "" {
		code, stdout, stderr, runErr = m.runProcess(u, path, args, env)
	}
	took := time.Since(start)

	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.contexts, c.id)
	u.running = false
	rec := HookRecord{Unit: u.name, Hook: name, RemoteUnit: c.remoteUnit, RemoteApp: c.remoteApp, Departing: c.departing, ExitCode: code, Start: start, Duration: took}
	if o.kind == opAction {
		rec.Hook = "action:" + o.action.Name
	}
	if c.relID >= 0 {
		rec.RelationID = o.endpoint + ":" + strconv.Itoa(c.relID)
	}
	m.history = append(m.history, rec)
	for _, line := range splitLines(stdout) {
		m.logLocked(u.name, "DEBUG", name+": "+line)
	}
	for _, line := range splitLines(stderr) {
		m.logLocked(u.name, "WARNING", name+": "+line)
	}
	u.agent = StatusInfo{Current: "idle", Since: time.Now()}
	if o.kind == opAction {
		if code == 0 && runErr == nil {
			m.commitLocked(c)
		}
		m.finishActionLocked(o.action, code, runErr, stdout, stderr)
		if u.failed != nil {
			u.agent = StatusInfo{Current: "error", Message: fmt.Sprintf("hook failed: %q", u.failed.hookName()), Since: time.Now()}
		}
		m.notifyLocked()
		return
	}
	if code != 0 || runErr != nil {
		msg := fmt.Sprintf("hook failed: %q", name)
		u.failed = o
		u.agent = StatusInfo{Current: "error", Message: msg, Since: time.Now()}
		detail := ""
		if runErr != nil {
			detail = ": " + runErr.Error()
		}
		m.logLocked(u.name, "ERROR", fmt.Sprintf("%s (exit status %d)%s", msg, code, detail))
		m.startRetryLocked(u)
		m.notifyLocked()
		return
	}
	if u.failed == o {
		u.failed = nil
	}
	m.stopRetryLocked(u, true)
	m.commitLocked(c)
	m.applyOpLocked(u, o)
	m.notifyLocked()
}

// deployCharm is the upgrade step of a unit agent, between hooks: the files of the old charm
// are replaced by the new charm's, what the charm wrote itself in its directory is kept.
func (m *Model) deployCharm(u *unit, o *op) {
	m.mu.Lock()
	old := u.archive
	u.agent = StatusInfo{Current: "executing", Message: "upgrading charm", Since: time.Now()}
	m.notifyLocked()
	m.mu.Unlock()
	err := replaceCharm(old, o.archive, u.charmDir)
	m.mu.Lock()
	defer m.mu.Unlock()
	u.running = false
	u.agent = StatusInfo{Current: "idle", Since: time.Now()}
	if err != nil {
		u.failed = o
		u.agent = StatusInfo{Current: "error", Message: "upgrade failed", Since: time.Now()}
		m.logLocked(u.name, "ERROR", "cannot upgrade charm: "+err.Error())
		m.startRetryLocked(u)
		m.notifyLocked()
		return
	}
	if u.failed == o {
		u.failed = nil
	}
	m.stopRetryLocked(u, true)
	m.logLocked(u.name, "INFO", fmt.Sprintf("charm upgraded to generation %d", o.version))
	m.applyOpLocked(u, o)
	m.notifyLocked()
}

// handler finds what to execute: dispatch if present, else hooks/<name> or actions/<name>.
func (m *Model) handler(u *unit, c *hookContext) (string, []string) {
	if p := filepath.Join(u.charmDir, "dispatch"); isExecutable(p) {
		return p, nil
	}
	rel := filepath.Join("hooks", c.hook)
	if c.action != nil {
		rel = filepath.Join("actions", c.action.Name)
	}
	if p := filepath.Join(u.charmDir, rel); isExecutable(p) {
		return p, nil
	}
	return "", nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// runProcess runs a hook process with cwd = charm dir and returns its exit code and output.
func (m *Model) runProcess(u *unit, path string, args, env []string) (int, []byte, []byte, error) {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.HookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = u.charmDir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return 0, stdout.Bytes(), stderr.Bytes(), nil
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code := ee.ExitCode()
		if code < 0 {
			return 1, stdout.Bytes(), stderr.Bytes(), errors.New("terminated")
		}
		return code, stdout.Bytes(), stderr.Bytes(), nil
	}
	return 1, stdout.Bytes(), stderr.Bytes(), fmt.Errorf("cannot run %s: %w", path, err)
}

func splitLines(b []byte) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// commitLocked applies the buffered changes of a context whose process exited 0.
func (m *Model) commitLocked(c *hookContext) {
	u := c.unit
	for id, changes := range c.pendingUnit {
		r := m.relations[id]
		if r == nil {
			continue
		}
		if applyChanges(m.relUnitLocked(r, u).bag, changes) {
			m.logLocked(u.name, "DEBUG", fmt.Sprintf("committed unit settings in relation %d", id))
		}
	}
	for id, changes := range c.pendingApp {
		r := m.relations[id]
		if r == nil {
			continue
		}
		// On a peer relation the writer (the leader) gets relation-changed for its own
		// application data too: Juju 3.6 watches the application bag of the relation's other
		// side, which for peers is its own (juju/juju#20178, documented, kept).
		applyChanges(r.apps[u.app], changes)
	}
	for _, pc := range c.pendingPorts {
		if pc.open {
			u.ports[pc.port] = true
		} else {
			delete(u.ports, pc.port)
		}
	}
	for k, v := range c.pendingState {
		if v == nil {
			delete(u.state, k)
		} else {
			u.state[k] = *v
		}
	}
	m.commitSecretsLocked(c)
}

// applyChanges merges changes into b and bumps its version if anything changed.
func applyChanges(b *bag, changes map[string]string) bool {
	before := maps.Clone(b.data)
	for k, v := range changes {
		if v == "" {
			delete(b.data, k)
		} else {
			b.data[k] = v
		}
	}
	if maps.Equal(before, b.data) {
		return false
	}
	b.version++
	return true
}

// Action is an action queued on or run by a unit.
type Action struct {
	ID     string
	Unit   string
	Name   string
	Params map[string]any

	// Guarded by the model lock.
	status    string
	message   string
	results   map[string]any
	failed    bool
	logs      []string
	stdout    string
	stderr    string
	code      int
	enqueued  time.Time
	started   time.Time
	completed time.Time
	done      chan struct{}
	m         *Model
}

// ActionResult is a snapshot of an action, shaped like `juju show-task`.
type ActionResult struct {
	ID         string         `json:"id" yaml:"id"`
	Unit       string         `json:"unit" yaml:"unit"`
	Name       string         `json:"name" yaml:"name"`
	Status     string         `json:"status" yaml:"status"`
	Message    string         `json:"message,omitempty" yaml:"message,omitempty"`
	Results    map[string]any `json:"results,omitempty" yaml:"results,omitempty"`
	Log        []string       `json:"log,omitempty" yaml:"log,omitempty"`
	Stdout     string         `json:"stdout,omitempty" yaml:"stdout,omitempty"`
	Stderr     string         `json:"stderr,omitempty" yaml:"stderr,omitempty"`
	ReturnCode int            `json:"return-code" yaml:"return-code"`
	Enqueued   time.Time      `json:"enqueued" yaml:"enqueued"`
	Started    time.Time      `json:"started" yaml:"started"`
	Completed  time.Time      `json:"completed" yaml:"completed"`
}

// RunAction validates params against actions.yaml (inserting schema defaults) and queues the
// action on a unit ("app/N" or "app/leader").
func (m *Model) RunAction(unitName, name string, params map[string]any) (*Action, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(unitName)
	if err != nil {
		return nil, fmt.Errorf("cannot run action: %w", err)
	}
	spec, ok := m.apps[u.app].ch.Actions().ActionSpecs[name]
	if !ok {
		return nil, fmt.Errorf("cannot run action: action %q not defined on unit %q", name, u.name)
	}
	if params == nil {
		params = map[string]any{}
	}
	if err := spec.ValidateParams(params); err != nil {
		return nil, fmt.Errorf("cannot run action %q: %w", name, err)
	}
	params, err = spec.InsertDefaults(params)
	if err != nil {
		return nil, fmt.Errorf("cannot run action %q: %w", name, err)
	}
	m.nextAction++
	a := &Action{
		ID: strconv.Itoa(m.nextAction), Unit: u.name, Name: name, Params: params,
		status: "pending", enqueued: time.Now(), done: make(chan struct{}), m: m,
	}
	m.actions[a.ID] = a
	u.actions = append(u.actions, a)
	m.notifyLocked()
	return a, nil
}

// Action returns a queued or finished action by id.
func (m *Model) Action(id string) (*Action, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.actions[id]
	if !ok {
		return nil, fmt.Errorf("action %q not found", id)
	}
	return a, nil
}

// Wait blocks until the action has finished and returns its result.
func (a *Action) Wait(ctx context.Context) (ActionResult, error) {
	select {
	case <-a.done:
		return a.Result(), nil
	case <-ctx.Done():
		return a.Result(), fmt.Errorf("cannot wait for action %s: %w", a.ID, ctx.Err())
	}
}

// Done is closed when the action has finished.
func (a *Action) Done() <-chan struct{} { return a.done }

// Result returns a snapshot of the action.
func (a *Action) Result() ActionResult {
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	return ActionResult{
		ID: a.ID, Unit: a.Unit, Name: a.Name, Status: a.status, Message: a.message,
		Results: deepCopy(a.results), Log: slices.Clone(a.logs), Stdout: a.stdout, Stderr: a.stderr,
		ReturnCode: a.code, Enqueued: a.enqueued, Started: a.started, Completed: a.completed,
	}
}

func (m *Model) finishActionLocked(a *Action, code int, runErr error, stdout, stderr []byte) {
	a.code = code
	a.stdout, a.stderr = encodeOutput(stdout), encodeOutput(stderr)
	a.completed = time.Now()
	switch {
	case runErr != nil:
		a.status, a.message = "failed", runErr.Error()
	case a.failed:
		a.status = "failed"
	case code != 0:
		a.status, a.message = "failed", fmt.Sprintf("exit status %d", code)
	default:
		a.status = "completed"
	}
	close(a.done)
}

func encodeOutput(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("%q", b)
}

func deepCopy(v map[string]any) map[string]any {
	if v == nil {
		return nil
	}
	out := make(map[string]any, len(v))
	for k, x := range v {
		if sub, ok := x.(map[string]any); ok {
			out[k] = deepCopy(sub)
		} else {
			out[k] = x
		}
	}
	return out
}

// ExecResult is the outcome of Exec.
type ExecResult struct {
	Code   int
	Stdout string
	Stderr string
}

// Exec runs a command on a unit's machine inside a hook context, as `juju exec` does: the hook
// tools, systemctl stand-in and JUJU_SIM_ROOT are available, under the machine lock.
func (m *Model) Exec(ctx context.Context, unitName string, argv ...string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, errors.New("cannot exec: no command")
	}
	m.mu.Lock()
	u, err := m.resolveUnitLocked(unitName)
	m.mu.Unlock()
	if err != nil {
		return ExecResult{}, fmt.Errorf("cannot exec: %w", err)
	}
	u.machine.lock.Lock()
	defer u.machine.lock.Unlock()
	m.mu.Lock()
	c := m.newContextLocked(u, nil)
	c.hook = ""
	env := m.envLocked(c)
	m.mu.Unlock()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	for _, e := range env {
		if p, ok := strings.CutPrefix(e, "PATH="); ok && !strings.Contains(argv[0], "/") {
			if lp, err := lookPath(argv[0], p); err == nil {
				cmd.Path = lp
				cmd.Err = nil
			}
		}
	}
	cmd.Dir = u.charmDir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.contexts, c.id)
	res := ExecResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if runErr != nil {
		ee, ok := errors.AsType[*exec.ExitError](runErr)
		if !ok {
			return res, fmt.Errorf("cannot exec: %w", runErr)
		}
		res.Code = ee.ExitCode()
		return res, nil
	}
	m.commitLocked(c)
	m.notifyLocked()
	return res, nil
}

func lookPath(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, file)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", file)
}
