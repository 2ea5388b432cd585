package jujusim

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/juju/names/v5"
	"gopkg.in/yaml.v2"
)

// toolCall is one hook tool invocation, run in the model with the model lock held.
type toolCall struct {
	m        *Model
	c        *hookContext
	u        *unit
	dir      string
	stdin    []byte
	stdinSet bool
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	format   string
	output   string
}

var errNeedStdin = errors.New("hook tool requires stdin, none supplied")

type toolFunc func(t *toolCall, args []string) error

var toolTable map[string]toolFunc

func init() {
	toolTable = map[string]toolFunc{
		"config-get":              (*toolCall).configGet,
		"relation-ids":            (*toolCall).relationIDs,
		"relation-list":           (*toolCall).relationList,
		"relation-get":            (*toolCall).relationGet,
		"relation-set":            (*toolCall).relationSet,
		"status-set":              (*toolCall).statusSet,
		"status-get":              (*toolCall).statusGet,
		"application-version-set": (*toolCall).applicationVersionSet,
		"action-get":              (*toolCall).actionGet,
		"action-set":              (*toolCall).actionSet,
		"action-fail":             (*toolCall).actionFail,
		"action-log":              (*toolCall).actionLog,
		"is-leader":               (*toolCall).isLeader,
		"leader-get":              (*toolCall).leaderGet,
		"leader-set":              (*toolCall).leaderSet,
		"juju-log":                (*toolCall).jujuLog,
		"open-port":               func(t *toolCall, a []string) error { return t.port(true, a) },
		"close-port":              func(t *toolCall, a []string) error { return t.port(false, a) },
		"opened-ports":            (*toolCall).openedPorts,
		"network-get":             (*toolCall).networkGet,
		"unit-get":                (*toolCall).unitGet,
		"state-get":               (*toolCall).stateGet,
		"state-set":               (*toolCall).stateSet,
		"state-delete":            (*toolCall).stateDelete,
	}
	maps.Copy(toolTable, secretTools)
}

// ToolNames lists the hook tools installed in every unit's tools directory.
func ToolNames() []string {
	return slices.Sorted(maps.Keys(toolTable))
}

// runToolLocked runs a tool and returns its exit code. errNeedStdin asks the client to resend
// with stdin.
func (t *toolCall) run(name string, args []string) (int, error) {
	f, ok := toolTable[name]
	if !ok {
		fmt.Fprintf(&t.stderr, "ERROR unknown command %q\n", name)
		return 2, nil
	}
	err := f(t, args)
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, errNeedStdin):
		return 0, err
	case errors.Is(err, errHelp):
		fmt.Fprintf(&t.stdout, "Usage: %s [options]\n", name)
		return 0, nil
	}
	t.stdout.Reset()
	fmt.Fprintf(&t.stderr, "ERROR %s\n", err)
	if _, ok := errors.AsType[*usageError](err); ok {
		return 2, nil
	}
	return 1, nil
}

func (t *toolCall) parse(fs *flagSet, args []string, output bool) ([]string, error) {
	if output {
		fs.String(&t.format, "format")
		fs.String(&t.output, "output", "o")
	}
	pos, err := fs.parse(args)
	if err != nil {
		return nil, err
	}
	if output {
		switch t.format {
		case "", "smart", "yaml", "json":
		default:
			return nil, usagef("invalid value %q for option --format: unknown format %q", t.format, t.format)
		}
	}
	return pos, nil
}

func (t *toolCall) write(v any) error {
	b, err := formatOutput(t.format, v)
	if err != nil {
		return err
	}
	if t.output != "" {
		p := t.output
		if !filepath.IsAbs(p) {
			p = filepath.Join(t.dir, p)
		}
		return os.WriteFile(p, b, 0o644)
	}
	t.stdout.Write(b)
	return nil
}

func noMoreArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unrecognized args: %s", quoteList(args))
	}
	return nil
}

