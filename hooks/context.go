// Package hooks is the Juju runtime of our Go charms: typed wrappers over the hook tools, the
// injected Context through which every side effect goes, and Main, which dispatches on
// JUJU_DISPATCH_PATH to a charm's hook and action handlers.
//
// A charm is a Charm value: a Reconcile handler that computes the unit status from the full
// current state (holistic charm), optional handlers for hooks that must do something else
// (install, stop, remove, ...) and the action handlers. Handlers return a Status instead of
// calling status-set; Main sets it.
//
// Nothing here touches the machine directly: hook tools run through Context.Tools, system
// commands (systemctl, pro, apt-get, livepatch-server) through Context.System, and every path
// a charm reads or writes is joined under Context.Root. In production Root is "/" unless the
// environment variable JUJU_SIM_ROOT names another directory: the Juju model emulator under
// tests/ gives each machine its own root that way.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/juju/names/v5"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
)

// RootEnv is the environment variable that overrides the filesystem root of a hook process.
const RootEnv = "JUJU_SIM_ROOT"

// Context carries everything a hook handler may use to observe or change the world.
type Context struct {
	// Tools runs Juju hook tools (config-get, relation-set, ...).
	Tools Runner
	// System runs machine commands (systemctl, pro, apt-get, livepatch-server).
	System Runner
	// Root is the filesystem root every charm path is joined under: "/" in production.
	Root string
	// Getenv looks up the hook environment (JUJU_UNIT_NAME, JUJU_DISPATCH_PATH, ...).
	Getenv func(key string) string
	// Now is the clock.
	Now func() time.Time
	// After returns a channel that receives once d has passed on the context's clock; nil
	// means time.After. Hooks that poll (the health wait after a restart) wait through it, so
	// tests drive time instead of sleeping.
	After func(d time.Duration) <-chan time.Time
	// HTTP is the client for outgoing HTTP requests (the contracts server, the local server).
	HTTP *http.Client
}

// UnitName returns the name of this unit, such as "livepatch/0".
func (c *Context) UnitName() string { return c.Getenv("JUJU_UNIT_NAME") }

// AppName returns the name of this unit's application, such as "livepatch".
func (c *Context) AppName() string {
	unit := c.UnitName()
	if !names.IsValidUnit(unit) {
		return ""
	}
	app, err := names.UnitApplication(unit)
	if err != nil {
		return ""
	}
	return app
}

// ModelUUID returns the UUID of the model the unit is in.
func (c *Context) ModelUUID() string { return c.Getenv("JUJU_MODEL_UUID") }

// CharmDir returns the directory of the unpacked charm (JUJU_CHARM_DIR, or legacy CHARM_DIR).
func (c *Context) CharmDir() string {
	if dir := c.Getenv("JUJU_CHARM_DIR"); dir != "" {
		return dir
	}
	return c.Getenv("CHARM_DIR")
}

// HookName returns the name of the running hook; it is empty in an action.
func (c *Context) HookName() string { return c.Getenv("JUJU_HOOK_NAME") }

// Path returns the machine path p joined under the context's root.
func (c *Context) Path(p string) string {
	root := c.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, p)
}

// Wait waits for d on the context's clock, or until ctx ends (its error is returned).
func (c *Context) Wait(ctx context.Context, d time.Duration) error {
	after := c.After
	if after == nil {
		after = time.After
	}
	select {
	case <-after(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReadFile reads the machine file p (joined under the root).
func (c *Context) ReadFile(p string) ([]byte, error) {
	return os.ReadFile(c.Path(p))
}

// FileExists reports whether the machine file p exists.
func (c *Context) FileExists(p string) bool {
	_, err := os.Stat(c.Path(p))
	return err == nil
}

// ReadJSON decodes the JSON file p (under the root) into v. A missing file leaves v as
// it is and is not an error; found says whether the file was there.
func (c *Context) ReadJSON(p string, v any) (found bool, err error) {
	data, err := c.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot read %s: %w", p, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("cannot decode %s: %w", p, err)
	}
	return true, nil
}

// WriteJSON writes v as indented JSON to p (under the root) with perm, as WriteFile does.
func (c *Context) WriteJSON(p string, v any, perm fs.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode %s: %w", p, err)
	}
	_, err = c.WriteFile(p, append(data, '\n'), perm)
	return err
}

// WriteFile writes data to the machine file p with the given permissions, creating parent
// directories as needed. It replaces the file atomically and durably (internal/atomicfile),
// so a running program holding the old file keeps it, and it reports whether the content
// or the permissions changed.
func (c *Context) WriteFile(p string, data []byte, perm fs.FileMode) (changed bool, err error) {
	path := c.Path(p)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		info, err := os.Stat(path)
		if err == nil && info.Mode().Perm() == perm {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("cannot create directory of %s: %w", p, err)
	}
	if err := atomicfile.Write(path, data, perm); err != nil {
		return false, fmt.Errorf("cannot write %s: %w", p, err)
	}
	return true, nil
}

// Chown gives the machine file p to uid and gid.
func (c *Context) Chown(p string, uid, gid int) error {
	if err := os.Chown(c.Path(p), uid, gid); err != nil {
		return fmt.Errorf("cannot change the owner of %s: %w", p, err)
	}
	return nil
}

// MkdirAll creates the machine directory p and its parents (parents with mode 0755) when
// it does not exist, and reports whether it created p.
func (c *Context) MkdirAll(p string, perm fs.FileMode) (created bool, err error) {
	path := c.Path(p)
	if info, err := os.Stat(path); err == nil {
		if !info.IsDir() {
			return false, fmt.Errorf("cannot create directory %s: a file is in the way", p)
		}
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("cannot create directory %s: %w", p, err)
	}
	if err := os.Mkdir(path, perm); err != nil {
		return false, fmt.Errorf("cannot create directory %s: %w", p, err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		return false, fmt.Errorf("cannot create directory %s: %w", p, err)
	}
	return true, nil
}

// RemoveFile removes the machine file or directory tree p; a missing file is not an error.
func (c *Context) RemoveFile(p string) error {
	if err := os.RemoveAll(c.Path(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove %s: %w", p, err)
	}
	return nil
}

// NewContext returns the production context: hook tools and system commands run as processes,
// the root is "/" (or JUJU_SIM_ROOT), and HTTP requests use the model's proxy settings.
func NewContext() *Context {
	root := os.Getenv(RootEnv)
	if root == "" {
		root = "/"
	}
	return &Context{
		Tools:  ExecRunner{},
		System: ExecRunner{},
		Root:   root,
		Getenv: os.Getenv,
		Now:    time.Now,
		After:  time.After,
		HTTP:   NewHTTPClient(os.Getenv),
	}
}
