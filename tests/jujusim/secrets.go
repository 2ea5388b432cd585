package jujusim

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v2"
)

// Juju secrets as a Juju 3.6 controller keeps them: charm secrets owned by an application
// (managed by its leader) or by one unit, and user secrets owned by the model; their
// revisions; grants to related applications or units, scoped to a relation (or to the model
// for user secrets); and consumers, each pinned to the revision it last read. Content written
// by a hook is committed with the hook's other changes, only if it exits 0; what a consumer
// tracks (its label and pinned revision) is saved at once, as the controller does.

const (
	ownerApplication = "application"
	ownerUnit        = "unit"
	ownerModel       = "model"

	// maxSecretContent bounds one revision's encoded content.
	maxSecretContent = 1 << 20
	// rotateRetryDelay is how soon a secret-rotate hook that made no new revision runs again
	// (core/secrets RotateRetryDelay).
	rotateRetryDelay = 5 * time.Minute
)

var (
	secretKeyRule  = regexp.MustCompile(`^([a-z](?:-?[a-z0-9]){2,})$`)
	secretIDRule   = regexp.MustCompile(`^[0-9a-v]{20}$`)
	secretUUIDRule = regexp.MustCompile(`^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$`)
	rotatePolicies = []string{"never", "hourly", "daily", "weekly", "monthly", "quarterly", "yearly"}
)

// secret is one secret as the controller stores it.
type secret struct {
	id          string
	ownerKind   string // ownerApplication, ownerUnit or ownerModel
	owner       string // application or unit name; the model name for user secrets
	label       string // the owner's label; the name of a user secret
	description string
	rotate      string // rotate policy, "" for never
	nextRotate  time.Time
	autoPrune   bool
	created     time.Time
	updated     time.Time
	revisions   map[int]*secretRevision
	latest      int
	grants      []secretGrant
}

type secretRevision struct {
	rev     int
	content map[string]string // base64-encoded values, as Juju stores them
	expire  time.Time
	created time.Time
}

// secretGrant lets an application (all its units) or one unit read a secret, for as long as
// the relation it was made in lives (relID -1: a user secret granted with grant-secret).
type secretGrant struct {
	app   string
	unit  string
	relID int
}

// secretConsumer is what the controller keeps for a unit that has read a secret: its label
// and the revision secret-get returns, plus what the unit agent has seen (the latest revision
// its secret-changed hook has run for).
type secretConsumer struct {
	label    string
	current  int
	notified int
}

// secretStore holds the model's secrets, guarded by the model lock.
type secretStore struct {
	secrets   map[string]*secret
	consumers map[string]map[string]*secretConsumer // secret id -> unit -> consumer
	// done records the secret-remove and secret-expired hooks each unit has run, as
	// "<unit> <hook> <id>/<rev>".
	done map[string]bool
	// offset moves the secrets clock forward (AdvanceSecretClock).
	offset time.Duration
	timers map[time.Time]*time.Timer
}

func (m *Model) secretsLocked() *secretStore {
	if m.sec == nil {
		m.sec = &secretStore{
			secrets:   map[string]*secret{},
			consumers: map[string]map[string]*secretConsumer{},
			done:      map[string]bool{},
			timers:    map[time.Time]*time.Timer{},
		}
	}
	return m.sec
}

func (m *Model) secretNowLocked() time.Time { return time.Now().Add(m.secretsLocked().offset) }

// wakeAtLocked makes the agents look again when a rotation or expiry falls due.
func (m *Model) wakeAtLocked(at time.Time) {
	if at.IsZero() {
		return
	}
	s := m.secretsLocked()
	d := at.Sub(m.secretNowLocked())
	if d < 0 {
		d = 0
	}
	if _, ok := s.timers[at]; ok {
		return
	}
	s.timers[at] = time.AfterFunc(d, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(s.timers, at)
		if !m.closed {
			m.notifyLocked()
		}
	})
}

// AdvanceSecretClock moves the clock that rotation and expiry are measured by forward, so a
// test can make a rotation or an expiry fall due at once.
func (m *Model) AdvanceSecretClock(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.secretsLocked().offset += d
	m.notifyLocked()
}

func (s *secret) clone() *secret {
	c := *s
	c.revisions = maps.Clone(s.revisions)
	c.grants = slices.Clone(s.grants)
	return &c
}

func (s *secret) content(rev int) (map[string]string, error) {
	r, ok := s.revisions[rev]
	if !ok {
		return nil, fmt.Errorf("secret revision %d for %q not found", rev, s.id)
	}
	return r.content, nil
}

// newSecretID returns a new 20-character secret id in the alphabet of Juju's xids.
func newSecretID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuv"
	b := make([]byte, 20)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// parseSecretURI accepts what core/secrets.ParseURI accepts: "secret:<id>",