func quoteList(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func (t *toolCall) app() *application { return t.m.apps[t.u.app] }

func (t *toolCall) isLeaderNow() bool { return t.app().leader == t.u.name }

// config-get [<key>] [--all]
func (t *toolCall) configGet(args []string) error {
	fs := newFlagSet()
	var all bool
	fs.Bool(&all, "all", "a")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	key := ""
	if len(pos) > 0 {
		key, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	if key != "" && all {
		return usagef("cannot use argument --all together with key %q", key)
	}
	cfg := effectiveConfig(t.app().ch, t.app().settings)
	if key != "" {
		return t.write(cfg[key])
	}
	out := map[string]any{}
	for k, v := range cfg {
		if v != nil || all {
			out[k] = v
		}
	}
	if all {
		for k := range t.app().ch.Config().Options {
			if _, ok := out[k]; !ok {
				out[k] = nil
			}
		}
	}
	return t.write(out)
}

// visibleRelation resolves a -r value (or the hook's relation) to a relation the unit is in.
func (t *toolCall) relation(value string, set bool) (*relation, error) {
	id := t.c.relID
	if set {
		s := value
		if i := strings.LastIndex(s, ":"); i >= 0 {
			s = s[i+1:]
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, usagef("invalid value %q for option -r: invalid relation id", value)
		}
		id = n
	} else if id < 0 {
		return nil, usagef("no relation id specified")
	}
	r := t.m.relations[id]
	if r == nil || (t.u.local.rels[id] == nil && id != t.c.relID) {
		if !set {
			value = strconv.Itoa(id)
		}
		return nil, usagef("invalid value %q for option -r: relation not found", value)
	}
	return r, nil
}

func (t *toolCall) relFlag(fs *flagSet) *string {
	var s string
	fs.String(&s, "relation", "r")
	return &s
}

// relation-ids [<endpoint>]
func (t *toolCall) relationIDs(args []string) error {
	fs := newFlagSet()
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	ep := ""
	if t.c.op != nil && t.c.op.isRelation() {
		ep = t.c.op.endpoint
	}
	if len(pos) > 0 {
		ep, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	if ep == "" {
		return usagef("no endpoint name specified")
	}
	out := []string{}
	for id, rs := range t.u.local.rels {
		r := t.m.relations[id]
		if r == nil || (rs.broken && id != t.c.relID) {
			continue
		}
		if e := r.endpointFor(t.u.app); e.rel.Name == ep {
			out = append(out, ep+":"+strconv.Itoa(id))
		}
	}
	// Juju sorts the ids as strings: db:10 before db:2.
	sort.Strings(out)
	return t.write(out)
}

// members returns the remote units the hook sees in r: joined and not departed, counting
// the current hook's own joined/departed unit.
func (t *toolCall) members(r *relation) []string {
	set := map[string]bool{}
	if rs := t.u.local.rels[r.id]; rs != nil {
		for name := range rs.members {
			set[name] = true
		}
	}
	if o := t.c.op; o != nil && o.relID == r.id {
		switch o.kind {
		case opRelationJoined:
			set[o.remoteUnit] = true
		case opRelationDeparted:
			delete(set, o.remoteUnit)
		case opRelationBroken:
			clear(set)
		}
	}
	// Never nil: relation-list --format=json prints [] for no units, as Juju does.
	out := append([]string{}, slices.Collect(maps.Keys(set))...)
	sort.Slice(out, func(i, j int) bool { return unitNumber(out[i]) < unitNumber(out[j]) })
	return out
}

// relation-list [-r <id>] [--app]
func (t *toolCall) relationList(args []string) error {
	fs := newFlagSet()
	rel := t.relFlag(fs)
	var app bool
	fs.Bool(&app, "app")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	r, err := t.relation(*rel, fs.set["relation"])
	if err != nil {
		return err
	}
	if app {
		return t.write(r.remoteApp(t.u.app))
	}
	return t.write(t.members(r))
}

// ownBag returns the committed unit bag of the unit in r, with this hook's pending changes.
func (t *toolCall) ownBag(r *relation) map[string]string {
	out := map[string]string{}
	if ru := r.units[t.u.name]; ru != nil {
		maps.Copy(out, ru.bag.data)
	} else {
		maps.Copy(out, autoKeys(t.u))
	}
	applyPending(out, t.c.pendingUnit[r.id])
	return out
}

func applyPending(data, pending map[string]string) {
	for k, v := range pending {
		if v == "" {
			delete(data, k)
		} else {
			data[k] = v
		}
	}
}

func autoKeys(u *unit) map[string]string {
	return map[string]string{
		"private-address": u.machine.addr,
		"ingress-address": u.machine.addr,
		"egress-subnets":  u.machine.addr + "/32",
	}
}

// relation-get [<key>|-] [<unit-or-app>] [-r <id>] [--app]
func (t *toolCall) relationGet(args []string) error {
	fs := newFlagSet()
	rel := t.relFlag(fs)
	var appMode bool
	fs.Bool(&appMode, "app")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	key := "-"
	target := ""
	if len(pos) > 0 {
		key, pos = pos[0], pos[1:]
	}
	if len(pos) > 0 {
		target, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	r, err := t.relation(*rel, fs.set["relation"])
	if err != nil {
		return err
	}
	switch {
	case target != "" && names.IsValidUnit(target):
		if appMode {
			target, _ = names.UnitApplication(target)
		}
	case target != "" && names.IsValidApplication(target):
		if !appMode {
			return usagef("expected unit name, got application name %q", target)
		}
	case target != "":
		return usagef("invalid unit name %q", target)
	case appMode:
		target = t.c.remoteApp
	case t.c.remoteUnit != "":
		target = t.c.remoteUnit
	case t.c.remoteApp != "":
		target, appMode = t.c.remoteApp, true
	}
	if target == "" {
		return usagef("no unit or application specified")
	}
	var data map[string]string
	switch {
	case appMode && target == t.u.app:
		if !t.isLeaderNow() && !r.isPeer() {
			return errors.New("permission denied")
		}
		data = maps.Clone(r.apps[t.u.app].data)
		if t.isLeaderNow() {
			applyPending(data, t.c.pendingApp[r.id])
		}
	case appMode:
		b, ok := r.apps[target]
		if !ok {
			return fmt.Errorf("unknown application %s", target)
		}
		data = maps.Clone(b.data)
	case target == t.u.name:
		data = t.ownBag(r)
	default:
		ru, ok := r.units[target]
		if !ok {
			return fmt.Errorf("unknown unit %s", target)
		}
		data = maps.Clone(ru.bag.data)
	}
	if key == "-" {
		return t.write(data)
	}
	if v, ok := data[key]; ok {
		return t.write(v)
	}
	return t.write(nil)
}

// relation-set [-r <id>] [--app] [--file <path|->] key=value...
func (t *toolCall) relationSet(args []string) error {
	fs := newFlagSet()
	rel := t.relFlag(fs)
	var appMode bool
	var file, format string
	fs.Bool(&appMode, "app")
	fs.String(&file, "file")
	fs.String(&format, "format")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	kv, err := parseKeyValues(pos)
	if err != nil {
		return err
	}
	if fs.set["format"] {
		fmt.Fprint(&t.stderr, `--format flag deprecated for command "relation-set"`)
	}
	r, err := t.relation(*rel, fs.set["relation"])
	if err != nil {
		return err
	}
	settings := map[string]string{}
	if fs.set["file"] {
		if settings, err = t.readSettingsFile(file, "settings"); err != nil {
			return err
		}
	}
	maps.Copy(settings, kv)
	if appMode && !t.isLeaderNow() {
		return errors.New("cannot write relation settings")
	}
	pending := t.c.pendingUnit
	if appMode {
		pending = t.c.pendingApp
	}
	if pending[r.id] == nil {
		pending[r.id] = map[string]string{}
	}
	maps.Copy(pending[r.id], settings)
	return nil
}

var validStatuses = []string{"maintenance", "blocked", "waiting", "active"}

// status-set [--application] <status> [message]
func (t *toolCall) statusSet(args []string) error {
	fs := newFlagSet()
	var application bool
	fs.Bool(&application, "application")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return usagef("invalid args, require <status> [message]")
	}
	if !slices.Contains(validStatuses, pos[0]) {
		return usagef("invalid status %q, expected one of [%s]", pos[0], strings.Join(validStatuses, " "))
	}
	if len(pos) > 2 {
		return usagef("unrecognized args: %s", quoteList(pos[2:]))
	}
	st := StatusInfo{Current: pos[0], Since: time.Now()}
	if len(pos) == 2 {
		st.Message = pos[1]
	}
	if application {
		if !t.isLeaderNow() {
			return errors.New("this unit is not the leader")
		}
		t.app().status = &st
		return nil
	}
	t.u.workload = st
	return nil
}

// status-get [--include-data] [--application]
func (t *toolCall) statusGet(args []string) error {
	fs := newFlagSet()
	var include, application bool
	fs.Bool(&include, "include-data")
	fs.Bool(&application, "application")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	render := func(s StatusInfo) map[string]any {
		out := map[string]any{"status": s.Current}
		if include {
			out["message"] = s.Message
			out["status-data"] = map[string]any{}
		}
		return out
	}
	if application {
		if !t.isLeaderNow() {
			return errors.New("finding application status: this unit is not the leader")
		}
		app := render(t.m.appStatusLocked(t.app()))
		units := map[string]any{}
		for _, u := range t.m.units {
			if u.app == t.u.app {
				units[u.name] = render(u.workload)
			}
		}
		app["units"] = units
		return t.write(map[string]any{"application-status": app})
	}
	if !include && (t.format == "" || t.format == "smart") {
		return t.write(t.u.workload.Current)
	}
	return t.write(render(t.u.workload))
}

// application-version-set <version>
func (t *toolCall) applicationVersionSet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no version specified")
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	t.app().version = pos[0]
	return nil
}

func (t *toolCall) needAction() error {
	if t.c.action == nil {
		return errors.New("not running an action")
	}
	return nil
}

// action-get [<key>[.<key>...]]
func (t *toolCall) actionGet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, true)
	if err != nil {
		return err
	}
	if err := t.needAction(); err != nil {
		return err
	}
	if len(pos) == 0 {
		return t.write(t.c.action.Params)
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	var v any = t.c.action.Params
	for _, k := range strings.Split(pos[0], ".") {
		mp, ok := v.(map[string]any)
		if !ok {
			return t.write(nil)
		}
		v = mp[k]
	}
	return t.write(v)
}

var actionKeyRule = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)

