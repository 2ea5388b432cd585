package jujusim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// systemd is the service manager of one machine: it reads unit files under the machine root
// (<root>/etc/systemd/system/*.service) and runs their ExecStart as real processes.
type systemd struct {
	mc     *machine
	logf   func(level, msg string)
	notify func() // tells the model a service changed state; never called with mu held
	mu     sync.Mutex
	units  map[string]*svcUnit // loaded definitions; daemon-reload rereads them
	procs  map[string]*svcProc
}

type svcUnit struct {
	name       string
	path       string
	raw        []byte
	execStart  []string
	execReload []string
	env        []string
	envFiles   []string
	workDir    string
	user       string
	restart    string
	restartSec time.Duration
}

type svcProc struct {
	state    string // active, activating (waiting to restart), failed, inactive
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
	starts   []time.Time
	result   string
	timer    *time.Timer
}

func newSystemd(mc *machine, logf func(level, msg string), notify func()) *systemd {
	return &systemd{mc: mc, logf: logf, notify: notify, units: map[string]*svcUnit{}, procs: map[string]*svcProc{}}
}

func (sd *systemd) unitDir() string { return filepath.Join(sd.mc.root, "etc/systemd/system") }

func serviceName(s string) string {
	if strings.Contains(s, ".") {
		return s
	}
	return s + ".service"
}

// systemctl runs the systemctl stand-in for the machine of the calling context.
func (m *Model) systemctl(req Request) Response {
	m.mu.Lock()
	c, ok := m.contexts[req.ContextID]
	m.mu.Unlock()
	if !ok {
		return Response{Code: 1, Stderr: []byte("System has not been booted with systemd as init system (PID 1). Can't operate.\n")}
	}
	var stdout, stderr bytes.Buffer
	code := c.unit.machine.sd.run(req.Args, &stdout, &stderr)
	return Response{Code: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
}

func (sd *systemd) run(args []string, stdout, stderr *bytes.Buffer) int {
	var quiet, now bool
	var pos []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-q" || a == "--quiet":
			quiet = true
		case a == "--now":
			now = true
		case a == "-n" || a == "--lines" || a == "-p" || a == "--property":
			i++
		case strings.HasPrefix(a, "-"):
			// --no-pager, --no-block, --system, -l and the like change nothing here.
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "Too few arguments.")
		return 1
	}
	verb, names := pos[0], pos[1:]
	for i, n := range names {
		names[i] = serviceName(n)
	}
	needUnits := func() bool {
		if len(names) == 0 {
			fmt.Fprintf(stderr, "Too few arguments.\n")
			return false
		}
		return true
	}
	code := 0
	switch verb {
	case "daemon-reload":
		sd.mu.Lock()
		clear(sd.units)
		sd.mu.Unlock()
		return 0
	case "start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "try-reload-or-restart":
		if !needUnits() {
			return 1
		}
		for _, n := range names {
			if err := sd.do(verb, n, stderr); err != nil {
				fmt.Fprintln(stderr, err)
				code = 5
				if !strings.Contains(err.Error(), "not found") {
					code = 1
				}
			}
		}
		return code
	case "enable", "disable":
		if !needUnits() {
			return 1
		}
		for _, n := range names {
			if err := sd.enable(n, verb == "enable", stderr); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			if now {
				v := "start"
				if verb == "disable" {
					v = "stop"
				}
				if err := sd.do(v, n, stderr); err != nil {
					fmt.Fprintln(stderr, err)
					return 1
				}
			}
		}
		return 0
	case "is-active", "is-failed":
		if !needUnits() {
			return 1
		}
		code = 3
		if verb == "is-failed" {
			code = 1
		}
		all := true
		for _, n := range names {
			st := sd.state(n)
			if !quiet {
				fmt.Fprintln(stdout, st)
			}
			if verb == "is-active" && st != "active" || verb == "is-failed" && st != "failed" {
				all = false
			}
		}
		if all {
			return 0
		}
		return code
	case "is-enabled":
		if !needUnits() {
			return 1
		}
		all := true
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(sd.unitDir(), n)); err != nil {
				fmt.Fprintf(stderr, "Failed to get unit file state for %s: No such file or directory\n", n)
				return 1
			}
			st := "disabled"
			if sd.isEnabled(n) {
				st = "enabled"
			} else {
				all = false
			}
			if !quiet {
				fmt.Fprintln(stdout, st)
			}
		}
		if all {
			return 0
		}
		return 1
	case "status":
		if !needUnits() {
			return 1
		}
		for _, n := range names {
			u, err := sd.load(n)
			if err != nil {
				fmt.Fprintf(stderr, "Unit %s could not be found.\n", n)
				return 4
			}
			st := sd.state(n)
			enabled := "disabled"
			if sd.isEnabled(n) {
				enabled = "enabled"
			}
			fmt.Fprintf(stdout, "● %s\n     Loaded: loaded (%s; %s)\n     Active: %s\n", n, u.path, enabled, st)
			if pid := sd.mainPID(n); pid > 0 {
				fmt.Fprintf(stdout, "   Main PID: %d\n", pid)
			}
			if st != "active" {
				code = 3
			}
		}
		return code
	case "show":
		for _, n := range names {
			fmt.Fprintf(stdout, "MainPID=%d\nActiveState=%s\n", sd.mainPID(n), sd.state(n))
		}
		return 0
	case "mask", "unmask", "reset-failed":
		return 0
	}
	fmt.Fprintf(stderr, "Unknown command verb %s.\n", verb)
	return 1
}

