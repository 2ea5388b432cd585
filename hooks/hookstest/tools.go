package hookstest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/juju/charm/v12"
	"github.com/juju/names/v5"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// tools is the in-memory implementation of the hook tools for one hook run.
type tools struct {
	mu     sync.Mutex
	st     *State // status, logs and app version apply here at once
	rels   []Relation
	ports  []string
	config map[string]any
	meta   *charm.Meta
	calls  []hooks.Command

	inAction bool
	params   map[string]any
	results  map[string]string
	failed   bool
	failMsg  string
	actLogs  []string
}

// flags is a parsed hook tool command line.
type flags struct {
	format, rel, file, level string
	app, application         bool
	label                    string
	peek, refresh            bool
	pos                      []string
}

func usage(format string, args ...any) error {
	return &hooks.ExitError{Code: 2, Stderr: "ERROR " + fmt.Sprintf(format, args...) + "\n"}
}

func failure(format string, args ...any) error {
	return &hooks.ExitError{Code: 1, Stderr: "ERROR " + fmt.Sprintf(format, args...) + "\n"}
}

func parseFlags(args []string) (flags, error) {
	var f flags
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			f.pos = append(f.pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			f.pos = append(f.pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		next := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", usage("option needs an argument: %s", name)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "--format":
			f.format, err = next()
		case "-r", "--relation":
			f.rel, err = next()
		case "--file":
			f.file, err = next()
		case "-l", "--log-level":
			f.level, err = next()
		case "--app":
			f.app = !hasValue || value == "true" || value == "True"
		case "--application":
			f.application = !hasValue || value == "true" || value == "True"
		case "--label":
			f.label, err = next()
		case "--peek":
			f.peek = true
		case "--refresh":
			f.refresh = true
		default:
			return f, usage("flag provided but not defined: %s", name)
		}
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

var actionKey = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)

// knownTools are the hook tools the fake implements.
var knownTools = map[string]bool{
	"config-get": true, "relation-ids": true, "relation-list": true, "relation-get": true,
	"relation-set": true, "status-set": true, "application-version-set": true, "action-get": true,
	"action-set": true, "action-fail": true, "action-log": true, "is-leader": true, "juju-log": true,
	"open-port": true, "close-port": true, "opened-ports": true, "network-get": true, "unit-get": true,
}

var statusNames = []string{"maintenance", "blocked", "waiting", "active"}

// Run runs one hook tool.
func (t *tools) Run(_ context.Context, cmd hooks.Command) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, hooks.Command{Name: cmd.Name, Args: slices.Clone(cmd.Args), Stdin: slices.Clone(cmd.Stdin)})
	if !knownTools[cmd.Name] && (cmd.Name != "secret-get" || t.st.Secrets == nil) {
		// As on a machine whose Juju lacks the tool (secret-* before Juju 3.0).
		return nil, fmt.Errorf("cannot run %s: %w", cmd.Name, exec.ErrNotFound)
	}
	f, err := parseFlags(cmd.Args)
	if err != nil {
		return nil, err
	}
	if cmd.Name != "secret-get" && (f.label != "" || f.peek || f.refresh) {
		return nil, usage("flag provided but not defined: --label, --peek or --refresh")
	}
	switch cmd.Name {
	case "config-get", "relation-ids", "relation-list", "relation-get", "action-get", "is-leader",
		"network-get", "unit-get", "secret-get":
		if f.format != "json" {
			return nil, usage("hookstest supports only --format=json for %s", cmd.Name)
		}
	}
	out, err := t.run(cmd.Name, f, cmd.Stdin)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, failure("cannot encode output: %v", err)
	}
	return append(b, '\n'), nil
}

func (t *tools) relation(id string) (*Relation, error) {
	if id == "" {
		return nil, usage("no relation id specified")
	}
	_, num, _ := strings.Cut(id, ":")
	if !strings.Contains(id, ":") {
		num = id
	}
	for i := range t.rels {
		if fmt.Sprint(t.rels[i].ID) == num {
			return &t.rels[i], nil
		}
	}
	return nil, usage("invalid value %q for option -r: relation not found", id)
}

func (t *tools) appName() string {
	app, _ := names.UnitApplication(t.st.Unit)
	return app
}

func (t *tools) isPeer(r *Relation) bool {
	if t.meta != nil {
		_, ok := t.meta.Peers[r.Endpoint]
		return ok
	}
	return r.RemoteApp == t.appName()
}

