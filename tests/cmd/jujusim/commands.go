package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v2"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

// exitError carries a command's exit code without an ERROR line.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// execute runs one CLI command against the model.
func (d *daemon) execute(ctx context.Context, req callRequest) callResponse {
	var stdout, stderr bytes.Buffer
	root := d.commands(ctx, req.Dir)
	root.SetArgs(req.Args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SilenceUsage, root.SilenceErrors = true, true
	code := 0
	if err := root.Execute(); err != nil {
		code = 1
		if ee, ok := errors.AsType[*exitError](err); ok {
			code = ee.code
		} else {
			fmt.Fprintf(&stderr, "ERROR %v\n", err)
		}
	}
	return callResponse{Stdout: stdout.String(), Stderr: stderr.String(), Code: code}
}

// abs resolves a path typed by the user against the directory the user typed it in.
func abs(cwd, p string) string {
	if filepath.IsAbs(p) || cwd == "" {
		return p
	}
	return filepath.Join(cwd, p)
}

// isPath reports whether a charm reference is a local path rather than a charm URL.
func isPath(cwd, ref string) bool {
	if strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/") {
		return true
	}
	_, err := os.Stat(abs(cwd, ref))
	return err == nil
}

func writeFormatted(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
	case "yaml", "":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		w.Write(b)
	default:
		return fmt.Errorf("unknown format %q", format)
	}
	return nil
}

