package livepatch

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// ServiceUser is the system user (and group) the server runs as; the install hook creates
// it. The server needs no privilege: it listens on an unprivileged port behind haproxy.
const ServiceUser = "livepatch"

// owner is a user and group id.
type owner struct{ uid, gid int }

// ensureServiceUser creates ServiceUser as a system user without a home or a login shell
// when it does not exist, and returns its ids. ok is false when the hook does not run as
// root: Juju runs hooks as root; a hook run by another user (the model emulator run
// unprivileged) can neither create users nor give files away, and its services then run as
// that user.
func ensureServiceUser(ctx context.Context, c *hooks.Context) (o owner, ok bool, err error) {
	out, err := c.System.Run(ctx, hooks.Command{Name: "id", Args: []string{"-u"}})
	if err != nil {
		return owner{}, false, fmt.Errorf("cannot run id -u: %w", err)
	}
	if strings.TrimSpace(string(out)) != "0" {
		return owner{}, false, nil
	}
	o, found, err := lookupServiceUser(ctx, c)
	if err != nil || found {
		return o, found, err
	}
	if _, err := c.System.Run(ctx, hooks.Command{Name: "useradd", Args: []string{
		"--system", "--user-group", "--home-dir", "/nonexistent", "--no-create-home",
		"--shell", "/usr/sbin/nologin", "--comment", "Livepatch on-prem server", ServiceUser,
	}}); err != nil {
		return owner{}, false, fmt.Errorf("cannot create the system user %s: %w", ServiceUser, err)
	}
	c.Logf(ctx, "Created the system user %s", ServiceUser)
	o, found, err = lookupServiceUser(ctx, c)
	if err == nil && !found {
		err = fmt.Errorf("cannot find the system user %s after creating it", ServiceUser)
	}
	return o, err == nil, err
}

// lookupServiceUser reads ServiceUser's ids with getent (exit status 2: no such user).
func lookupServiceUser(ctx context.Context, c *hooks.Context) (owner, bool, error) {
	out, err := c.System.Run(ctx, hooks.Command{Name: "getent", Args: []string{"passwd", ServiceUser}})
	if hooks.ExitCode(err) == 2 {
		return owner{}, false, nil
	}
	if err != nil {
		return owner{}, false, fmt.Errorf("cannot look up the system user %s: %w", ServiceUser, err)
	}
	fields := strings.Split(strings.TrimSpace(string(out)), ":")
	if len(fields) < 4 {
		return owner{}, false, fmt.Errorf("cannot look up the system user %s: getent printed %q", ServiceUser, out)
	}
	uid, err1 := strconv.Atoi(fields[2])
	gid, err2 := strconv.Atoi(fields[3])
	if err1 != nil || err2 != nil {
		return owner{}, false, fmt.Errorf("cannot look up the system user %s: getent printed %q", ServiceUser, out)
	}
	return owner{uid, gid}, true, nil
}

// serviceFiles writes what the server reads and writes, owned by ServiceUser: the rendered
// configuration (mode 0600: it holds the DSN and the users' hashes), the database CA, and, for the
// filesystem store, the storage directory when it does not exist.
func serviceFiles(ctx context.Context, c *hooks.Context, u *Unit) error {
	o, ok, err := ensureServiceUser(ctx, c)
	if err != nil {
		return err
	}
	if _, err := c.WriteFile(ConfigPath, u.rendered, 0o600); err != nil {
		return err
	}
	if ok {
		if err := c.Chown(ConfigPath, o.uid, o.gid); err != nil {
			return err
		}
		// The database CA (written by Reconcile, 0600) is read by the server too.
		if u.ca != "" {
			if err := c.Chown(CAPath, o.uid, o.gid); err != nil {
				return err
			}
		}
	}
	if dir := storageDir(u.Config); dir != "" {
		created, err := c.MkdirAll(dir, 0o750)
		if err != nil {
			return err
		}
		// Only a directory the charm created is given away: an operator's volume keeps
		// its owner (give it to the livepatch user yourself).
		if created && ok {
			if err := c.Chown(dir, o.uid, o.gid); err != nil {
				return err
			}
		}
	}
	return nil
}

// storageDir is the filesystem store's directory (a machine path), or "" for postgres.
func storageDir(cfg Config) string {
	if cfg.Patchstore == "filesystem" || cfg.Patchstore == "file" {
		return filepath.Clean(cfg.StoragePath)
	}
	return ""
}

// unitFile returns the systemd unit of the server for the storage directory dir (a
// machine path; "" for the postgres store). Its paths are machine paths joined under the
// context's root, which in production is "/": the Juju model emulator runs the service of
// each machine under that machine's root.
//
// The service runs as ServiceUser in systemd's sandbox: the whole file system read-only
// but for its storage directory and a private /tmp (upload buffers), no capabilities, no
// new privileges, only IP and unix sockets, the system calls of an ordinary service. It
// starts only once the charm has written its configuration, so a machine that reboots
// before the charm is configured does not restart a server that cannot run.
func unitFile(c *hooks.Context, dir string) string {
	var rw string
	if dir != "" {
		// "-": a missing directory (a volume not mounted) does not stop the server,
		// which then reports patch storage unhealthy.
		rw = "ReadWritePaths=-" + c.Path(dir) + "\n"
	}
	return `[Unit]
Description=Livepatch on-prem server (managed by the livepatch charm)
After=network-online.target
Wants=network-online.target
ConditionPathExists=` + c.Path(ConfigPath) + `

[Service]
Type=simple
User=` + ServiceUser + `
Group=` + ServiceUser + `
ExecStart=` + c.Path(ServerBinary) + ` serve --config ` + c.Path(ConfigPath) + `
Restart=always
RestartSec=5
TimeoutStopSec=30
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
` + rw + `ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
DevicePolicy=closed
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`
}

// installUnit writes the unit for the configuration about to run, reloads systemd when it
// changed and enables the service, so that it starts at boot from now on.
func installUnit(ctx context.Context, c *hooks.Context, u *Unit) error {
	changed, err := c.WriteFile(UnitPath, []byte(unitFile(c, storageDir(u.Config))), 0o644)
	if err != nil {
		return err
	}
	if changed {
		if err := systemctl(ctx, c, "daemon-reload"); err != nil {
			return err
		}
	}
	return systemctl(ctx, c, "enable", ServiceName)
}