// run returns the value to print as JSON, or nil for no output.
func (t *tools) run(name string, f flags, stdin []byte) (any, error) {
	switch name {
	case "config-get":
		if len(f.pos) > 0 {
			return jsonValue(t.config[f.pos[0]]), nil
		}
		return t.config, nil

	case "relation-ids":
		if len(f.pos) != 1 {
			return nil, usage("no endpoint name specified")
		}
		ids := []string{}
		for _, r := range t.rels {
			if r.Endpoint == f.pos[0] {
				ids = append(ids, r.RelID())
			}
		}
		slices.Sort(ids)
		return ids, nil

	case "relation-list":
		r, err := t.relation(f.rel)
		if err != nil {
			return nil, err
		}
		if f.app {
			return r.RemoteApp, nil
		}
		return slices.Sorted(maps.Keys(r.RemoteUnits)), nil

	case "relation-get":
		return t.relationGet(f)

	case "relation-set":
		return nil, t.relationSet(f, stdin)

	case "status-set":
		if len(f.pos) < 1 || len(f.pos) > 2 {
			return nil, usage("invalid arguments")
		}
		if !slices.Contains(statusNames, f.pos[0]) {
			return nil, usage("invalid status %q, expected one of %v", f.pos[0], statusNames)
		}
		st := hooks.Status{Name: f.pos[0]}
		if len(f.pos) == 2 {
			st.Message = f.pos[1]
		}
		if f.application {
			if !t.st.Leader {
				return nil, failure("this unit is not the leader")
			}
			t.st.AppStatus = st
		} else {
			t.st.Status = st
		}
		return nil, nil

	case "application-version-set":
		if len(f.pos) != 1 {
			return nil, usage("no version specified")
		}
		t.st.AppVersion = f.pos[0]
		return nil, nil

	case "action-get":
		if !t.inAction {
			return nil, failure("not running an action")
		}
		if len(f.pos) > 0 {
			return jsonValue(t.params[f.pos[0]]), nil
		}
		return t.params, nil

	case "action-set":
		if !t.inAction {
			return nil, failure("not running an action")
		}
		for _, kv := range f.pos {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, usage("argument %q must be of the form key...=value", kv)
			}
			for seg := range strings.SplitSeq(k, ".") {
				if !actionKey.MatchString(seg) {
					return nil, usage("key %q must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric and hyphens", k)
				}
			}
			t.results[k] = v
		}
		return nil, nil

	case "action-fail":
		if !t.inAction {
			return nil, failure("not running an action")
		}
		t.failed = true
		t.failMsg = "action failed without reason given, check action for errors"
		if len(f.pos) > 0 {
			t.failMsg = f.pos[0]
		}
		return nil, nil

	case "action-log":
		if !t.inAction {
			return nil, failure("not running an action")
		}
		if len(f.pos) == 0 {
			return nil, usage("no message specified")
		}
		t.actLogs = append(t.actLogs, strings.Join(f.pos, " "))
		return nil, nil

	case "is-leader":
		return t.st.Leader, nil

	case "juju-log":
		if len(f.pos) == 0 {
			return nil, usage("no message specified")
		}
		level := f.level
		if level == "" {
			level = "INFO"
		}
		t.st.Logs = append(t.st.Logs, level+" "+strings.Join(f.pos, " "))
		return nil, nil

	case "open-port", "close-port":
		if len(f.pos) != 1 {
			return nil, usage("invalid port specification")
		}
		port := strings.ToLower(f.pos[0])
		if !strings.Contains(port, "/") && port != "icmp" {
			port += "/tcp"
		}
		if name == "open-port" {
			if !slices.Contains(t.ports, port) {
				t.ports = append(t.ports, port)
			}
		} else {
			t.ports = slices.DeleteFunc(t.ports, func(p string) bool { return p == port })
		}
		slices.Sort(t.ports)
		return nil, nil

	case "opened-ports":
		if len(f.pos) != 0 {
			return nil, usage("unrecognized args: %q", f.pos)
		}
		// Committed ports only: not those this hook opened or closed.
		return append([]string{}, t.st.Ports...), nil

	case "network-get":
		if len(f.pos) != 1 {
			return nil, usage("no arguments specified")
		}
		if t.meta != nil && f.pos[0] != "juju-info" {
			if _, ok := t.meta.CombinedRelations()[f.pos[0]]; !ok {
				return nil, failure("undefined binding %q", f.pos[0])
			}
		}
		return map[string]any{
			"bind-addresses": []any{map[string]any{
				"mac-address":    "",
				"interface-name": "eth0",
				"addresses":      []any{map[string]any{"hostname": "", "value": t.st.Address, "cidr": "192.0.2.0/24"}},
			}},
			"egress-subnets":    []string{t.st.Address + "/32"},
			"ingress-addresses": []string{t.st.Address},
		}, nil

	case "unit-get":
		if len(f.pos) != 1 || (f.pos[0] != "private-address" && f.pos[0] != "public-address") {
			return nil, usage("unknown setting %q", strings.Join(f.pos, " "))
		}
		return t.st.Address, nil

	case "secret-get":
		return t.secretGet(f)
	}
	return nil, fmt.Errorf("cannot run %s: %w", name, exec.ErrNotFound)
}