// action-set <key>=<value>...
func (t *toolCall) actionSet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	type kv struct {
		keys  []string
		value string
	}
	var sets []kv
	for _, a := range pos {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usagef("argument %q must be of the form key...=value", a)
		}
		keys := strings.Split(k, ".")
		for _, seg := range keys {
			if !actionKeyRule.MatchString(seg) {
				return usagef("key %q must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods", seg)
			}
			switch seg {
			case "stdout", "stdout-encoding", "stderr", "stderr-encoding":
				return usagef("cannot set reserved action key %q", seg)
			}
		}
		sets = append(sets, kv{keys, v})
	}
	if err := t.needAction(); err != nil {
		return err
	}
	a := t.c.action
	if a.results == nil {
		a.results = map[string]any{}
	}
	for _, s := range sets {
		cur := a.results
		for _, k := range s.keys[:len(s.keys)-1] {
			next, ok := cur[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[k] = next
			}
			cur = next
		}
		cur[s.keys[len(s.keys)-1]] = s.value
	}
	return nil
}

// action-fail [<message>]
func (t *toolCall) actionFail(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("unrecognized args: %s", quoteList(pos[1:]))
	}
	if err := t.needAction(); err != nil {
		return err
	}
	t.c.action.failed = true
	t.c.action.message = "action failed without reason given, check action for errors"
	if len(pos) == 1 {
		t.c.action.message = pos[0]
	}
	return nil
}