func (sd *systemd) isEnabled(name string) bool {
	_, err := os.Lstat(filepath.Join(sd.unitDir(), "multi-user.target.wants", name))
	return err == nil
}

func (sd *systemd) enable(name string, on bool, stderr *bytes.Buffer) error {
	path := filepath.Join(sd.unitDir(), name)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("Failed to %s unit: Unit file %s does not exist.", map[bool]string{true: "enable", false: "disable"}[on], name)
	}
	wants := filepath.Join(sd.unitDir(), "multi-user.target.wants")
	link := filepath.Join(wants, name)
	if on {
		if sd.isEnabled(name) {
			return nil
		}
		if err := os.MkdirAll(wants, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Created symlink /etc/systemd/system/multi-user.target.wants/%s → /etc/systemd/system/%s.\n", name, name)
		return os.Symlink(path, link)
	}
	if sd.isEnabled(name) {
		fmt.Fprintf(stderr, "Removed \"/etc/systemd/system/multi-user.target.wants/%s\".\n", name)
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (sd *systemd) state(name string) string {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if p, ok := sd.procs[name]; ok {
		return p.state
	}
	return "inactive"
}

func (sd *systemd) mainPID(name string) int {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if p, ok := sd.procs[name]; ok && p.state == "active" && p.cmd != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// load returns the cached unit definition, reading it on first use. Like systemd, a file
// changed on disk is not seen until daemon-reload.
func (sd *systemd) load(name string) (*svcUnit, error) {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return sd.loadLocked(name, nil)
}

func (sd *systemd) loadLocked(name string, stderr *bytes.Buffer) (*svcUnit, error) {
	path := filepath.Join(sd.unitDir(), name)
	raw, err := os.ReadFile(path)
	if err != nil {
		if u, ok := sd.units[name]; ok {
			return u, nil
		}
		return nil, fmt.Errorf("Unit %s not found.", name)
	}
	if u, ok := sd.units[name]; ok {
		if !bytes.Equal(u.raw, raw) && stderr != nil {
			fmt.Fprintf(stderr, "Warning: The unit file, source configuration file or drop-ins of %s changed on disk. Run 'systemctl daemon-reload' to reload units.\n", name)
		}
		return u, nil
	}
	u, err := parseUnit(name, path, raw)
	if err != nil {
		return nil, err
	}
	sd.units[name] = u
	return u, nil
}

func parseUnit(name, path string, raw []byte) (*svcUnit, error) {
	u := &svcUnit{name: name, path: path, raw: raw, restart: "no", restartSec: 100 * time.Millisecond}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			continue
		}
		if section != "Service" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "ExecStart":
			u.execStart = splitCommand(strings.TrimLeft(v, "-@+!:"))
		case "ExecReload":
			u.execReload = splitCommand(strings.TrimLeft(v, "-@+!:"))
		case "Environment":
			u.env = append(u.env, splitCommand(v)...)
		case "EnvironmentFile":
			u.envFiles = append(u.envFiles, v)
		case "WorkingDirectory":
			u.workDir = v
		case "User":
			u.user = v
		case "Restart":
			u.restart = v
		case "RestartSec":
			d, err := time.ParseDuration(v)
			if err != nil {
				if n, err2 := strconv.ParseFloat(v, 64); err2 == nil {
					d, err = time.Duration(n*float64(time.Second)), nil
				}
			}
			if err == nil {
				u.restartSec = d
			}
		}
	}
	if len(u.execStart) == 0 {
		return nil, fmt.Errorf("Unit %s has a bad unit file setting: no ExecStart=.", name)
	}
	return u, nil
}

