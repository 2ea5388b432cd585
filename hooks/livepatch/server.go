package livepatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Machine paths and names of the server the charm manages.
const (
	// ServerBinary is where the bundled server binary is installed; the service runs it.
	ServerBinary = "/usr/local/bin/livepatch-server"
	// StagedBinary is where upgrade-charm puts the server of the new charm while the running
	// one keeps serving: it replaces ServerBinary when this unit's turn in a rolling restart
	// comes and the database schema suits it.
	StagedBinary = StateDir + "/livepatch-server.staged"
	// BundledBinary is the server binary inside the charm directory.
	BundledBinary = "bin/livepatch-server"
	// ConfigPath is the rendered server configuration (mode 0600: it holds the DSN). It is
	// written when the charm (re)starts the server, so that the service manager restarting
	// a crashed server starts it with what it ran with.
	ConfigPath = "/etc/livepatch/livepatch-server.yaml"
	// SchemaConfigPath is the configuration the charm runs the server CLI with (schema
	// check, version, upgrade): the database and the keys every server version requires,
	// nothing newer, so that an old server binary reads it as well as a new one.
	SchemaConfigPath = StateDir + "/schema.yaml"
	// UnitPath is the systemd unit of the server.
	UnitPath = "/etc/systemd/system/livepatch-server.service"
	// ServiceName is the systemd service of the server.
	ServiceName = "livepatch-server.service"
	// StateDir holds the charm's own records on the unit.
	StateDir = "/var/lib/livepatch-charm"
	// recordPath is what the running server was last started with.
	recordPath = StateDir + "/state.json"
)

// MessageNoBinary is the status of a charm archive built without the server.
const MessageNoBinary = "The charm has no bin/livepatch-server: rebuild it with make charms and run juju refresh"

// installServer puts the bundled binary and the systemd unit in place. With stage set and a
// server already installed, a bundled binary that differs from the installed one goes to
// StagedBinary instead, so the running server is never replaced under a schema it does not
// match; Reconcile switches binaries at this unit's turn of a rolling restart. A non-zero
// status means the charm cannot install the server.
func installServer(ctx context.Context, c *hooks.Context, stage bool) (hooks.Status, error) {
	data, err := os.ReadFile(filepath.Join(c.CharmDir(), BundledBinary))
	if errors.Is(err, fs.ErrNotExist) {
		return hooks.Blocked(MessageNoBinary), nil
	}
	if err != nil {
		return hooks.Status{}, fmt.Errorf("cannot read bundled server: %w", err)
	}
	installed, err := c.ReadFile(ServerBinary)
	switch {
	case err == nil && bytes.Equal(installed, data):
		// The running binary is the bundled one: nothing to stage (an older staged binary is
		// obsolete).
		if err := c.RemoveFile(StagedBinary); err != nil {
			return hooks.Status{}, err
		}
	case err == nil && stage:
		changed, err := c.WriteFile(StagedBinary, data, 0o755)
		if err != nil {
			return hooks.Status{}, err
		}
		if changed {
			c.Logf(ctx, "Staged the new livepatch-server (sha256 %s); the running server keeps serving until this unit's turn to restart", sha256Hex(data))
		}
	default:
		changed, err := c.WriteFile(ServerBinary, data, 0o755)
		if err != nil {
			return hooks.Status{}, err
		}
		if changed {
			c.Logf(ctx, "Installed %s (sha256 %s)", ServerBinary, sha256Hex(data))
		}
	}
	// The unit is written, and the service enabled, when the charm first starts the server
	// with a valid configuration (restartServer): until then a reboot starts nothing. The
	// user exists from install on, so that operators can give it their storage volume.
	if _, _, err := ensureServiceUser(ctx, c); err != nil {
		return hooks.Status{}, err
	}
	return hooks.Status{}, setApplicationVersion(ctx, c)
}

// setApplicationVersion shows the version of the installed server in juju status.
func setApplicationVersion(ctx context.Context, c *hooks.Context) error {
	version, err := serverVersion(ctx, c, ServerBinary)
	if err != nil {
		_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Cannot read the server version: %v", err))
		return nil
	}
	if version == "" {
		return nil
	}
	return c.ApplicationVersionSet(ctx, version)
}

func systemctl(ctx context.Context, c *hooks.Context, args ...string) error {
	if _, err := c.System.Run(ctx, hooks.Command{Name: "systemctl", Args: args}); err != nil {
		return fmt.Errorf("cannot %s: %w", strings.Join(append([]string{"systemctl"}, args...), " "), err)
	}
	return nil
}

// runServer runs the server binary (a machine path: ServerBinary or StagedBinary) with args.
func runServer(ctx context.Context, c *hooks.Context, binary string, args ...string) ([]byte, error) {
	return c.System.Run(ctx, hooks.Command{Name: c.Path(binary), Args: args})
}

// SchemaBinary returns the server binary whose schema the database must reach: the staged
// one when an upgrade waits, else the installed one. schema-upgrade migrates with it.
func SchemaBinary(c *hooks.Context) string {
	if c.FileExists(StagedBinary) {
		return StagedBinary
	}
	return ServerBinary
}

