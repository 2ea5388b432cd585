package livepatch

import (
	"context"
	"path/filepath"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// storageDir is the filesystem store's directory (a machine path), or "" for postgres.
func storageDir(cfg Config) string {
	if cfg.Patchstore == "filesystem" || cfg.Patchstore == "file" {
		return filepath.Clean(cfg.StoragePath)
	}
	return ""
}

// unitFile returns the systemd unit of the server. Its paths are machine paths joined under
// the context's root, which in production is "/": the Juju model emulator runs the service of
// each machine under that machine's root. It starts only once the charm has written its
// configuration, so a machine that reboots before the charm is configured does not restart
// a server that cannot run.
func unitFile(c *hooks.Context, dir string) string {
	return `[Unit]
Description=Livepatch on-prem server (managed by the livepatch charm)
After=network-online.target
Wants=network-online.target
ConditionPathExists=` + c.Path(ConfigPath) + `

[Service]
Type=simple
ExecStart=` + c.Path(ServerBinary) + ` serve --config ` + c.Path(ConfigPath) + `
Restart=always
RestartSec=5
TimeoutStopSec=30

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
