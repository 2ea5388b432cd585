package hooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// Handler handles a hook and returns the unit status to set. An error is a hook error: Juju
// marks the unit failed and retries. Problems the operator can fix are statuses, not errors.
type Handler func(ctx context.Context, c *Context) (Status, error)

// Action handles an action. params are the validated parameters (schema defaults inserted);
// the returned results are set with action-set. An error fails the action with the error's
// message, which the operator sees, so it never contains a secret.
type Action func(ctx context.Context, c *Context, params map[string]any) (map[string]string, error)

// Charm is the set of handlers of one charm.
type Charm struct {
	// Reconcile handles every hook without an entry in Hooks, and runs after every action
	// that succeeds so the status follows what the action changed.
	Reconcile Handler
	// Hooks handles the named hooks ("install", "stop", ...) instead of Reconcile.
	Hooks map[string]Handler
	// Actions handles the named actions, keyed exactly as in actions.yaml.
	Actions map[string]Action
}

// Main runs the charm in a hook or action process with the production context and returns
// the exit status.
func Main(ch Charm) int {
	argv0 := ""
	if len(os.Args) > 0 {
		argv0 = os.Args[0]
	}
	if err := Run(context.Background(), NewContext(), ch, argv0); err != nil {
		// Juju copies a hook's stderr to the debug log: a URL's credentials are masked.
		fmt.Fprintf(os.Stderr, "ERROR %s\n", config.Redact(err.Error()))
		return 1
	}
	return 0
}

// Dispatch returns what the process was started for, from JUJU_DISPATCH_PATH or, when that
// is unset, from argv0 (a hooks/<name> or actions/<name> symlink): kind is "hooks" or
// "actions".
func Dispatch(dispatchPath, argv0 string) (kind, name string, err error) {
	p := dispatchPath
	if p == "" {
		p = filepath.Join(filepath.Base(filepath.Dir(argv0)), filepath.Base(argv0))
	}
	kind, name, ok := strings.Cut(filepath.ToSlash(p), "/")
	if !ok || (kind != "hooks" && kind != "actions") || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("cannot dispatch %q: expected hooks/<name> or actions/<name>", p)
	}
	return kind, name, nil
}

// Run dispatches one hook or action of ch in c.
func Run(ctx context.Context, c *Context, ch Charm, argv0 string) error {
	kind, name, err := Dispatch(c.Getenv("JUJU_DISPATCH_PATH"), argv0)
	if err != nil {
		return err
	}
	if kind == "actions" {
		return runAction(ctx, c, ch, name)
	}
	h := ch.Hooks[name]
	if h == nil {
		h = ch.Reconcile
	}
	if h == nil {
		return nil
	}
	st, err := h(ctx, c)
	if err != nil {
		_ = c.JujuLog(ctx, LevelError, config.Redact(fmt.Sprintf("Hook %s failed: %v", name, err)))
		return fmt.Errorf("hook %s: %w", name, err)
	}
	return setStatus(ctx, c, st)
}

func setStatus(ctx context.Context, c *Context, st Status) error {
	if st.IsZero() {
		return nil
	}
	return c.StatusSet(ctx, st)
}

func runAction(ctx context.Context, c *Context, ch Charm, name string) error {
	a := ch.Actions[name]
	if a == nil {
		return c.ActionFail(ctx, fmt.Sprintf("action %q is not implemented by this charm", name))
	}
	params, err := c.ActionGet(ctx)
	if err != nil {
		return err
	}
	results, actErr := a(ctx, c, params)
	if err := c.ActionSet(ctx, results); err != nil {
		return err
	}
	if actErr != nil {
		_ = c.JujuLog(ctx, LevelWarning, fmt.Sprintf("Action %s failed: %v", name, actErr))
		return c.ActionFail(ctx, actErr.Error())
	}
	if ch.Reconcile == nil {
		return nil
	}
	st, err := ch.Reconcile(ctx, c)
	if err != nil {
		// The action did what it was asked; the next hook reconciles again.
		_ = c.JujuLog(ctx, LevelWarning, fmt.Sprintf("Reconcile after action %s failed: %v", name, err))
		return nil
	}
	return setStatus(ctx, c, st)
}