// serverVersion returns the version the server binary reports ("v1.2.3").
func serverVersion(ctx context.Context, c *hooks.Context, binary string) (string, error) {
	out, err := runServer(ctx, c, binary, "version")
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return "", nil
	}
	return fields[len(fields)-1], nil
}

// SchemaVersion is the schema state of the database.
type SchemaVersion struct {
	// Current is the version of the database (0: empty database).
	Current int `json:"current"`
	// Latest is the version the installed server needs.
	Latest int `json:"latest"`
}

// SchemaCheck reports whether migrations are pending for binary (livepatch-server schema
// check: exit 0 current, 2 pending, anything else an error).
func SchemaCheck(ctx context.Context, c *hooks.Context, binary string) (pending bool, err error) {
	_, err = runServer(ctx, c, binary, "schema", "check", "--config", c.Path(SchemaConfigPath))
	switch hooks.ExitCode(err) {
	case 0:
		return false, nil
	case 2:
		return true, nil
	}
	return false, fmt.Errorf("cannot check the database schema: %w", err)
}

// GetSchemaVersion returns the current schema version and the latest binary knows.
func GetSchemaVersion(ctx context.Context, c *hooks.Context, binary string) (SchemaVersion, error) {
	out, err := runServer(ctx, c, binary, "schema", "version", "--config", c.Path(SchemaConfigPath), "--format", "json")
	if err != nil {
		return SchemaVersion{}, fmt.Errorf("cannot read the database schema version: %w", err)
	}
	var v SchemaVersion
	if err := json.Unmarshal(out, &v); err != nil {
		return SchemaVersion{}, fmt.Errorf("cannot decode the database schema version: %w", err)
	}
	return v, nil
}

// SchemaUpgrade runs the migrations of binary and returns the versions before and after.
func SchemaUpgrade(ctx context.Context, c *hooks.Context, binary string) (from, to int, err error) {
	out, err := runServer(ctx, c, binary, "schema", "upgrade", "--config", c.Path(SchemaConfigPath), "--format", "json")
	if err != nil {
		return 0, 0, fmt.Errorf("cannot upgrade the database schema: %w", err)
	}
	var v struct {
		From int `json:"from"`
		To   int `json:"to"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return 0, 0, fmt.Errorf("cannot decode the schema upgrade result: %w", err)
	}
	return v.From, v.To, nil
}

// Restart restarts the server service.
func Restart(ctx context.Context, c *hooks.Context) error {
	return systemctl(ctx, c, "restart", ServiceName)
}

// schemaConfig is the part of the server configuration the server CLI needs.
type schemaConfig struct {
	Server struct {
		Address     string `yaml:"address"`
		URLTemplate string `yaml:"url-template"`
	} `yaml:"server"`
	Database struct {
		ConnectionString string `yaml:"connection-string"`
	} `yaml:"database"`
	// PatchStorage is there for storage check, when the charm checks a bucket.
	PatchStorage *config.PatchStorage `yaml:"patch-storage,omitempty"`
}

// writeSchemaConfig writes SchemaConfigPath from the server configuration.
func writeSchemaConfig(c *hooks.Context, sc config.Config) error {
	var s schemaConfig
	s.Server.Address = sc.Server.Address
	s.Server.URLTemplate = sc.Server.URLTemplate
	s.Database.ConnectionString = sc.Database.ConnectionString
	if sc.PatchStorage.Type == config.StorageS3 {
		s.PatchStorage = &sc.PatchStorage
	}
	data, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Errorf("cannot encode the schema configuration: %w", err)
	}
	_, err = c.WriteFile(SchemaConfigPath, data, 0o600)
	return err
}

// record is what the running server was last started with, so a hook restarts it only when
// something it reads changed or a new rolling restart generation reached this unit.
type record struct {
	ConfigSHA256 string `json:"config-sha256"`
	BinarySHA256 string `json:"binary-sha256"`
	// Generation is the rolling restart generation of the last (re)start.
	Generation int `json:"restart-generation"`
	// Healthy reports that the server answered healthy after that (re)start and the unit
	// published it on the peer relation.
	Healthy bool `json:"healthy,omitempty"`
}

// started reports whether the charm has started the server on this unit.
func (r record) started() bool { return r.BinarySHA256 != "" }

func readRecord(c *hooks.Context) (record, error) {
	var r record
	if _, err := c.ReadJSON(recordPath, &r); err != nil {
		if !isDecodeError(err) {
			return record{}, fmt.Errorf("cannot read charm state: %w", err)
		}
		return record{}, nil // a damaged record only costs a restart
	}
	return r, nil
}

func writeRecord(c *hooks.Context, r record) error {
	return c.WriteJSON(recordPath, r, 0o600)
}

// isDecodeError tells a damaged JSON file from one that cannot be read.
func isDecodeError(err error) bool {
	_, syntax := errors.AsType[*json.SyntaxError](err)
	_, typ := errors.AsType[*json.UnmarshalTypeError](err)
	return syntax || typ
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func fileSHA256(c *hooks.Context, p string) (string, error) {
	data, err := c.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", p, err)
	}
	return sha256Hex(data), nil
}
