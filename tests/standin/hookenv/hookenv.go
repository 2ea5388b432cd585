// Package hookenv is the small hook-tool client the Go stand-in charms use: it runs the real
// tools found on PATH (as any charm does) with --format=json.
package hookenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Run runs a hook tool and returns its stdout.
func Run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cannot run %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Get runs a tool with --format=json and decodes its output into v.
func Get(v any, name string, args ...string) error {
	out, err := Run(name, append([]string{"--format=json"}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("cannot decode %s output: %w", name, err)
	}
	return nil
}

// Hook returns the hook (or action) name from JUJU_DISPATCH_PATH.
func Hook() string {
	p := os.Getenv("JUJU_DISPATCH_PATH")
	if p == "" {
		p = os.Args[0]
	}
	return filepath.Base(p)
}

// Root is the machine's filesystem root: JUJU_SIM_ROOT in the emulator, / on a real machine.
func Root() string {
	if r := os.Getenv("JUJU_SIM_ROOT"); r != "" {
		return r
	}
	return "/"
}

// Path joins a system path under the root.
func Path(p string) string { return filepath.Join(Root(), p) }

// Log writes to the unit log.
func Log(format string, args ...any) {
	Run("juju-log", "--", fmt.Sprintf(format, args...))
}

// Status sets the unit's workload status.
func Status(status, msg string) error {
	_, err := Run("status-set", status, "--", msg)
	return err
}

// IsLeader reports leadership.
func IsLeader() bool {
	var b bool
	return Get(&b, "is-leader") == nil && b
}

// Address returns the unit's private address.
func Address() (string, error) {
	var s string
	err := Get(&s, "unit-get", "private-address")
	return s, err
}

// RelationIDs lists the relation ids of an endpoint. In a -relation-broken hook Juju still
// lists the relation being broken; like ops (Model.relations), RelationIDs leaves it out,
// so a charm reconciling from the relations that remain sees the relation gone.
func RelationIDs(endpoint string) ([]string, error) {
	var ids []string
	if err := Get(&ids, "relation-ids", endpoint); err != nil {
		return nil, err
	}
	if strings.HasSuffix(Hook(), "-relation-broken") {
		broken := os.Getenv("JUJU_RELATION_ID")
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == broken })
	}
	return ids, nil
}

// Units lists the remote units in a relation.
func Units(relID string) ([]string, error) {
	var units []string
	err := Get(&units, "relation-list", "-r", relID)
	return units, err
}

// RemoteApp returns the remote application of a relation.
func RemoteApp(relID string) (string, error) {
	var app string
	err := Get(&app, "relation-list", "-r", relID, "--app")
	return app, err
}

// UnitData reads a unit's bag in a relation.
func UnitData(relID, unit string) (map[string]string, error) {
	data := map[string]string{}
	err := Get(&data, "relation-get", "-r", relID, "-", unit)
	return data, err
}

// AppData reads an application's bag in a relation.
func AppData(relID, app string) (map[string]string, error) {
	data := map[string]string{}
	err := Get(&data, "relation-get", "-r", relID, "--app", "-", app)
	return data, err
}

// Set writes the unit's (or with app, the application's) bag in a relation.
func Set(relID string, app bool, data map[string]string) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	args := []string{"-r", relID, "--file", "-"}
	if app {
		args = append(args, "--app")
	}
	cmd := exec.Command("relation-set", args...)
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot run relation-set: %w: %s", err, out)
	}
	return nil
}

// Config returns the charm config.
func Config() (map[string]any, error) {
	cfg := map[string]any{}
	err := Get(&cfg, "config-get")
	return cfg, err
}

// Systemctl runs systemctl.
func Systemctl(args ...string) error {
	_, err := Run("systemctl", args...)
	return err
}

// Main is a stand-in charm's dispatch: it runs the hook or action Juju named with run, and
// reports a failure on stderr (which Juju copies to the debug log) as the exit status 1.
func Main(charm string, run func(hook string) error) int {
	if err := run(Hook()); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", charm, err)
		return 1
	}
	return 0
}
