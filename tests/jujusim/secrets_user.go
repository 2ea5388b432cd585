package jujusim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// User secrets (`juju add-secret`, `grant-secret`, `update-secret`, `show-secret`,
// `remove-secret`, `secrets`): owned by the model, granted to whole applications, read by
// their units with secret-get like any secret they consume.

// SecretInfo is one secret as `juju show-secret` and `juju secrets` print it.
type SecretInfo struct {
	URI         string               `json:"-" yaml:"-"`
	Revision    int                  `json:"revision" yaml:"revision"`
	Checksum    string               `json:"checksum" yaml:"checksum"`
	Owner       string               `json:"owner" yaml:"owner"`
	Name        string               `json:"name,omitempty" yaml:"name,omitempty"`
	Label       string               `json:"label,omitempty" yaml:"label,omitempty"`
	Description string               `json:"description,omitempty" yaml:"description,omitempty"`
	Rotation    string               `json:"rotation,omitempty" yaml:"rotation,omitempty"`
	Expiry      *time.Time           `json:"expiry,omitempty" yaml:"expiry,omitempty"`
	AutoPrune   bool                 `json:"auto-prune,omitempty" yaml:"auto-prune,omitempty"`
	Created     time.Time            `json:"created" yaml:"created"`
	Updated     time.Time            `json:"updated" yaml:"updated"`
	Revisions   []SecretRevisionInfo `json:"revisions,omitempty" yaml:"revisions,omitempty"`
	Access      []SecretAccess       `json:"access,omitempty" yaml:"access,omitempty"`
	Content     map[string]string    `json:"content,omitempty" yaml:"content,omitempty"`
}

// SecretRevisionInfo is one revision in `juju show-secret --revisions`.
type SecretRevisionInfo struct {
	Revision int        `json:"revision" yaml:"revision"`
	Created  time.Time  `json:"created" yaml:"created"`
	Expiry   *time.Time `json:"expiry,omitempty" yaml:"expiry,omitempty"`
}

// SecretAccess is one grant: who may read (an application or unit tag), in which scope (a
// relation or the model), with which role.
type SecretAccess = secretAcl

// UpdateSecretArgs are the changes `juju update-secret` makes; nil fields stay as they are.
type UpdateSecretArgs struct {
	Content   map[string]string // plain values; a new revision if they differ from the latest
	Info      *string
	Name      *string
	AutoPrune *bool
}

// findSecretLocked resolves a secret URI, or the name of a user secret.
func (m *Model) findSecretLocked(ref string) (*secret, error) {
	st := m.secretsLocked()
	if id, err := parseSecretURI(ref); err == nil {
		if s := st.secrets[id]; s != nil {
			return s, nil
		}
	}
	for _, s := range st.secrets {
		if s.ownerKind == ownerModel && s.label == ref {
			return s, nil
		}
	}
	return nil, fmt.Errorf("secret %q not found", ref)
}