// "secret://<model-uuid>/<id>" and a bare id.
func parseSecretURI(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("secret URI %q not valid", s)
	}
	if u.Scheme != "" && u.Scheme != "secret" {
		return "", fmt.Errorf("secret URI scheme %q not valid", u.Scheme)
	}
	if u.Host != "" && !secretUUIDRule.MatchString(u.Host) {
		return "", fmt.Errorf("host controller UUID %q not valid", u.Host)
	}
	id := strings.TrimLeft(u.Path, "/")
	if id == "" {
		id = u.Opaque
	}
	if !secretIDRule.MatchString(id) {
		return "", fmt.Errorf("secret URI %q not valid", s)
	}
	return id, nil
}

// charmSecretURI is how the uniter facade of Juju 3.6 spells a charm secret's URI: with the
// model UUID as its source.
func (m *Model) charmSecretURI(id string) string { return "secret://" + m.uuid + "/" + id }

// userSecretURI is how `juju add-secret` prints a user secret's URI.
func userSecretURI(id string) string { return "secret:" + id }

// ParseSecretContent turns key=value arguments into secret content, as Juju's
// secrets.CreateSecretData does: "key#base64=..." is already base64-encoded, "key#file=path"
// reads the value from a file (relative paths from dir). Keys are lower-case, at least three
// characters. The values returned are plain (decoded).
func ParseSecretContent(args []string, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		stripped := strings.TrimRight(a, "=")
		i := strings.Index(stripped, "=")
		if i < 1 {
			return nil, fmt.Errorf("key value %q not valid", a)
		}
		key, value := a[:i], a[i+1:]
		switch {
		case strings.HasSuffix(key, "#base64"):
			key = strings.TrimSuffix(key, "#base64")
			b, err := base64.StdEncoding.DecodeString(value)
			if err != nil {
				return nil, fmt.Errorf("cannot decode value of %q: %w", key, err)
			}
			value = string(b)
		case strings.HasSuffix(key, "#file"):
			key = strings.TrimSuffix(key, "#file")
			p := value
			if !filepath.IsAbs(p) && dir != "" {
				p = filepath.Join(dir, p)
			}
			b, err := readBounded(p)
			if err != nil {
				return nil, err
			}
			value = string(b)
		}
		if !secretKeyRule.MatchString(key) {
			return nil, fmt.Errorf("key %q not valid", key)
		}
		out[key] = value
	}
	return out, nil
}

// ReadSecretFile reads a YAML or JSON map of secret content, as secrets.ReadSecretData does
// (keys with #base64 hold encoded values). The values returned are plain.
func ReadSecretFile(p string) (map[string]string, error) {
	b, err := readBounded(p)
	if err != nil {
		return nil, err
	}
	data := map[string]string{}
	if err := json.Unmarshal(b, &data); err != nil {
		if err := yaml.Unmarshal(b, &data); err != nil {
			return nil, err
		}
	}
	for k := range data {
		key := strings.TrimSuffix(k, "#base64")
		if !secretKeyRule.MatchString(key) {
			return nil, fmt.Errorf("key %q not valid", key)
		}
		if key != k {
			v, err := base64.StdEncoding.DecodeString(data[k])
			if err != nil {
				return nil, fmt.Errorf("cannot decode value of %q: %w", key, err)
			}
			delete(data, k)
			data[key] = string(v)
		}
	}
	return data, nil
}

func readBounded(p string) ([]byte, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxSecretContent {
		return nil, fmt.Errorf("secret file %q too large: max %d bytes", p, maxSecretContent)
	}
	return os.ReadFile(p)
}

func encodeContent(plain map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(plain))
	size := 0
	for k, v := range plain {
		out[k] = base64.StdEncoding.EncodeToString([]byte(v))
		size += len(k) + len(out[k])
	}
	if size > maxSecretContent {
		return nil, fmt.Errorf("secret content too large: max %d bytes", maxSecretContent)
	}
	return out, nil
}

func decodeContent(enc map[string]string) map[string]string {
	out := make(map[string]string, len(enc))
	for k, v := range enc {
		b, _ := base64.StdEncoding.DecodeString(v)
		out[k] = string(b)
	}
	return out
}