// secretGet is secret-get <URI> [key] [--peek|--refresh] as a consumer runs it: the tracked
// revision, or the latest with --peek, or the latest tracked from now on with --refresh.
// Labels are not kept: a secret is named by its URI.
func (t *tools) secretGet(f flags) (any, error) {
	if len(f.pos) == 0 {
		return nil, usage("require either a secret URI or label")
	}
	if f.peek && f.refresh {
		return nil, usage("specify one of --peek or --refresh but not both")
	}
	if len(f.pos) > 2 {
		return nil, usage("unrecognized args: %q", f.pos[2:])
	}
	id := hooks.SecretID(f.pos[0])
	s, ok := t.st.Secrets[id]
	switch {
	case !ok || len(s.Revisions) == 0:
		return nil, failure("secret %q not found", id)
	case s.Denied:
		return nil, failure("permission denied")
	}
	rev := s.Tracked
	if rev == 0 || f.peek || f.refresh {
		rev = len(s.Revisions)
	}
	if (!f.peek || s.Tracked == 0) && rev != s.Tracked {
		s.Tracked = rev
		t.st.Secrets[id] = s
	}
	content := s.Revisions[rev-1]
	if len(f.pos) == 2 {
		v, ok := content[f.pos[1]]
		if !ok {
			return nil, failure("secret key value %q not found", f.pos[1])
		}
		return v, nil
	}
	return maps.Clone(content), nil
}

// jsonValue returns v, or an explicit JSON null for a missing value.
func jsonValue(v any) any {
	if v == nil {
		return json.RawMessage("null")
	}
	return v
}

func (t *tools) relationGet(f flags) (any, error) {
	r, err := t.relation(f.rel)
	if err != nil {
		return nil, err
	}
	key, target := "-", ""
	if len(f.pos) > 0 {
		key = f.pos[0]
	}
	if len(f.pos) > 1 {
		target = f.pos[1]
	}
	if len(f.pos) > 2 {
		return nil, usage("unrecognized args: %q", f.pos[2:])
	}
	var bag map[string]string
	switch {
	case f.app:
		if names.IsValidUnit(target) {
			target, _ = names.UnitApplication(target)
		}
		switch target {
		case t.appName():
			if !t.st.Leader && !t.isPeer(r) {
				return nil, failure("permission denied")
			}
			bag = r.LocalAppData
		case r.RemoteApp, "":
			bag = r.RemoteAppData
		default:
			return nil, failure("unknown application %s", target)
		}
	case target == "":
		return nil, usage("no unit or application specified")
	case !names.IsValidUnit(target):
		return nil, usage("expected unit name, got application name %q", target)
	case target == t.st.Unit:
		bag = r.LocalUnitData
	default:
		b, ok := r.RemoteUnits[target]
		if !ok {
			return nil, failure("unknown unit %s", target)
		}
		bag = b
	}
	if key != "-" {
		v, ok := bag[key]
		if !ok {
			return json.RawMessage("null"), nil
		}
		return v, nil
	}
	if bag == nil {
		bag = map[string]string{}
	}
	return bag, nil
}

func (t *tools) relationSet(f flags, stdin []byte) error {
	r, err := t.relation(f.rel)
	if err != nil {
		return err
	}
	settings := map[string]string{}
	if f.file != "" {
		if f.file != "-" {
			return usage("hookstest supports only --file -")
		}
		var raw map[string]any
		if err := json.Unmarshal(stdin, &raw); err != nil {
			return failure("cannot parse settings: %v", err)
		}
		for k, v := range raw {
			switch v := v.(type) {
			case nil:
				settings[k] = ""
			case string:
				settings[k] = v
			case bool, float64:
				settings[k] = fmt.Sprint(v)
			default:
				return failure("cannot parse settings: value of %q is not a scalar", k)
			}
		}
	}
	seen := map[string]bool{}
	for _, kv := range f.pos {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usage("expected \"key=value\", got %q", kv)
		}
		if seen[k] {
			return usage("key %q specified more than once", k)
		}
		seen[k] = true
		settings[k] = v
	}
	bag := &r.LocalUnitData
	if f.app {
		if !t.st.Leader {
			return failure("cannot write relation settings")
		}
		bag = &r.LocalAppData
	}
	if *bag == nil {
		*bag = map[string]string{}
	}
	for k, v := range settings {
		if v == "" {
			delete(*bag, k)
		} else {
			(*bag)[k] = v
		}
	}
	return nil
}