// splitCommand splits a unit file command line with systemd's quoting (double and single
// quotes, backslash escapes).
func splitCommand(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteRune(c)
			}
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// hostPath resolves an absolute path from a unit file under the machine root when it exists
// there, else on the host (system binaries such as /usr/sbin/haproxy).
func (sd *systemd) hostPath(p string) string {
	if !filepath.IsAbs(p) || strings.HasPrefix(p, sd.mc.root+"/") {
		return p
	}
	if _, err := os.Stat(filepath.Join(sd.mc.root, p)); err == nil {
		return filepath.Join(sd.mc.root, p)
	}
	return p
}

func (sd *systemd) do(verb, name string, stderr *bytes.Buffer) error {
	switch verb {
	case "start":
		return sd.start(name, stderr)
	case "stop":
		sd.stop(name)
		return nil
	case "restart":
		if _, err := sd.load(name); err != nil {
			return fmt.Errorf("Failed to restart %s: %w", name, err)
		}
		sd.stop(name)
		return sd.start(name, stderr)
	case "try-restart":
		if sd.state(name) != "active" {
			return nil
		}
		sd.stop(name)
		return sd.start(name, stderr)
	case "reload", "reload-or-restart", "try-reload-or-restart":
		if verb == "try-reload-or-restart" && sd.state(name) != "active" {
			return nil
		}
		u, err := sd.load(name)
		if err != nil {
			return fmt.Errorf("Failed to reload %s: %w", name, err)
		}
		if sd.state(name) != "active" {
			if verb == "reload" {
				return fmt.Errorf("Failed to reload %s: Job type reload is not applicable for unit %s.", name, name)
			}
			return sd.start(name, stderr)
		}
		if len(u.execReload) == 0 {
			if verb == "reload" {
				return fmt.Errorf("Failed to reload %s: Job type reload is not applicable for unit %s.", name, name)
			}
			sd.stop(name)
			return sd.start(name, stderr)
		}
		return sd.reload(u)
	}
	return nil
}

func (sd *systemd) reload(u *svcUnit) error {
	pid := strconv.Itoa(sd.mainPID(u.name))
	argv := slices.Clone(u.execReload)
	for i, a := range argv {
		argv[i] = strings.ReplaceAll(strings.ReplaceAll(a, "${MAINPID}", pid), "$MAINPID", pid)
	}
	out, err := exec.Command(sd.hostPath(argv[0]), argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("Job for %s failed: %s: %v", u.name, strings.TrimSpace(string(out)), err)
	}
	sd.logf("INFO", "Reloaded "+u.name)
	return nil
}

func (sd *systemd) start(name string, stderr *bytes.Buffer) error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	u, err := sd.loadLocked(name, stderr)
	if err != nil {
		return fmt.Errorf("Failed to start %s: %w", name, err)
	}
	if p, ok := sd.procs[name]; ok && (p.state == "active" || p.state == "activating") {
		return nil
	}
	p := &svcProc{}
	if old, ok := sd.procs[name]; ok {
		p.starts = old.starts
	}
	sd.procs[name] = p
	if err := sd.spawnLocked(u, p); err != nil {
		p.state = "failed"
		return fmt.Errorf("Job for %s failed because the control process exited with error code: %v", name, err)
	}
	return nil
}

