package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Group runs the processes of the benchmark stack and stops every one of them: each runs
// in its own process group (so its children go too) and receives SIGKILL if the harness
// itself dies (Pdeathsig). Output goes to <dir>/<name>.log.
type Group struct {
	dir   string
	mu    sync.Mutex
	procs []*Process
}

// NewGroup returns a group whose logs go to dir.
func NewGroup(dir string) *Group { return &Group{dir: dir} }

// Process is one running process of a Group.
type Process struct {
	Name string
	Log  string // path of its output
	cmd  *exec.Cmd
	stop syscall.Signal
	done chan struct{}
	err  error // set when done is closed
}

// Start starts cmd as name. stop is the signal that asks it to finish (SIGTERM for most,
// SIGQUIT for PostgreSQL's immediate shutdown); SIGKILL follows if it does not.
func (g *Group) Start(name string, cmd *exec.Cmd, stop syscall.Signal) (*Process, error) {
	logPath := filepath.Join(g.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, stop: stop, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns how the process ended; call it after Done is closed.
func (p *Process) Err() error { return p.err }

// Stop asks the process to finish, waits up to grace, then kills its whole group.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.Pid(), p.stop)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	// Whatever is left of the group (workers, backends) goes now.
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Stop stops one process and forgets it.
func (g *Group) Stop(p *Process, grace time.Duration) {
	p.Stop(grace)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs = slices.DeleteFunc(g.procs, func(q *Process) bool { return q == p })
}

// StopAll stops every process, the last started first.
func (g *Group) StopAll(grace time.Duration) {
	g.mu.Lock()
	procs := slices.Clone(g.procs)
	g.procs = nil
	g.mu.Unlock()
	slices.Reverse(procs)
	for _, p := range procs {
		p.Stop(grace)
	}
}

// exitedError says a process ended while it was waited for, with the tail of its log.
func exitedError(p *Process) error {
	return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.Name, p.Err(), p.Log, tail(p.Log, 2000))
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, 0)
	}
	b := make([]byte, n)
	m, _ := f.Read(b)
	return string(b[:m])
}

// WaitHTTP polls url until it answers 200, p exits (p may be nil) or timeout passes.
func WaitHTTP(ctx context.Context, p *Process, url string, timeout time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return poll(ctx, p, timeout, func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return nil
	})
}

// WaitTCP polls addr until it accepts a connection, p exits or timeout passes.
func WaitTCP(ctx context.Context, p *Process, addr string, timeout time.Duration) error {
	return poll(ctx, p, timeout, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// poll calls try every 50ms until it succeeds, p exits, ctx ends or timeout passes.
func poll(ctx context.Context, p *Process, timeout time.Duration, try func() error) error {
	deadline := time.Now().Add(timeout)
	var done <-chan struct{}
	if p != nil {
		done = p.Done()
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := try()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return exitedError(p)
		case <-t.C:
		}
	}
}

// FreePort returns a TCP port free a moment ago on host (a loopback address).
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr returns host:port with a port free a moment ago.
func FreeAddr(host string) (string, error) {
	port, err := FreePort(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, fmt.Sprint(port)), nil
}
