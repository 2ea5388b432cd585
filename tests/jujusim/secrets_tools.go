package jujusim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/juju/names/v5"
)

// The secret-* hook tools, with the flags, output and errors of Juju 3.6's jujuc
// (internal/worker/uniter/runner/jujuc/secret-*.go) and the checks of the uniter's hook
// context and the secrets manager facade behind them.

var secretTools = map[string]toolFunc{
	"secret-add":      (*toolCall).secretAdd,
	"secret-set":      (*toolCall).secretSet,
	"secret-get":      (*toolCall).secretGet,
	"secret-ids":      (*toolCall).secretIDs,
	"secret-info-get": (*toolCall).secretInfoGet,
	"secret-grant":    (*toolCall).secretGrant,
	"secret-revoke":   (*toolCall).secretRevoke,
	"secret-remove":   (*toolCall).secretRemove,
}

var errNotLeader = errors.New("this unit is not the leader")

// secretUpsert holds the flags secret-add and secret-set share.
type secretUpsert struct {
	expire, rotate, description, label, file, owner string
	fs                                              *flagSet
	content                                         map[string]string // plain values
	expireAt                                        time.Time
}

func newSecretUpsert(owner bool) *secretUpsert {
	u := &secretUpsert{fs: newFlagSet(), owner: ownerApplication}
	u.fs.String(&u.expire, "expire")
	u.fs.String(&u.rotate, "rotate")
	u.fs.String(&u.description, "description")
	u.fs.String(&u.label, "label")
	u.fs.String(&u.file, "file")
	if owner {
		u.fs.String(&u.owner, "owner")
	}
	return u
}

// init is secretUpsertCommand.Init: every error is a usage error.
func (u *secretUpsert) init(t *toolCall, args []string) error {
	if u.expire != "" {
		at, err := parseExpire(u.expire, t.m.secretNowLocked())
		if err != nil {
			return usagef("%s", err)
		}
		u.expireAt = at
	}
	if u.rotate != "" && !slices.Contains(rotatePolicies, u.rotate) {
		return usagef("rotate policy %q not valid", u.rotate)
	}
	if u.owner != ownerApplication && u.owner != ownerUnit {
		return usagef("secret owner %q not valid", u.owner)
	}
	content, err := ParseSecretContent(args, t.dir)
	if err != nil {
		return usagef("%s", err)
	}
	if u.file != "" {
		p := u.file
		if !strings.HasPrefix(p, "/") {
			p = t.dir + "/" + p
		}
		fromFile, err := ReadSecretFile(p)
		if err != nil {
			return usagef("%s", err)
		}
		maps.Copy(content, fromFile)
	}
	u.content = content
	return nil
}

// labelTaken says whether another secret of the same owner already has the label.
func (t *toolCall) labelTaken(label, except string) bool {
	for _, s := range t.ownedView() {
		if s.id != except && s.label == label {
			return true
		}
	}
	return false
}

// secret-add [--owner application|unit] [--label] [--description] [--expire] [--rotate]
// [--file] [key[#base64|#file]=value...]
func (t *toolCall) secretAdd(args []string) error {
	u := newSecretUpsert(true)
	pos, err := t.parse(u.fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) < 1 && u.file == "" {
		return usagef("missing secret value or filename")
	}
	if err := u.init(t, pos); err != nil {
		return err
	}
	if len(u.content) == 0 {
		return errors.New("empty secret value not valid")
	}
	owner := t.u.app
	if u.owner == ownerUnit {
		owner = t.u.name
	} else if !t.isLeaderNow() {
		return errNotLeader
	}
	if u.label != "" && t.labelTaken(u.label, "") {
		return fmt.Errorf("secret with label %q already exists", u.label)
	}
	enc, err := encodeContent(u.content)
	if err != nil {
		return err
	}
	now := t.m.secretNowLocked()
	s := &secret{
		id: newSecretID(), ownerKind: u.owner, owner: owner, label: u.label, description: u.description,
		created: now, updated: now, latest: 1,
		revisions: map[int]*secretRevision{1: {rev: 1, content: enc, expire: u.expireAt, created: now}},
	}
	if u.rotate != "" && u.rotate != "never" {
		s.rotate = u.rotate
		s.nextRotate = nextRotateTime(u.rotate, now, now)
	}
	p := t.c.secretChanges()
	p.changed[s.id], p.created[s.id] = s, true
	fmt.Fprintln(&t.stdout, t.m.charmSecretURI(s.id))
	return nil
}

// manageable returns the secret the unit may change, with the facade's errors.
func (t *toolCall) manageable(id string) (*secret, error) {
	s := t.viewSecret(id)
	if s == nil {
		return nil, fmt.Errorf("secret %q not found", id)
	}
	if t.m.ownsLocked(t.u, s) {
		return t.editSecret(id), nil
	}
	if s.ownerKind == ownerApplication && s.owner == t.u.app {
		return nil, errNotLeader
	}
	return nil, errors.New("permission denied")
}