// action-log <message...>
func (t *toolCall) actionLog(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no message specified")
	}
	if err := t.needAction(); err != nil {
		return err
	}
	t.c.action.logs = append(t.c.action.logs, strings.Join(pos, " "))
	t.m.notifyLocked()
	return nil
}

// is-leader
func (t *toolCall) isLeader(args []string) error {
	pos, err := t.parse(newFlagSet(), args, true)
	if err != nil {
		return err
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	return t.write(t.isLeaderNow())
}

// leader-get [<key>|-]
func (t *toolCall) leaderGet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, true)
	if err != nil {
		return err
	}
	key := "-"
	if len(pos) > 0 {
		key, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	if strings.Contains(key, "=") {
		return usagef("invalid key %q", key)
	}
	data := t.app().leaderData
	if key == "-" {
		return t.write(maps.Clone(data))
	}
	return t.write(data[key])
}

// leader-set key=value...
func (t *toolCall) leaderSet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	kv, err := parseKeyValues(pos)
	if err != nil {
		return err
	}
	if !t.isLeaderNow() {
		return errors.New("cannot write leadership settings: cannot write settings: not the leader")
	}
	a := t.app()
	b := &bag{data: a.leaderData, version: a.leaderVer}
	if applyChanges(b, kv) {
		a.leaderVer = b.version
		// The leader does not get leader-settings-changed for its own writes.
		t.u.local.leaderVerSeen = a.leaderVer
		t.m.notifyLocked()
	}
	return nil
}