func (d *daemon) commands(ctx context.Context, cwd string) *cobra.Command {
	m := d.model
	root := &cobra.Command{Use: "jujusim"}
	add := func(c *cobra.Command) { root.AddCommand(c) }

	// deploy
	var numUnits int
	var overlays, configs []string
	deploy := &cobra.Command{
		Use:  "deploy <bundle|charm> [application]",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			ref := args[0]
			if isPath(cwd, ref) {
				ref = abs(cwd, ref)
			}
			if fi, err := os.Stat(ref); err == nil && !fi.IsDir() && (strings.HasSuffix(ref, ".yaml") || strings.HasSuffix(ref, ".yml")) {
				var ovs []string
				for _, o := range overlays {
					ovs = append(ovs, abs(cwd, o))
				}
				if err := m.DeployBundle(ref, ovs...); err != nil {
					return err
				}
				fmt.Fprintf(c.ErrOrStderr(), "Deploy of bundle completed.\n")
				return nil
			}
			args2 := jujusim.DeployArgs{Charm: ref, NumUnits: numUnits, Config: map[string]any{}}
			if len(args) == 2 {
				args2.Application = args[1]
			}
			for _, cfg := range configs {
				if k, v, ok := strings.Cut(cfg, "="); ok {
					args2.Config[k] = v
					continue
				}
				b, err := os.ReadFile(abs(cwd, cfg))
				if err != nil {
					return err
				}
				byApp := map[string]map[string]any{}
				if err := yaml.Unmarshal(b, &byApp); err != nil {
					return fmt.Errorf("cannot parse %s: %w", cfg, err)
				}
				for _, settings := range byApp {
					for k, v := range settings {
						args2.Config[k] = v
					}
				}
			}
			app, err := m.Deploy(args2)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "Deployed %q from %s\n", app, args[0])
			return nil
		},
	}
	deploy.Flags().IntVarP(&numUnits, "num-units", "n", 0, "number of units")
	deploy.Flags().StringArrayVar(&overlays, "overlay", nil, "bundle overlay")
	deploy.Flags().StringArrayVar(&configs, "config", nil, "key=value or config YAML file")
	deploy.Flags().String("to", "", "ignored: every unit gets a new machine")
	deploy.Flags().String("channel", "", "ignored")
	add(deploy)

	// config / configure
	var reset []string
	var format, statusFormat, unitFormat string
	config := &cobra.Command{
		Use:     "config <app> [key[=value]...]",
		Aliases: []string{"configure"},
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			app := args[0]
			if len(reset) > 0 {
				var keys []string
				for _, r := range reset {
					keys = append(keys, strings.Split(r, ",")...)
				}
				if err := m.ResetConfig(app, keys...); err != nil {
					return err
				}
			}
			set := map[string]string{}
			var get []string
			for _, a := range args[1:] {
				if k, v, ok := strings.Cut(a, "="); ok {
					set[k] = v
				} else {
					get = append(get, a)
				}
			}
			if len(set) > 0 {
				return m.SetConfig(app, set)
			}
			if len(reset) > 0 {
				return nil
			}
			cfg, err := m.Config(app)
			if err != nil {
				return err
			}
			if len(get) == 1 {
				v := cfg[get[0]]
				if v != nil {
					fmt.Fprintln(c.OutOrStdout(), v)
				}
				return nil
			}
			settings := map[string]any{}
			for k, v := range cfg {
				settings[k] = map[string]any{"value": v}
			}
			return writeFormatted(c.OutOrStdout(), format, map[string]any{"application": app, "settings": settings})
		},
	}
	config.Flags().StringArrayVar(&reset, "reset", nil, "keys to reset to their defaults")
	config.Flags().StringVar(&format, "format", "yaml", "yaml or json")
	add(config)

	// run (juju 3) and run-action (juju 2.9)
	var wait string
	var noWait, stringArgs bool
	runAction := func(c *cobra.Command, args []string, waitFor bool, legacy bool) error {
		params, err := parseParams(args[2:], stringArgs)
		if err != nil {
			return err
		}
		target := args[0]
		if !strings.Contains(target, "/") {
			// Deployment guides write "juju run-action livepatch <action>": run it on the leader.
			target += "/leader"
		}
		a, err := m.RunAction(target, args[1], params)
		if err != nil {
			return err
		}
		if !waitFor {
			if legacy {
				fmt.Fprintf(c.OutOrStdout(), "Action queued with id: %q\n", a.ID)
			} else {
				fmt.Fprintf(c.OutOrStdout(), "Scheduled operation %s with task %s\nCheck operation status with 'jujusim show-task %s'\n", a.ID, a.ID, a.ID)
			}
			return nil
		}
		wctx := ctx
		if d, err := time.ParseDuration(wait); err == nil && d > 0 {
			var cancel context.CancelFunc
			wctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		res, err := a.Wait(wctx)
		if err != nil {
			return err
		}
		if legacy {
			return writeFormatted(c.OutOrStdout(), "yaml", legacyResult(res))
		}
		if len(res.Results) > 0 {
			writeFormatted(c.OutOrStdout(), "yaml", res.Results)
		}
		if res.Stdout != "" {
			fmt.Fprint(c.OutOrStdout(), res.Stdout)
		}
		if res.Status != "completed" {
			fmt.Fprintf(c.ErrOrStderr(), "ERROR the following task failed:\n id %q with return code %d\n", res.ID, res.ReturnCode)
			if res.Message != "" {
				fmt.Fprintf(c.ErrOrStderr(), "message: %s\n", res.Message)
			}
			return &exitError{1}
		}
		return nil
	}
	runCmd := &cobra.Command{
		Use:  "run <unit> <action> [key=value...]",
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error { return runAction(c, args, !noWait, false) },
	}
	runCmd.Flags().BoolVar(&noWait, "background", false, "do not wait")
	runCmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait")
	runCmd.Flags().StringVar(&wait, "wait", "0", "maximum wait")
	runCmd.Flags().BoolVar(&stringArgs, "string-args", false, "keep values as strings")
	add(runCmd)
	runActionCmd := &cobra.Command{
		Use:  "run-action <unit> <action> [key=value...]",
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runAction(c, args, c.Flags().Changed("wait"), true)
		},
	}
	runActionCmd.Flags().StringVar(&wait, "wait", "0", "wait for results (optional duration)")
	runActionCmd.Flags().Lookup("wait").NoOptDefVal = "0"
	runActionCmd.Flags().BoolVar(&stringArgs, "string-args", false, "keep values as strings")
	add(runActionCmd)
	add(&cobra.Command{
		Use:     "show-task <id>",
		Aliases: []string{"show-action-output", "show-operation"},
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			a, err := m.Action(args[0])
			if err != nil {
				return err
			}
			return writeFormatted(c.OutOrStdout(), "yaml", legacyResult(a.Result()))
		},
	})

	// model-config
	add(&cobra.Command{
		Use: "model-config [key[=value]...]", Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			set := map[string]string{}
			cfg := m.ModelConfig()
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					if _, known := cfg[a]; !known {
						return fmt.Errorf("key %q not found in the model config", a)
					}
					fmt.Fprintln(c.OutOrStdout(), cfg[a])
					continue
				}
				set[k] = v
			}
			if len(set) > 0 {
				return m.SetModelConfig(set)
			}
			if len(args) == 0 {
				return writeFormatted(c.OutOrStdout(), "yaml", cfg)
			}
			return nil
		},
	})

	// status
	status := &cobra.Command{
		Use:  "status",
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			st := m.Status()
			if statusFormat == "tabular" || statusFormat == "" {
				fmt.Fprint(c.OutOrStdout(), st.Tabular())
				return nil
			}
			return writeFormatted(c.OutOrStdout(), statusFormat, st)
		},
	}
	status.Flags().StringVar(&statusFormat, "format", "tabular", "tabular, yaml or json")
	add(status)

	// relations
	add(&cobra.Command{
		Use: "integrate <a> <b>", Aliases: []string{"relate", "add-relation"}, Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error { _, err := m.Relate(args[0], args[1]); return err },
	})
	add(&cobra.Command{
		Use: "remove-relation <a> <b>", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error { return m.RemoveRelation(args[0], args[1]) },
	})

	// units and applications
	var n int
	addUnit := &cobra.Command{
		Use: "add-unit <app>", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			units, err := m.AddUnit(args[0], n)
			if err == nil {
				fmt.Fprintf(c.ErrOrStderr(), "Added %s\n", strings.Join(units, ", "))
			}
			return err
		},
	}
	addUnit.Flags().IntVarP(&n, "num-units", "n", 1, "number of units")
	add(addUnit)
	add(&cobra.Command{
		Use: "remove-unit <unit>...", Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.RemoveUnit(args...) },
	})
	add(&cobra.Command{
		Use: "remove-application <app>", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.RemoveApplication(args[0]) },
	})
	var path string
	upgrade := &cobra.Command{
		Use: "upgrade-charm <app> --path <charm>", Aliases: []string{"refresh"}, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p := path
			if p != "" {
				p = abs(cwd, p)
			}
			if err := m.Upgrade(args[0], p); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "Added local charm %q, will be used by %s\n", path, args[0])
			return nil
		},
	}
	upgrade.Flags().StringVar(&path, "path", "", "local charm (directory or .charm); default: the charm deployed, re-read")
	upgrade.Flags().String("channel", "", "ignored")
	add(upgrade)
	var noRetry bool
	resolved := &cobra.Command{
		Use: "resolved <unit>", Aliases: []string{"resolve"}, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.Resolved(args[0], !noRetry) },
	}
	resolved.Flags().BoolVar(&noRetry, "no-retry", false, "skip the failed hook")
	add(resolved)
	add(&cobra.Command{
		Use: "expose <app>", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.Expose(args[0], true) },
	})
	add(&cobra.Command{
		Use: "unexpose <app>", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return m.Expose(args[0], false) },
	})
	add(&cobra.Command{
		Use: "update-status", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error { m.TriggerUpdateStatus(); return nil },
	})

	// inspection
	showUnit := &cobra.Command{
		Use: "show-unit <unit>", Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			out := map[string]any{}
			for _, u := range args {
				info, err := m.ShowUnit(u)
				if err != nil {
					return err
				}
				out[info.Name] = info
			}
			return writeFormatted(c.OutOrStdout(), unitFormat, out)
		},
	}
	showUnit.Flags().StringVar(&unitFormat, "format", "yaml", "yaml or json")
	add(showUnit)
	var replay bool
	var include []string
	var lines int
	debugLog := &cobra.Command{
		Use: "debug-log", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			var out []string
			for _, e := range m.Logs() {
				if len(include) > 0 && !slices.Contains(include, e.Unit) && !slices.Contains(include, "unit-"+strings.ReplaceAll(e.Unit, "/", "-")) {
					continue
				}
				out = append(out, e.String())
			}
			if !replay && len(out) > lines {
				out = out[len(out)-lines:]
			}
			for _, l := range out {
				fmt.Fprintln(c.OutOrStdout(), l)
			}
			return nil
		},
	}
	debugLog.Flags().BoolVar(&replay, "replay", false, "show the whole log")
	debugLog.Flags().StringArrayVarP(&include, "include", "i", nil, "only these units")
	debugLog.Flags().IntVarP(&lines, "lines", "n", 10, "last lines")
	debugLog.Flags().Bool("no-tail", true, "always: the emulator does not follow")
	add(debugLog)
	var unit string
	execCmd := func(c *cobra.Command, u string, argv []string) error {
		res, err := m.Exec(ctx, u, argv...)
		if err != nil {
			return err
		}
		fmt.Fprint(c.OutOrStdout(), res.Stdout)
		fmt.Fprint(c.ErrOrStderr(), res.Stderr)
		if res.Code != 0 {
			return &exitError{res.Code}
		}
		return nil
	}
	execC := &cobra.Command{
		Use: "exec --unit <unit> -- <command...>", Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return execCmd(c, unit, args) },
	}
	execC.Flags().StringVarP(&unit, "unit", "u", "", "unit to run on")
	add(execC)
	sshC := &cobra.Command{
		Use: "ssh <unit> <command...>", Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error { return execCmd(c, args[0], args[1:]) },
	}
	sshC.Flags().SetInterspersed(false)
	add(sshC)
	var timeout time.Duration
	var want []string
	waitC := &cobra.Command{
		Use: "wait", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			conds := map[string]string{}
			for _, w := range want {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					return fmt.Errorf("invalid --status %q: want APP_OR_UNIT=STATUS", w)
				}
				conds[k] = v
			}
			err := m.WaitIdleStatus(wctx, func(st *jujusim.Status) bool {
				for k, v := range conds {
					if !hasStatus(st, k, v) {
						return false
					}
				}
				return true
			})
			if err != nil {
				fmt.Fprint(c.ErrOrStderr(), m.Status().Tabular())
			}
			return err
		},
	}
	waitC.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after")
	waitC.Flags().StringArrayVar(&want, "status", nil, "APP_OR_UNIT=STATUS to wait for (workload status)")
	add(waitC)
	for _, c := range secretCommands(m, cwd) {
		add(c)
	}
	add(&cobra.Command{
		Use: "contracts-url", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if d.contracts == nil {
				return errors.New("no contracts server: bootstrap with --contracts-token")
			}
			fmt.Fprintln(c.OutOrStdout(), d.contracts.URL)
			return nil
		},
	})
	return root
}