// secret-set <ID> [key[#base64]=value...] [--label] [--description] [--expire] [--rotate] [--file]
func (t *toolCall) secretSet(args []string) error {
	u := newSecretUpsert(false)
	pos, err := t.parse(u.fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return usagef("missing secret URI")
	}
	id, err := parseSecretURI(pos[0])
	if err != nil {
		return usagef("%s", err)
	}
	if err := u.init(t, pos[1:]); err != nil {
		return err
	}
	if _, err := t.manageable(id); err != nil {
		return err
	}
	var enc map[string]string
	if len(u.content) > 0 {
		if enc, err = encodeContent(u.content); err != nil {
			return err
		}
	}
	if u.label != "" && t.labelTaken(u.label, id) {
		return fmt.Errorf("secret with label %q already exists", u.label)
	}
	s := t.editSecret(id)
	now := t.m.secretNowLocked()
	if enc != nil && contentChecksum(enc) != contentChecksum(s.revisions[s.latest].content) {
		s.latest++
		s.revisions[s.latest] = &secretRevision{rev: s.latest, content: enc, created: now}
		s.updated = now
	}
	if u.fs.set["label"] {
		s.label = u.label
	}
	if u.fs.set["description"] {
		s.description = u.description
	}
	if !u.expireAt.IsZero() {
		r := *s.revisions[s.latest]
		r.expire = u.expireAt
		s.revisions[s.latest] = &r
	}
	if u.rotate != "" {
		wasRotating := s.rotate != "" && s.rotate != "never"
		s.rotate = u.rotate
		switch {
		case u.rotate == "never":
			s.nextRotate = time.Time{}
		case !wasRotating:
			s.nextRotate = nextRotateTime(u.rotate, now, now)
		}
	}
	return nil
}

// readSecret is secret-get: the hook's own pending secrets first, then the owner's view, then
// the consumer's, as the uniter context and the secrets manager facade resolve them.
func (t *toolCall) readSecret(id, label string, refresh, peek bool) (map[string]string, error) {
	st := t.m.secretsLocked()
	if p := t.c.secrets; p != nil {
		for sid, s := range p.changed {
			if p.removed[sid] {
				continue
			}
			match := (id != "" && sid == id) || (label != "" && s.label == label)
			switch {
			case match && p.created[sid]:
				if id != "" && label != "" {
					s.label = label
				}
				return s.content(s.latest)
			case match && (refresh || peek) && s.latest != p.original[sid]:
				return s.content(s.latest)
			}
		}
	}
	if id == "" {
		for _, s := range t.ownedView() {
			if s.label == label {
				id, label = s.id, ""
				break
			}
		}
	}
	// Secrets of the unit or of its application: the latest revision, whoever asks.
	var own *secret
	for _, s := range st.secrets {
		if !(s.ownerKind == ownerUnit && s.owner == t.u.name || s.ownerKind == ownerApplication && s.owner == t.u.app) {
			continue
		}
		if (id != "" && s.id == id) || (id == "" && label != "" && s.label == label) {
			own = s
			break
		}
	}
	if own != nil {
		if id != "" && label != "" && t.m.ownsLocked(t.u, own) {
			own.label = label
		}
		if own.ownerKind == ownerApplication {
			t.consumer(own)
		}
		return own.content(own.latest)
	}
	if id == "" {
		for sid, byUnit := range st.consumers {
			if c := byUnit[t.u.name]; c != nil && c.label == label {
				id = sid
				break
			}
		}
		if id == "" {
			return nil, fmt.Errorf("consumer label %q not found", label)
		}
		label = ""
	}
	s := st.secrets[id]
	if s == nil {
		return nil, fmt.Errorf("secret %q not found", id)
	}
	if !t.m.canReadLocked(t.u, s) {
		return nil, errors.New("permission denied")
	}
	c := t.consumer(s)
	if c.current == 0 {
		refresh = true
	}
	want := c.current
	if refresh || peek {
		want = s.latest
	}
	if refresh && c.current != s.latest {
		c.current = s.latest
		t.m.pruneLocked(s)
		t.m.notifyLocked() // an older revision may have become obsolete
	}
	if label != "" {
		c.label = label
	}
	return s.content(want)
}

// consumer returns (creating) the unit's consumer record of s, pinned to no revision yet.
// The units of an owning application get one too (never pinned), so that they hear of new
// revisions with secret-changed, as Juju's facade arranges for peer units.
func (t *toolCall) consumer(s *secret) *secretConsumer {
	st := t.m.secretsLocked()
	if st.consumers[s.id] == nil {
		st.consumers[s.id] = map[string]*secretConsumer{}
	}
	c := st.consumers[s.id][t.u.name]
	if c == nil {
		c = &secretConsumer{notified: s.latest}
		st.consumers[s.id][t.u.name] = c
	}
	return c
}