// juju-log [-l LEVEL] [--debug] <message...>
func (t *toolCall) jujuLog(args []string) error {
	fs := newFlagSet()
	level := "INFO"
	var debug bool
	var format string
	fs.String(&level, "log-level", "l")
	fs.Bool(&debug, "debug")
	fs.String(&format, "format")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no message specified")
	}
	if format != "" {
		fmt.Fprint(&t.stderr, `--format flag deprecated for command "juju-log"`)
	}
	logLevel := "INFO"
	if debug {
		logLevel = "DEBUG"
	} else if level != "" {
		var ok bool
		if logLevel, ok = parseLogLevel(level); !ok {
			t.m.logLocked(t.u.name, "WARNING", fmt.Sprintf("Specified log level of %q is not valid", level))
			logLevel = "INFO"
		}
	}
	msg := strings.Join(pos, " ")
	if t.c.op != nil && t.c.op.isRelation() {
		msg = fmt.Sprintf("%s:%d: %s", t.c.op.endpoint, t.c.relID, msg)
	}
	t.m.logLocked(t.u.name, logLevel, msg)
	t.m.notifyLocked()
	return nil
}

// parseLogLevel reads a level as loggo.ParseLevel does: any case, WARN for WARNING.
func parseLogLevel(s string) (string, bool) {
	switch l := strings.ToUpper(s); l {
	case "TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL":
		return l, true
	case "WARN":
		return "WARNING", true
	}
	return "", false
}

var portRule = regexp.MustCompile(`^(\d+)(?:-(\d+))?(?:/(tcp|udp))?$`)

func parsePortRange(s string) (string, error) {
	s = strings.ToLower(s)
	if s == "icmp" {
		return s, nil
	}
	mt := portRule.FindStringSubmatch(s)
	if mt == nil {
		return "", usagef("expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp; got %q", s)
	}
	from, _ := strconv.Atoi(mt[1])
	to := from
	if mt[2] != "" {
		to, _ = strconv.Atoi(mt[2])
	}
	if from < 1 || to > 65535 || to < from {
		return "", usagef("invalid port range %q", s)
	}
	proto := mt[3]
	if proto == "" {
		proto = "tcp"
	}
	if from == to {
		return fmt.Sprintf("%d/%s", from, proto), nil
	}
	return fmt.Sprintf("%d-%d/%s", from, to, proto), nil
}

// open-port / close-port <port>[/<proto>] | <from>-<to>[/<proto>] | icmp [--endpoints a,b]
func (t *toolCall) port(open bool, args []string) error {
	fs := newFlagSet()
	var endpoints, format string
	fs.String(&endpoints, "endpoints")
	fs.String(&format, "format")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("no port or range specified")
	}
	p, err := parsePortRange(pos[0])
	if err != nil {
		return err
	}
	if format != "" {
		name := "close-port"
		if open {
			name = "open-port"
		}
		fmt.Fprintf(&t.stderr, "--format flag deprecated for command %q", name)
	}
	t.c.pendingPorts = append(t.c.pendingPorts, portChange{open: open, port: p})
	return nil
}

// opened-ports [--endpoints]
func (t *toolCall) openedPorts(args []string) error {
	fs := newFlagSet()
	var endpoints bool
	fs.Bool(&endpoints, "endpoints")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	out := []string{}
	for _, p := range sortedPorts(t.u.ports) {
		if endpoints {
			p += " (*)"
		}
		out = append(out, p)
	}
	return t.write(out)
}

func sortedPorts(ports map[string]bool) []string {
	out := sortedStrings(ports)
	sort.SliceStable(out, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.FieldsFunc(out[i], func(r rune) bool { return r == '-' || r == '/' })[0])
		b, _ := strconv.Atoi(strings.FieldsFunc(out[j], func(r rune) bool { return r == '-' || r == '/' })[0])
		return a < b
	})
	return out
}