// AddSecret adds a user secret named name with plain content (see ParseSecretContent) and
// returns its URI, as `juju add-secret` prints it.
func (m *Model) AddSecret(name, info string, content map[string]string) (string, error) {
	if name == "" {
		return "", errors.New("cannot add secret: missing secret name")
	}
	if len(content) == 0 {
		return "", errors.New("cannot add secret: missing secret value or filename")
	}
	for k := range content {
		if !secretKeyRule.MatchString(k) {
			return "", fmt.Errorf("cannot add secret: key %q not valid", k)
		}
	}
	enc, err := encodeContent(content)
	if err != nil {
		return "", fmt.Errorf("cannot add secret: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.findSecretLocked(name); err == nil {
		return "", fmt.Errorf("cannot add secret: secret with name %q already exists", name)
	}
	now := m.secretNowLocked()
	s := &secret{
		id: newSecretID(), ownerKind: ownerModel, owner: m.name, label: name, description: info,
		created: now, updated: now, latest: 1,
		revisions: map[int]*secretRevision{1: {rev: 1, content: enc, created: now}},
	}
	m.secretsLocked().secrets[s.id] = s
	m.notifyLocked()
	return userSecretURI(s.id), nil
}

func (m *Model) userSecretLocked(ref string) (*secret, error) {
	s, err := m.findSecretLocked(ref)
	if err != nil {
		return nil, err
	}
	if s.ownerKind != ownerModel {
		return nil, fmt.Errorf("secret %q is owned by %s %q, not by the model: only user secrets can be changed", ref, s.ownerKind, s.owner)
	}
	return s, nil
}

// UpdateSecret changes a user secret, as `juju update-secret` does. New content makes a new
// revision, which consumers see after secret-changed and secret-get --refresh.
func (m *Model) UpdateSecret(ref string, args UpdateSecretArgs) error {
	var enc map[string]string
	if len(args.Content) > 0 {
		for k := range args.Content {
			if !secretKeyRule.MatchString(k) {
				return fmt.Errorf("cannot update secret: key %q not valid", k)
			}
		}
		var err error
		if enc, err = encodeContent(args.Content); err != nil {
			return fmt.Errorf("cannot update secret: %w", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.userSecretLocked(ref)
	if err != nil {
		return fmt.Errorf("cannot update secret: %w", err)
	}
	if args.Name != nil && *args.Name != s.label {
		if o, err := m.findSecretLocked(*args.Name); err == nil && o != s {
			return fmt.Errorf("cannot update secret: secret with name %q already exists", *args.Name)
		}
		s.label = *args.Name
	}
	if args.Info != nil {
		s.description = *args.Info
	}
	if args.AutoPrune != nil {
		s.autoPrune = *args.AutoPrune
	}
	now := m.secretNowLocked()
	if enc != nil && contentChecksum(enc) != contentChecksum(s.revisions[s.latest].content) {
		s.latest++
		s.revisions[s.latest] = &secretRevision{rev: s.latest, content: enc, created: now}
	}
	s.updated = now
	m.pruneLocked(s)
	m.notifyLocked()
	return nil
}

// pruneLocked deletes the obsolete revisions of a user secret that prunes itself.
func (m *Model) pruneLocked(s *secret) {
	if s.ownerKind != ownerModel || !s.autoPrune {
		return
	}
	for _, rev := range m.obsoleteLocked(s) {
		delete(s.revisions, rev)
	}
}

// GrantSecret lets the units of applications read a user secret.
func (m *Model) GrantSecret(ref string, apps ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.userSecretLocked(ref)
	if err != nil {
		return fmt.Errorf("cannot grant secret: %w", err)
	}
	for _, app := range apps {
		if _, ok := m.apps[app]; !ok {
			return fmt.Errorf("cannot grant secret: application %q not found", app)
		}
	}
	for _, app := range apps {
		g := secretGrant{app: app, relID: -1}
		if !slices.Contains(s.grants, g) {
			s.grants = append(s.grants, g)
		}
	}
	m.notifyLocked()
	return nil
}

// RevokeSecret takes back the access GrantSecret gave.
func (m *Model) RevokeSecret(ref string, apps ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.userSecretLocked(ref)
	if err != nil {
		return fmt.Errorf("cannot revoke secret: %w", err)
	}
	s.grants = slices.DeleteFunc(s.grants, func(g secretGrant) bool { return slices.Contains(apps, g.app) })
	m.notifyLocked()
	return nil
}

// RemoveSecret removes a user secret, or one of its revisions (revision > 0).
func (m *Model) RemoveSecret(ref string, revision int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.userSecretLocked(ref)
	if err != nil {
		return fmt.Errorf("cannot remove secret: %w", err)
	}
	st := m.secretsLocked()
	if revision > 0 {
		if _, ok := s.revisions[revision]; !ok {
			return fmt.Errorf("cannot remove secret: revision %d of %q not found", revision, ref)
		}
		delete(s.revisions, revision)
		if len(s.revisions) > 0 {
			m.notifyLocked()
			return nil
		}
	}
	delete(st.secrets, s.id)
	delete(st.consumers, s.id)
	m.notifyLocked()
	return nil
}

// ShowSecret describes a secret (any owner), with its content when reveal is set: the latest
// revision's, or revision's when it is > 0.
func (m *Model) ShowSecret(ref string, reveal bool, revision int) (SecretInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.findSecretLocked(ref)
	if err != nil {
		return SecretInfo{}, err
	}
	info := m.secretInfoLocked(s)
	if reveal {
		rev := s.latest
		if revision > 0 {
			rev = revision
		}
		enc, err := s.content(rev)
		if err != nil {
			return SecretInfo{}, err
		}
		info.Content = decodeContent(enc)
	}
	return info, nil
}

// Secrets lists every secret of the model, as `juju secrets` does, by URI.
func (m *Model) Secrets() []SecretInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SecretInfo
	if m.sec == nil {
		return nil
	}
	for _, id := range slices.Sorted(maps.Keys(m.sec.secrets)) {
		out = append(out, m.secretInfoLocked(m.sec.secrets[id]))
	}
	return out
}

func (m *Model) secretInfoLocked(s *secret) SecretInfo {
	info := SecretInfo{
		URI: userSecretURI(s.id), Revision: s.latest, Checksum: contentChecksum(s.revisions[s.latest].content),
		Owner: s.owner, Description: s.description, AutoPrune: s.autoPrune,
		Created: s.created, Updated: s.updated, Access: m.accessLocked(s),
	}
	if s.ownerKind == ownerModel {
		info.Owner, info.Name = "<model>", s.label
	} else {
		info.URI, info.Label = m.charmSecretURI(s.id), s.label
		if s.ownerKind == ownerUnit {
			info.Owner = s.owner
		}
	}
	if s.rotate != "" && s.rotate != "never" {
		info.Rotation = s.rotate
	}
	revs := slices.Collect(maps.Keys(s.revisions))
	sort.Ints(revs)
	for _, rev := range revs {
		r := s.revisions[rev]
		ri := SecretRevisionInfo{Revision: rev, Created: r.created}
		if !r.expire.IsZero() {
			e := r.expire
			ri.Expiry = &e
			if rev == s.latest {
				info.Expiry = &e
			}
		}
		info.Revisions = append(info.Revisions, ri)
	}
	return info
}

// SecretID returns the id part of a secret URI ("secret:<id>", "secret://<uuid>/<id>").
func SecretID(uri string) (string, error) {
	id, err := parseSecretURI(strings.TrimSpace(uri))
	if err != nil {
		return "", err
	}
	return id, nil
}