func (sd *systemd) spawnLocked(u *svcUnit, p *svcProc) error {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	for _, f := range u.envFiles {
		optional := strings.HasPrefix(f, "-")
		data, err := os.ReadFile(sd.hostPath(strings.TrimPrefix(f, "-")))
		if err != nil {
			if optional {
				continue
			}
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && line[0] != '#' && strings.Contains(line, "=") {
				k, v, _ := strings.Cut(line, "=")
				env = append(env, k+"="+strings.Trim(v, `"'`))
			}
		}
	}
	env = append(env, u.env...)
	cmd := exec.Command(sd.hostPath(u.execStart[0]), u.execStart[1:]...)
	cmd.Env = env
	cmd.Dir = sd.mc.root
	if u.workDir != "" {
		cmd.Dir = sd.hostPath(u.workDir)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if u.user != "" && u.user != "root" && os.Geteuid() == 0 {
		usr, err := user.Lookup(u.user)
		if err != nil {
			return err
		}
		uid, _ := strconv.Atoi(usr.Uid)
		gid, _ := strconv.Atoi(usr.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		cmd.Env = append(cmd.Env, "HOME="+usr.HomeDir, "USER="+u.user)
	}
	logDir := filepath.Join(sd.mc.root, "var/log/jujusim")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, u.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	p.cmd, p.state, p.done, p.stopping = cmd, "active", done, false
	p.starts = append(p.starts, time.Now())
	sd.logf("INFO", fmt.Sprintf("Started %s (pid %d)", u.name, cmd.Process.Pid))
	go sd.reap(u, p, cmd, logf, done)
	go sd.notify()
	return nil
}

// reap waits for a service process and applies its Restart= policy.
func (sd *systemd) reap(u *svcUnit, p *svcProc, cmd *exec.Cmd, logf *os.File, done chan struct{}) {
	err := cmd.Wait()
	logf.Close()
	// Kill leftovers of the process group (workers of a master process).
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	defer sd.notify()
	sd.mu.Lock()
	defer sd.mu.Unlock()
	defer close(done)
	if p.cmd != cmd {
		return
	}
	if p.stopping {
		p.state = "inactive"
		return
	}
	failed := err != nil
	sd.logf("WARNING", fmt.Sprintf("%s exited: %v", u.name, err))
	restart := u.restart == "always" || (u.restart == "on-failure" || u.restart == "on-abnormal") && failed
	if !restart {
		p.state = map[bool]string{true: "failed", false: "inactive"}[failed]
		return
	}
	// StartLimitBurst=5 within StartLimitIntervalSec=10s, as systemd's defaults.
	recent := 0
	for _, t := range p.starts {
		if time.Since(t) < 10*time.Second {
			recent++
		}
	}
	if recent >= 5 {
		p.state = "failed"
		sd.logf("ERROR", u.name+": start request repeated too quickly")
		return
	}
	p.state = "activating"
	p.timer = time.AfterFunc(u.restartSec, func() {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		if sd.procs[u.name] != p || p.state != "activating" {
			return
		}
		if err := sd.spawnLocked(u, p); err != nil {
			p.state = "failed"
			sd.logf("ERROR", fmt.Sprintf("cannot restart %s: %v", u.name, err))
		}
	})
}

// stop terminates a service: SIGTERM to its process group, SIGKILL after 10 seconds.
func (sd *systemd) stop(name string) {
	sd.mu.Lock()
	p, ok := sd.procs[name]
	if !ok {
		sd.mu.Unlock()
		return
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.state != "active" {
		p.state = "inactive"
		sd.mu.Unlock()
		sd.notify()
		return
	}
	p.stopping = true
	cmd, done := p.cmd, p.done
	sd.mu.Unlock()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	sd.logf("INFO", "Stopped "+name)
}

// stopAll stops every service of the machine (machine removal, model close).
func (sd *systemd) stopAll() {
	sd.mu.Lock()
	names := make([]string, 0, len(sd.procs))
	for n := range sd.procs {
		names = append(names, n)
	}
	sd.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { sd.stop(n) })
	}
	wg.Wait()
}

// ServiceState reports a service's state on a unit's machine: active, activating, failed or
// inactive.
func (m *Model) ServiceState(unitName, service string) (string, error) {
	m.mu.Lock()
	u, err := m.resolveUnitLocked(unitName)
	m.mu.Unlock()
	if err != nil {
		return "", err
	}
	return u.machine.sd.state(serviceName(service)), nil
}

// WaitService blocks until cond holds for a service's state and main PID.
func (m *Model) WaitService(ctx context.Context, unitName, service string, cond func(state string, pid int) bool) error {
	m.mu.Lock()
	u, err := m.resolveUnitLocked(unitName)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	sd, name := u.machine.sd, serviceName(service)
	return m.waitLocked(ctx, func() bool { return cond(sd.state(name), sd.mainPID(name)) })
}

// ServicePID returns the main PID of an active service, or 0.
func (m *Model) ServicePID(unitName, service string) (int, error) {
	m.mu.Lock()
	u, err := m.resolveUnitLocked(unitName)
	m.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return u.machine.sd.mainPID(serviceName(service)), nil
}