// network-get <binding> [--bind-address] [--ingress-address] [--egress-subnets] [-r <id>]
func (t *toolCall) networkGet(args []string) error {
	fs := newFlagSet()
	var bind, ingress, egress, primary bool
	fs.Bool(&bind, "bind-address")
	fs.Bool(&ingress, "ingress-address")
	fs.Bool(&egress, "egress-subnets")
	fs.Bool(&primary, "primary-address")
	rel := t.relFlag(fs)
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no arguments specified")
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	if fs.set["relation"] {
		if _, err := t.relation(*rel, true); err != nil {
			return err
		}
	}
	binding := pos[0]
	meta := t.app().ch.Meta()
	if _, ok := meta.CombinedRelations()[binding]; !ok && binding != "juju-info" {
		if _, ok := meta.ExtraBindings[binding]; !ok {
			return fmt.Errorf("undefined for unit charm: endpoint %q not valid", binding)
		}
	}
	addr := t.u.machine.addr
	subnets := []string{addr + "/32"}
	var sel []string
	if bind || primary {
		sel = append(sel, "bind-address")
	}
	if ingress {
		sel = append(sel, "ingress-address")
	}
	if egress {
		sel = append(sel, "egress-subnets")
	}
	values := map[string]any{"bind-address": addr, "ingress-address": addr, "egress-subnets": subnets}
	switch len(sel) {
	case 0:
		iface := map[string]any{
			"mac-address":    "",
			"interface-name": "lo",
			"addresses":      []any{map[string]any{"hostname": "", "value": addr, "cidr": "127.0.0.0/8"}},
		}
		if t.format == "yaml" || t.format == "" || t.format == "smart" {
			iface["macaddress"] = ""
			iface["interfacename"] = "lo"
			iface["addresses"] = []any{map[string]any{"hostname": "", "value": addr, "cidr": "127.0.0.0/8", "address": addr}}
		}
		return t.write(map[string]any{
			"bind-addresses":    []any{iface},
			"egress-subnets":    subnets,
			"ingress-addresses": []string{addr},
		})
	case 1:
		return t.write(values[sel[0]])
	}
	out := map[string]any{}
	for _, s := range sel {
		out[s] = values[s]
	}
	return t.write(out)
}

// unit-get private-address|public-address
func (t *toolCall) unitGet(args []string) error {
	pos, err := t.parse(newFlagSet(), args, true)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("no setting specified")
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	switch pos[0] {
	case "private-address", "public-address":
		return t.write(t.u.machine.addr)
	}
	return usagef("unknown setting %q", pos[0])
}

func (t *toolCall) currentState() map[string]string {
	out := maps.Clone(t.u.state)
	for k, v := range t.c.pendingState {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

// state-get [<key>|-] [--strict]
func (t *toolCall) stateGet(args []string) error {
	fs := newFlagSet()
	var strict bool
	fs.Bool(&strict, "strict")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	key := "-"
	if len(pos) > 0 {
		key, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	st := t.currentState()
	if key == "-" {
		if len(st) == 0 {
			return t.write(nil)
		}
		return t.write(st)
	}
	v, ok := st[key]
	if !ok && strict {
		return fmt.Errorf("%q not found", key)
	}
	return t.write(v)
}

// state-set [--file <path|->] key=value...
func (t *toolCall) stateSet(args []string) error {
	fs := newFlagSet()
	var file string
	fs.String(&file, "file")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	kv, err := parseKeyValues(pos)
	if err != nil {
		return err
	}
	settings := map[string]string{}
	if fs.set["file"] {
		if settings, err = t.readSettingsFile(file, "state"); err != nil {
			return err
		}
	}
	maps.Copy(settings, kv)
	for k, v := range settings {
		if len(k) > 256 {
			return fmt.Errorf("key %q too long: max 256 bytes", k)
		}
		if len(v) > 64*1024 {
			return fmt.Errorf("value of %q too large: max 64 KiB", k)
		}
		if v == "" {
			t.c.pendingState[k] = nil
		} else {
			t.c.pendingState[k] = &v
		}
	}
	return nil
}

// state-delete <key>
func (t *toolCall) stateDelete(args []string) error {
	pos, err := t.parse(newFlagSet(), args, false)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("specify a key")
	}
	t.c.pendingState[pos[0]] = nil
	return nil
}

// readSettingsFile reads the YAML map of a --file argument ("-" for standard input, a
// relative path from the hook's directory), as relation-set and state-set take it.
func (t *toolCall) readSettingsFile(file, what string) (map[string]string, error) {
	var data []byte
	if file == "-" {
		if !t.stdinSet {
			return nil, errNeedStdin
		}
		data = t.stdin
	} else {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(t.dir, p)
		}
		var err error
		if data, err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	settings := map[string]string{}
	if err := yaml.Unmarshal(data, &settings); err != nil {
		return nil, fmt.Errorf("cannot parse %s file: %w", what, err)
	}
	return settings, nil
}
