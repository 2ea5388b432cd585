package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/tests/load"
)

// unit is a running livepatch-server process.
type unit struct {
	name  string
	addr  string
	pprof string // address of net/http/pprof when the unit is the lpserver build
	proc  *load.Process
}

// configPath returns where the config of a named unit is written.
func (b *bench) configPath(name string) string { return filepath.Join(b.work, name+".yaml") }

// writeUnitConfig renders the config of a unit listening on addr.
func (b *bench) writeUnitConfig(name, addr string, u load.Unit) (string, error) {
	u.Address = addr
	u.BasicUser = b.basicUser
	if u.PoolMax == 0 {
		u.PoolMax = b.pool
	}
	if b.dsnOptions != "" {
		u.DSN += "&options=" + url.QueryEscape(b.dsnOptions)
	}
	data, err := u.Render()
	if err != nil {
		return "", err
	}
	path := b.configPath(name)
	// The config holds the DSN: keep it from other users, as the charm does.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("cannot write %s: %w", path, err)
	}
	return path, nil
}

// schemaUpgrade runs livepatch-server schema upgrade --config for the database of u.
func (b *bench) schemaUpgrade(ctx context.Context, name string, u load.Unit) error {
	path, err := b.writeUnitConfig(name+"-schema", "127.0.0.1:1", u)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "livepatch-server"), "schema", "upgrade", "--config", path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot upgrade schema: %v\n%s", err, out)
	}
	b.logf("%s", out)
	return nil
}

// startUnit starts a livepatch-server unit on a free port of host (a 127.0.0.x address
// of its own) and waits until it answers. With b.pprofUnits it runs the lpserver build,
// the same server with net/http/pprof on a second port.
func (b *bench) startUnit(ctx context.Context, name, host string, u load.Unit) (*unit, error) {
	addr, err := load.FreeAddr(host)
	if err != nil {
		return nil, err
	}
	path, err := b.writeUnitConfig(name, addr, u)
	if err != nil {
		return nil, err
	}
	un := &unit{name: name, addr: addr}
	var cmd *exec.Cmd
	if b.pprofUnits {
		if un.pprof, err = load.FreeAddr(host); err != nil {
			return nil, err
		}
		cmd = exec.Command(filepath.Join(b.bin, "lpserver"), "--config", path, "--pprof", un.pprof)
	} else {
		cmd = exec.Command(filepath.Join(b.bin, "livepatch-server"), "serve", "--config", path)
	}
	if un.proc, err = b.g.Start(name, cmd, syscall.SIGTERM); err != nil {
		return nil, err
	}
	if err := load.WaitHTTP(ctx, un.proc, "http://"+addr+"/debug/info", time.Minute); err != nil {
		return nil, fmt.Errorf("cannot start unit %s: %w", name, err)
	}
	return un, nil
}

// startTrivial starts the ceiling's handler: fixed small JSON, no work.
func (b *bench) startTrivial(ctx context.Context, host string) (*unit, error) {
	addr, err := load.FreeAddr(host)
	if err != nil {
		return nil, err
	}
	p, err := b.g.Start("trivial", exec.Command(filepath.Join(b.bin, "lptrivial"), "--address", addr), syscall.SIGTERM)
	if err != nil {
		return nil, err
	}
	if err := load.WaitHTTP(ctx, p, "http://"+addr+"/debug/info", time.Minute); err != nil {
		return nil, fmt.Errorf("cannot start the trivial handler: %w", err)
	}
	return &unit{name: "trivial", addr: addr, proc: p}, nil
}

// startNginx starts nginx serving root under /patches/.
func (b *bench) startNginx(ctx context.Context, host, root string) (*unit, error) {
	addr, err := load.FreeAddr(host)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf, err := load.Nginx{Listen: addr, Root: root, Dir: dir}.Render()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return nil, err
	}
	p, err := b.g.Start("nginx", exec.Command(b.nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", path), syscall.SIGQUIT)
	if err != nil {
		return nil, err
	}
	if err := load.WaitHTTP(ctx, p, "http://"+addr+"/debug/info", time.Minute); err != nil {
		return nil, fmt.Errorf("cannot start nginx: %w", err)
	}
	return &unit{name: "nginx", addr: addr, proc: p}, nil
}

// proxy is a running haproxy and the URL of each of its frontends.
type proxy struct {
	proc *load.Process
	urls map[string]string
}

// startHAProxy renders the frontends into a config, checks it with haproxy -c, starts
// haproxy in the foreground and waits until every frontend answers through its servers.
func (b *bench) startHAProxy(ctx context.Context, name string, fronts []load.Frontend) (*proxy, error) {
	px := &proxy{urls: map[string]string{}}
	for i := range fronts {
		addr, err := load.FreeAddr(haproxyHost)
		if err != nil {
			return nil, err
		}
		fronts[i].Bind = addr
		px.urls[fronts[i].Name] = "http://" + addr
	}
	conf, err := load.HAProxy{MaxConn: 8192, ServerMaxConn: serverMaxConn, Frontends: fronts}.Render()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(b.work, name+".cfg")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, b.haproxy, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy refuses %s: %v\n%s", path, err, out)
	}
	// -db: stay in the foreground, so that the process group holds it.
	if px.proc, err = b.g.Start(name, exec.Command(b.haproxy, "-db", "-f", path), syscall.SIGTERM); err != nil {
		return nil, err
	}
	for _, f := range fronts {
		if err := load.WaitHTTP(ctx, px.proc, px.urls[f.Name]+"/debug/info", time.Minute); err != nil {
			return nil, fmt.Errorf("haproxy frontend %s: %w", f.Name, err)
		}
	}
	return px, nil
}

// stop stops the processes of a phase.
func (b *bench) stop(procs ...*load.Process) {
	for _, p := range procs {
		if p != nil {
			b.g.Stop(p, 15*time.Second)
		}
	}
}

// adminClient logs in through url and returns a client carrying the session token.
func (b *bench) adminClient(ctx context.Context, url string) (*client.Client, error) {
	c, err := client.New(url, client.WithHTTPClient(&http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{Proxy: nil}}))
	if err != nil {
		return nil, err
	}
	login, err := c.Login(ctx, adminUser, b.adminPass)
	if err != nil {
		return nil, fmt.Errorf("cannot log in: %w", err)
	}
	return c.WithToken(login.Token), nil
}