func (t *toolCall) secretFormat() error {
	switch t.format {
	case "":
		t.format = "yaml"
	case "yaml", "json":
	default:
		return usagef("invalid value %q for option --format: unknown format %q", t.format, t.format)
	}
	return nil
}

// secretTarget takes the optional secret URI from the positional arguments of secret-get
// and secret-info-get: a secret is named by a URI, a label, or both.
func secretTarget(pos []string, label string) (id string, rest []string, err error) {
	if len(pos) > 0 {
		if id, err = parseSecretURI(pos[0]); err != nil {
			return "", nil, usagef("secret URI %q not valid", pos[0])
		}
		pos = pos[1:]
	}
	if id == "" && label == "" {
		return "", nil, usagef("require either a secret URI or label")
	}
	return id, pos, nil
}

// secret-get <ID> [key[#base64]] [--label] [--peek|--refresh]
func (t *toolCall) secretGet(args []string) error {
	fs := newFlagSet()
	var label string
	var peek, refresh bool
	fs.String(&label, "label")
	fs.Bool(&peek, "peek")
	fs.Bool(&refresh, "refresh")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if err := t.secretFormat(); err != nil {
		return err
	}
	id, pos, err := secretTarget(pos, label)
	if err != nil {
		return err
	}
	if peek && refresh {
		return usagef("specify one of --peek or --refresh but not both")
	}
	key := ""
	if len(pos) > 0 {
		key, pos = pos[0], pos[1:]
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	enc, err := t.readSecret(id, label, refresh, peek)
	if err != nil {
		return err
	}
	if key == "" {
		return t.write(decodeContent(enc))
	}
	k, b64 := strings.CutSuffix(key, "#base64")
	v, ok := enc[k]
	if !ok {
		return fmt.Errorf("secret key value %q not found", k)
	}
	if b64 {
		return t.write(v)
	}
	return t.write(decodeContent(map[string]string{k: v})[k])
}

// secret-ids
func (t *toolCall) secretIDs(args []string) error {
	pos, err := t.parse(newFlagSet(), args, true)
	if err != nil {
		return err
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	var out []string
	for _, s := range t.ownedView() {
		out = append(out, s.id)
	}
	return t.write(out)
}

// secretInfo is secret-info-get's metadataDisplay.
type secretInfo struct {
	Revision    int         `yaml:"revision" json:"revision"`
	Label       string      `yaml:"label" json:"label"`
	Owner       string      `yaml:"owner" json:"owner"`
	Description string      `yaml:"description,omitempty" json:"description,omitempty"`
	Rotation    string      `yaml:"rotation,omitempty" json:"rotation,omitempty"`
	Expiry      *time.Time  `yaml:"expiry,omitempty" json:"expiry,omitempty"`
	Rotates     *time.Time  `yaml:"rotates,omitempty" json:"rotates,omitempty"`
	Access      []secretAcl `yaml:"access,omitempty" json:"access,omitempty"`
}

type secretAcl struct {
	Target string `yaml:"target" json:"target"`
	Scope  string `yaml:"scope" json:"scope"`
	Role   string `yaml:"role" json:"role"`
}

// access lists a secret's grants as Juju's access info: entity tags and relation scopes.
func (m *Model) accessLocked(s *secret) []secretAcl {
	var out []secretAcl
	for _, g := range s.grants {
		a := secretAcl{Role: "view", Scope: "model-" + m.uuid}
		if g.relID >= 0 {
			r := m.relations[g.relID]
			if r == nil || r.dying {
				continue
			}
			key := strings.NewReplacer(":", ".", " ", "#").Replace(relationKey(r.eps))
			a.Scope = "relation-" + key
		}
		if g.unit != "" {
			a.Target = "unit-" + strings.ReplaceAll(g.unit, "/", "-")
		} else {
			a.Target = "application-" + g.app
		}
		out = append(out, a)
	}
	return out
}

// secret-info-get [<ID>] [--label]
func (t *toolCall) secretInfoGet(args []string) error {
	fs := newFlagSet()
	var label string
	fs.String(&label, "label")
	pos, err := t.parse(fs, args, true)
	if err != nil {
		return err
	}
	if err := t.secretFormat(); err != nil {
		return err
	}
	id, pos, err := secretTarget(pos, label)
	if err != nil {
		return err
	}
	if id != "" && label != "" {
		return usagef("specify either a secret URI or label but not both")
	}
	if err := noMoreArgs(pos); err != nil {
		return err
	}
	for _, s := range t.ownedView() {
		if (id != "" && s.id == id) || (id == "" && s.label == label) {
			info := secretInfo{Revision: s.latest, Label: s.label, Owner: s.ownerKind, Description: s.description, Access: t.m.accessLocked(s)}
			if s.rotate != "" && s.rotate != "never" {
				info.Rotation = s.rotate
				r := s.nextRotate
				info.Rotates = &r
			}
			if r := s.revisions[s.latest]; r != nil && !r.expire.IsZero() {
				e := r.expire
				info.Expiry = &e
			}
			return t.write(map[string]secretInfo{s.id: info})
		}
	}
	want := id
	if want == "" {
		want = label
	}
	return fmt.Errorf("secret %q not found", want)
}

// secret-grant <ID> -r <relation> [--unit <unit>]
func (t *toolCall) secretGrant(args []string) error {
	fs := newFlagSet()
	rel := t.relFlag(fs)
	var unitName string
	fs.String(&unitName, "unit")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return usagef("missing secret URI")
	}
	id, err := parseSecretURI(pos[0])
	if err != nil {
		return usagef("%s", err)
	}
	r, err := t.relation(*rel, fs.set["relation"])
	if err != nil {
		return err
	}
	app := r.remoteApp(t.u.app)
	if unitName != "" {
		if !names.IsValidUnit(unitName) {
			return usagef("unit %q not valid", unitName)
		}
		if a, _ := names.UnitApplication(unitName); a != app {
			return usagef("cannot specify unit %q in relation to application %q", unitName, app)
		}
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	var s *secret
	for _, o := range t.ownedView() {
		if o.id == id {
			s = o
		}
	}
	if s == nil {
		return fmt.Errorf("secret %q not found", id)
	}
	g := secretGrant{app: app, relID: r.id}
	if unitName != "" {
		g = secretGrant{unit: unitName, relID: r.id}
	}
	for _, e := range s.grants {
		if e.relID != r.id {
			continue
		}
		if e == g || e.app != "" {
			return nil // already granted, or granted to the whole application
		}
		if g.app != "" {
			return errors.New("any unit level grants need to be revoked before granting access to the corresponding application")
		}
	}
	s = t.editSecret(id)
	s.grants = append(s.grants, g)
	return nil
}

// secret-revoke <ID> [-r <relation>] [--app <app>] [--unit <unit>]
func (t *toolCall) secretRevoke(args []string) error {
	fs := newFlagSet()
	rel := t.relFlag(fs)
	var app, unitName string
	fs.String(&app, "app", "application")
	fs.String(&unitName, "unit")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return usagef("missing secret URI")
	}
	id, err := parseSecretURI(pos[0])
	if err != nil {
		return usagef("%s", err)
	}
	if app != "" && !names.IsValidApplication(app) {
		return usagef("application %q not valid", app)
	}
	if unitName != "" && !names.IsValidUnit(unitName) {
		return usagef("unit %q not valid", unitName)
	}
	if app != "" && unitName != "" {
		return usagef("specify only one of application or unit")
	}
	if fs.set["relation"] || t.c.relID >= 0 {
		r, err := t.relation(*rel, fs.set["relation"])
		if err != nil {
			return err
		}
		if app != "" {
			return usagef("do not specify both relation and app")
		}
		app = r.remoteApp(t.u.app)
	}
	if app == "" && unitName == "" {
		return usagef("missing relation or application or unit")
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	s, err := t.manageable(id)
	if err != nil {
		return err
	}
	s.grants = slices.DeleteFunc(s.grants, func(g secretGrant) bool {
		return (unitName == "" && g.app == app) || (unitName != "" && g.unit == unitName)
	})
	return nil
}

// secret-remove <ID> [--revision N]
func (t *toolCall) secretRemove(args []string) error {
	fs := newFlagSet()
	var revision string
	fs.String(&revision, "revision")
	pos, err := t.parse(fs, args, false)
	if err != nil {
		return err
	}
	rev := 0
	if revision != "" {
		if rev, err = strconv.Atoi(revision); err != nil {
			return usagef("invalid value %q for flag --revision: parse error", revision)
		}
	}
	if len(pos) < 1 {
		return usagef("missing secret URI")
	}
	id, err := parseSecretURI(pos[0])
	if err != nil {
		return usagef("%s", err)
	}
	if err := noMoreArgs(pos[1:]); err != nil {
		return err
	}
	s, err := t.manageable(id)
	if err != nil {
		return err
	}
	if rev <= 0 {
		t.c.secretChanges().removed[id] = true
		return nil
	}
	if _, ok := s.revisions[rev]; !ok {
		return fmt.Errorf("secret revision %d for %q not found", rev, id)
	}
	delete(s.revisions, rev)
	if len(s.revisions) == 0 {
		t.c.secretChanges().removed[id] = true
	}
	return nil
}