func contentChecksum(enc map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(enc)) {
		fmt.Fprintf(h, "%s=%s\n", k, enc[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// parseExpire reads --expire: an RFC 3339 time (with or without zone) or a positive duration.
func parseExpire(spec string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, spec); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05", spec); err == nil {
		return t.UTC(), nil
	}
	d, err := time.ParseDuration(spec)
	if err != nil {
		return time.Time{}, fmt.Errorf("expire time or duration %q not valid", spec)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("negative expire duration %q not valid", spec)
	}
	return now.Add(d).UTC(), nil
}

// nextRotateTime is core/secrets RotatePolicy.NextRotateTime.
func nextRotateTime(policy string, last, now time.Time) time.Time {
	var t time.Time
	switch policy {
	case "hourly":
		t = last.Add(time.Hour)
	case "daily":
		t = last.AddDate(0, 0, 1)
	case "weekly":
		t = last.AddDate(0, 0, 7)
	case "monthly":
		t = last.AddDate(0, 1, 0)
	case "quarterly":
		t = last.AddDate(0, 3, 0)
	case "yearly":
		t = last.AddDate(1, 0, 0)
	default:
		return time.Time{}
	}
	if t.Before(now) {
		t = now
	}
	return t
}

// canReadLocked is the controller's read check: the owner, the units of an owning
// application, and grantees whose relation still lives.
func (m *Model) canReadLocked(u *unit, s *secret) bool {
	switch {
	case s.ownerKind == ownerUnit && s.owner == u.name,
		s.ownerKind == ownerApplication && s.owner == u.app:
		return true
	}
	for _, g := range s.grants {
		if g.relID >= 0 {
			if r := m.relations[g.relID]; r == nil || r.dying {
				continue
			}
		}
		if g.app == u.app || g.unit == u.name {
			return true
		}
	}
	return false
}

// ownsLocked says whether u may manage s: it owns it, or leads the owning application.
func (m *Model) ownsLocked(u *unit, s *secret) bool {
	switch s.ownerKind {
	case ownerUnit:
		return s.owner == u.name
	case ownerApplication:
		return s.owner == u.app && m.apps[u.app].leader == u.name
	}
	return false
}

// secretHook is what a secret hook is about.
type secretHook struct {
	id    string
	uri   string
	label string
	rev   int
}

const (
	opSecretChanged opKind = 100 + iota
	opSecretRotate
	opSecretExpired
	opSecretRemove
)

func init() {
	opHooks[opSecretChanged] = "secret-changed"
	opHooks[opSecretRotate] = "secret-rotate"
	opHooks[opSecretExpired] = "secret-expired"
	opHooks[opSecretRemove] = "secret-remove"
}

// nextSecretOpLocked is the uniter's secrets resolver: expired revisions, rotations due,
// new revisions for consumers, then obsolete revisions, for an installed unit that is not
// dying. It has no side effects.
func (m *Model) nextSecretOpLocked(u *unit) *op {
	if m.sec == nil || !u.local.installed || u.dying {
		return nil
	}
	s := m.sec
	now := m.secretNowLocked()
	ids := slices.Sorted(maps.Keys(s.secrets))
	hook := func(kind opKind, sc *secret, label string, rev int) *op {
		uri := m.charmSecretURI(sc.id)
		if sc.ownerKind == ownerModel {
			uri = userSecretURI(sc.id)
		}
		return &op{kind: kind, version: sc.latest, secret: &secretHook{id: sc.id, uri: uri, label: label, rev: rev}}
	}
	for _, id := range ids {
		sc := s.secrets[id]
		if !m.ownsLocked(u, sc) {
			continue
		}
		if r := sc.revisions[sc.latest]; r != nil && !r.expire.IsZero() && !r.expire.After(now) &&
			!s.done[u.name+" expired "+id+"/"+strconv.Itoa(r.rev)] {
			return hook(opSecretExpired, sc, sc.label, r.rev)
		}
	}
	for _, id := range ids {
		sc := s.secrets[id]
		if m.ownsLocked(u, sc) && sc.rotate != "" && sc.rotate != "never" && !sc.nextRotate.IsZero() && !sc.nextRotate.After(now) {
			return hook(opSecretRotate, sc, sc.label, 0)
		}
	}
	for _, id := range ids {
		sc := s.secrets[id]
		c := s.consumers[id][u.name]
		if c == nil || c.notified == sc.latest || !m.canReadLocked(u, sc) {
			continue
		}
		return hook(opSecretChanged, sc, c.label, sc.latest)
	}
	for _, id := range ids {
		sc := s.secrets[id]
		if !m.ownsLocked(u, sc) {
			continue
		}
		for _, rev := range m.obsoleteLocked(sc) {
			if !s.done[u.name+" remove "+id+"/"+strconv.Itoa(rev)] {
				return hook(opSecretRemove, sc, sc.label, rev)
			}
		}
	}
	return nil
}

// obsoleteLocked lists the revisions of s that are not the latest and that no consumer
// tracks.
func (m *Model) obsoleteLocked(s *secret) []int {
	tracked := map[int]bool{}
	for _, c := range m.secretsLocked().consumers[s.id] {
		tracked[c.current] = true
	}
	var out []int
	for rev := range s.revisions {
		if rev < s.latest && !tracked[rev] {
			out = append(out, rev)
		}
	}
	sort.Ints(out)
	return out
}

// applySecretOpLocked records a secret hook that succeeded (or was skipped).
func (m *Model) applySecretOpLocked(u *unit, o *op) {
	s := m.secretsLocked()
	h := o.secret
	sc := s.secrets[h.id]
	switch o.kind {
	case opSecretChanged:
		if c := s.consumers[h.id][u.name]; c != nil {
			c.notified = h.rev
		}
	case opSecretExpired:
		s.done[u.name+" expired "+h.id+"/"+strconv.Itoa(h.rev)] = true
	case opSecretRemove:
		s.done[u.name+" remove "+h.id+"/"+strconv.Itoa(h.rev)] = true
	case opSecretRotate:
		if sc == nil || sc.rotate == "" || sc.rotate == "never" {
			return
		}
		now := m.secretNowLocked()
		last := sc.nextRotate
		if o.version == sc.latest {
			// No new revision: Juju asks again soon.
			sc.nextRotate = last.Add(rotateRetryDelay)
			if sc.nextRotate.Before(now) {
				sc.nextRotate = now.Add(rotateRetryDelay)
			}
		} else {
			sc.nextRotate = nextRotateTime(sc.rotate, last, now)
		}
		m.wakeAtLocked(sc.nextRotate)
	}
}

// secretEnv is the environment Juju gives a secret hook.
func secretEnv(o *op) []string {
	if o == nil || o.secret == nil {
		return nil
	}
	env := []string{"JUJU_SECRET_ID=" + o.secret.uri, "JUJU_SECRET_LABEL=" + o.secret.label}
	if o.secret.rev > 0 {
		env = append(env, "JUJU_SECRET_REVISION="+strconv.Itoa(o.secret.rev))
	}
	return env
}

// pendingSecrets is a hook's view of the secrets it changed: copies of the secrets it
// created or changed, committed when the hook succeeds.
type pendingSecrets struct {
	changed  map[string]*secret
	created  map[string]bool
	removed  map[string]bool
	original map[string]int // latest revision of a changed secret before the hook
}

func (c *hookContext) secretChanges() *pendingSecrets {
	if c.secrets == nil {
		c.secrets = &pendingSecrets{changed: map[string]*secret{}, created: map[string]bool{}, removed: map[string]bool{}, original: map[string]int{}}
	}
	return c.secrets
}

// viewLocked returns the secret as the hook sees it (with its own changes), or nil.
func (t *toolCall) viewSecret(id string) *secret {
	if p := t.c.secrets; p != nil {
		if p.removed[id] {
			return nil
		}
		if s, ok := p.changed[id]; ok {
			return s
		}
	}
	return t.m.secretsLocked().secrets[id]
}

// editSecret returns the hook's own copy of a secret, to change.
func (t *toolCall) editSecret(id string) *secret {
	p := t.c.secretChanges()
	if s, ok := p.changed[id]; ok {
		return s
	}
	s := t.m.secretsLocked().secrets[id].clone()
	p.changed[id] = s
	p.original[id] = s.latest
	return s
}

// ownedView lists the secrets the unit's hooks see as their own (secret-ids, secret-info-get,
// owner labels): its unit-owned secrets, and its application's when it is the leader.
func (t *toolCall) ownedView() []*secret {
	ids := map[string]bool{}
	for id := range t.m.secretsLocked().secrets {
		ids[id] = true
	}
	if p := t.c.secrets; p != nil {
		for id := range p.changed {
			ids[id] = true
		}
	}
	var out []*secret
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if s := t.viewSecret(id); s != nil && t.m.ownsLocked(t.u, s) {
			out = append(out, s)
		}
	}
	return out
}

// commitSecretsLocked applies a successful hook's secret changes.
func (m *Model) commitSecretsLocked(c *hookContext) {
	p := c.secrets
	if p == nil {
		return
	}
	s := m.secretsLocked()
	for id := range p.removed {
		delete(s.secrets, id)
		delete(s.consumers, id)
	}
	for id, sc := range p.changed {
		if p.removed[id] {
			continue
		}
		if _, ok := s.secrets[id]; !ok && !p.created[id] {
			continue // removed meanwhile
		}
		s.secrets[id] = sc
		m.wakeAtLocked(sc.nextRotate)
		if r := sc.revisions[sc.latest]; r != nil {
			m.wakeAtLocked(r.expire)
		}
		m.logLocked(c.unit.name, "DEBUG", fmt.Sprintf("committed secret %s (revision %d)", id, sc.latest))
	}
}