// hasStatus checks an application's status or a unit's workload status.
func hasStatus(st *jujusim.Status, name, want string) bool {
	if strings.Contains(name, "/") {
		u, ok := st.Unit(name)
		return ok && u.Workload.Current == want
	}
	a, ok := st.Applications[name]
	return ok && a.Status.Current == want
}

// parseParams turns key=value action arguments into parameters: dotted keys nest, values are
// YAML (so 3 is a number) unless stringArgs.
func parseParams(args []string, stringArgs bool) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("argument %q must be of the form key=value", a)
		}
		var val any = v
		if !stringArgs {
			var parsed any
			if err := yaml.Unmarshal([]byte(v), &parsed); err == nil && parsed != nil {
				if _, isMap := parsed.(map[any]any); !isMap {
					val = parsed
				}
			}
		}
		keys := strings.Split(k, ".")
		cur := out
		for _, key := range keys[:len(keys)-1] {
			next, ok := cur[key].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[key] = next
			}
			cur = next
		}
		cur[keys[len(keys)-1]] = val
	}
	return out, nil
}

// legacyResult shapes an action result like `juju run-action --wait` (2.9).
func legacyResult(r jujusim.ActionResult) map[string]any {
	results := map[string]any{}
	for k, v := range r.Results {
		results[k] = v
	}
	results["Code"] = strconv.Itoa(r.ReturnCode)
	if r.Stdout != "" {
		results["Stdout"] = r.Stdout
	}
	if r.Stderr != "" {
		results["Stderr"] = r.Stderr
	}
	entry := map[string]any{
		"UnitId":  r.Unit,
		"id":      r.ID,
		"results": results,
		"status":  r.Status,
		"timing": map[string]any{
			"enqueued":  r.Enqueued.Format(time.RFC3339),
			"started":   r.Started.Format(time.RFC3339),
			"completed": r.Completed.Format(time.RFC3339),
		},
	}
	if r.Message != "" {
		entry["message"] = r.Message
	}
	if len(r.Log) > 0 {
		entry["log"] = r.Log
	}
	return map[string]any{"unit-" + strings.ReplaceAll(r.Unit, "/", "-"): entry}
}
