package jujusim

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

type opKind int

const (
	opInstall opKind = iota
	opRelationCreated
	opLeaderElected
	opLeaderSettingsChanged
	opAction
	opDeployCharm
	opUpgradeCharm
	opConfigChanged
	opStart
	opRelationJoined
	opRelationChanged
	opRelationDeparted
	opRelationBroken
	opStop
	opRemove
	opUpdateStatus
)

var opHooks = map[opKind]string{
	opInstall:               "install",
	opLeaderElected:         "leader-elected",
	opLeaderSettingsChanged: "leader-settings-changed",
	opDeployCharm:           "(charm upgrade)",
	opUpgradeCharm:          "upgrade-charm",
	opConfigChanged:         "config-changed",
	opStart:                 "start",
	opStop:                  "stop",
	opRemove:                "remove",
	opUpdateStatus:          "update-status",
	opRelationCreated:       "-relation-created",
	opRelationJoined:        "-relation-joined",
	opRelationChanged:       "-relation-changed",
	opRelationDeparted:      "-relation-departed",
	opRelationBroken:        "-relation-broken",
}

// op is one step of a unit agent: a hook (with what it saw when chosen) or an action.
type op struct {
	kind       opKind
	relID      int
	endpoint   string // the unit's own endpoint, for relation hooks
	remoteUnit string
	remoteApp  string
	departing  string
	version    int // what the hook acknowledges once it succeeds
	gen        int
	action     *Action
	silent     bool // state change without a hook (peer relations are never broken)
	secret     *secretHook
	archive    []byte // the charm an opDeployCharm puts in place
}

func (o *op) hookName() string {
	switch {
	case o.kind == opAction:
		return "action " + o.action.Name
	case o.endpoint != "":
		return o.endpoint + opHooks[o.kind]
	}
	return opHooks[o.kind]
}

func (o *op) isRelation() bool { return o.endpoint != "" }

// nextOpLocked is the uniter's resolver: from the model and what the unit has seen, the next
// thing to run, or nil. It has no side effects.
func (m *Model) nextOpLocked(u *unit) *op {
	if u.removed || m.closed {
		return nil
	}
	a := m.apps[u.app]
	L := &u.local
	if u.failed != nil {
		if len(u.actions) > 0 {
			return &op{kind: opAction, action: u.actions[0]}
		}
		if u.retry.due {
			return u.failed
		}
		return nil
	}
	if !L.installed {
		return &op{kind: opInstall}
	}
	if !u.dying {
		for _, r := range m.sortedRelations() {
			if L.rels[r.id] == nil && !r.dying && m.participatesLocked(u, r) {
				return &op{kind: opRelationCreated, relID: r.id, endpoint: r.endpointFor(u.app).rel.Name, remoteApp: r.remoteApp(u.app)}
			}
		}
		if a.leader == u.name && L.leaderGenSeen != a.leaderGen {
			return &op{kind: opLeaderElected, gen: a.leaderGen, version: a.leaderVer}
		}
		if a.leader != u.name && L.leaderVerSeen != a.leaderVer {
			return &op{kind: opLeaderSettingsChanged, version: a.leaderVer}
		}
		if o := m.nextSecretOpLocked(u); o != nil {
			return o
		}
		if L.started && len(u.actions) > 0 {
			return &op{kind: opAction, action: u.actions[0]}
		}
		// A charm upgrade is a step of its own between hooks: the new charm replaces the
		// old in the charm directory, then upgrade-charm runs (then config-changed).
		if L.charmDeployed != a.charmGen {
			return &op{kind: opDeployCharm, version: a.charmGen, archive: a.archive}
		}
		if L.charmSeen != L.charmDeployed {
			return &op{kind: opUpgradeCharm, version: L.charmDeployed}
		}
		if L.configSeen != a.configGen {
			return &op{kind: opConfigChanged, version: a.configGen}
		}
		if !L.started {
			return &op{kind: opStart}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(L.rels)) {
		rs := L.rels[id]
		r := m.relations[id]
		if rs.broken || r == nil {
			continue
		}
		if o := m.nextRelationOpLocked(u, r, rs); o != nil {
			return o
		}
	}
	if u.dying {
		if !L.stopped {
			return &op{kind: opStop}
		}
		return &op{kind: opRemove}
	}
	if u.updateDue {
		return &op{kind: opUpdateStatus}
	}
	return nil
}

func (m *Model) nextRelationOpLocked(u *unit, r *relation, rs *relState) *op {
	ep := r.endpointFor(u.app).rel.Name
	remoteApp := r.remoteApp(u.app)
	base := op{relID: r.id, endpoint: ep, remoteApp: remoteApp}
	members := slices.Sorted(maps.Keys(rs.members))
	if u.dying || r.dying {
		if len(members) > 0 {
			o := base
			o.kind, o.remoteUnit, o.departing = opRelationDeparted, members[0], members[0]
			if u.dying && !r.dying {
				o.departing = u.name
			}
			return &o
		}
		o := base
		o.kind, o.silent = opRelationBroken, len(r.eps) == 1
		return &o
	}
	// Within a relation, joined(u) is directly followed by changed(u).
	for _, name := range members {
		if rs.members[name] == -1 {
			o := base
			o.kind, o.remoteUnit, o.version = opRelationChanged, name, r.units[name].bag.version
			return &o
		}
	}
	remote := m.remoteUnitsLocked(u, r)
	for _, name := range remote {
		if _, ok := rs.members[name]; !ok {
			o := base
			o.kind, o.remoteUnit = opRelationJoined, name
			return &o
		}
	}
	for _, name := range members {
		if !slices.Contains(remote, name) {
			o := base
			o.kind, o.remoteUnit, o.departing = opRelationDeparted, name, name
			return &o
		}
	}
	for _, name := range members {
		if v := r.units[name].bag.version; v > rs.members[name] {
			o := base
			o.kind, o.remoteUnit, o.version = opRelationChanged, name, v
			return &o
		}
	}
	if b := r.apps[remoteApp]; b.version > rs.appSeen {
		o := base
		o.kind, o.version = opRelationChanged, b.version
		return &o
	}
	return nil
}

// applyOpLocked records a successful (or skipped) op in the unit's local state.
func (m *Model) applyOpLocked(u *unit, o *op) {
	L := &u.local
	switch o.kind {
	case opInstall:
		L.installed = true
		if u.workload.Current == "maintenance" && u.workload.Message == "installing charm software" {
			u.workload = StatusInfo{Current: "unknown", Since: time.Now()}
		}
	case opRelationCreated:
		L.rels[o.relID] = &relState{members: map[string]int{}}
		r := m.relations[o.relID]
		m.relUnitLocked(r, u).inScope = !u.dying && !r.dying
	case opLeaderElected:
		L.leaderGenSeen, L.leaderVerSeen = o.gen, o.version
	case opLeaderSettingsChanged:
		L.leaderVerSeen = o.version
	case opDeployCharm:
		L.charmDeployed = o.version
		u.archive = o.archive
	case opUpgradeCharm:
		L.charmSeen = o.version
		L.configSeen = -1
	case opConfigChanged:
		L.configSeen = o.version
	case opStart:
		L.started = true
	case opRelationJoined:
		L.rels[o.relID].members[o.remoteUnit] = -1
	case opRelationChanged:
		rs := L.rels[o.relID]
		if o.remoteUnit == "" {
			rs.appSeen = o.version
		} else if _, ok := rs.members[o.remoteUnit]; ok {
			rs.members[o.remoteUnit] = o.version
		}
	case opRelationDeparted:
		delete(L.rels[o.relID].members, o.remoteUnit)
	case opRelationBroken:
		L.rels[o.relID].broken = true
		m.collectRelationLocked(o.relID)
	case opStop:
		L.stopped = true
	case opRemove:
		m.removeUnitLocked(u)
	case opUpdateStatus:
		u.updateDue = false
	case opSecretChanged, opSecretRotate, opSecretExpired, opSecretRemove:
		m.applySecretOpLocked(u, o)
	}
}

// relUnitLocked returns u's membership record in r, creating it (out of scope, with the
// addresses Juju puts in every unit bag) on first use.
func (m *Model) relUnitLocked(r *relation, u *unit) *relUnit {
	ru := r.units[u.name]
	if ru == nil {
		ru = &relUnit{bag: &bag{data: autoKeys(u)}}
		r.units[u.name] = ru
	}
	return ru
}

// collectRelationLocked deletes a dying relation once no unit still has to break it.
func (m *Model) collectRelationLocked(id int) {
	r := m.relations[id]
	if r == nil || !r.dying {
		return
	}
	for _, u := range m.units {
		if rs := u.local.rels[id]; rs != nil && !rs.broken {
			return
		}
	}
	delete(m.relations, id)
}

func (m *Model) removeUnitLocked(u *unit) {
	u.removed = true
	delete(m.units, u.name)
	m.stopRetryLocked(u, false)
	m.logLocked(u.name, "INFO", "unit removed")
	if a := m.apps[u.app]; a.leader == u.name {
		m.releaseLeaseLocked(a)
	}
	for id := range u.local.rels {
		m.collectRelationLocked(id)
	}
	for _, o := range m.units {
		if o.machine == u.machine {
			return
		}
	}
	mc := u.machine
	mc.removed = true
	delete(m.machines, mc.id)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		mc.sd.stopAll()
	}()
}

// participatesLocked says whether u is a member of r: its application has an endpoint in it,
// and for a container-scoped relation a subordinate only joins its own principal's relation.
func (m *Model) participatesLocked(u *unit, r *relation) bool {
	if _, ok := r.endpointOK(u.app); !ok {
		return false
	}
	if r.container && len(r.eps) == 2 && u.principal != "" {
		p := m.units[u.principal]
		return p != nil && p.app == r.remoteApp(u.app)
	}
	return true
}

// remoteUnitsLocked lists the remote units in scope that u can see.
func (m *Model) remoteUnitsLocked(u *unit, r *relation) []string {
	remoteApp := r.remoteApp(u.app)
	var out []string
	for name, ru := range r.units {
		o := m.units[name]
		if !ru.inScope || name == u.name || o == nil || o.app != remoteApp {
			continue
		}
		if r.container && o.machine != u.machine {
			continue
		}
		out = append(out, name)
	}
	sort.Slice(out, func(i, j int) bool { return unitNumber(out[i]) < unitNumber(out[j]) })
	return out
}

func (r *relation) endpointOK(app string) (endpoint, bool) {
	for _, ep := range r.eps {
		if ep.app == app {
			return ep, true
		}
	}
	return endpoint{}, false
}

func (r *relation) endpointFor(app string) endpoint {
	ep, _ := r.endpointOK(app)
	return ep
}

func (r *relation) remoteApp(app string) string {
	for _, ep := range r.eps {
		if ep.app != app {
			return ep.app
		}
	}
	return app
}

func (r *relation) isPeer() bool { return len(r.eps) == 1 }

// syncScopesLocked enters u into the scope of every live relation it has not seen yet, as the
// uniter's SynchronizeScopes does before it queues relation-created: the remote units see u
// (relation-list, relation-joined) before its relation-created hook runs, let alone its first
// relation-set. Juju does this only once the unit is installed, alive and not in error.
func (m *Model) syncScopesLocked(u *unit) {
	if u.removed || u.dying || u.failed != nil || !u.local.installed || m.closed {
		return
	}
	changed := false
	for _, r := range m.sortedRelations() {
		if u.local.rels[r.id] != nil || r.dying || !m.participatesLocked(u, r) {
			continue
		}
		if ru := m.relUnitLocked(r, u); !ru.inScope {
			ru.inScope = true
			changed = true
			m.logLocked(u.name, "DEBUG", fmt.Sprintf("unit %q entered scope for relation %d", u.name, r.id))
		}
	}
	if changed {
		m.notifyLocked()
	}
}

// runAgent is a unit agent: it runs the unit's next op whenever there is one, holding the
// machine lock so principal and subordinates never run at once.
func (m *Model) runAgent(u *unit) {
	defer m.wg.Done()
	m.mu.Lock()
	m.claimLeadershipLocked(m.apps[u.app])
	m.mu.Unlock()
	for {
		m.mu.Lock()
		m.syncScopesLocked(u)
		for m.nextOpLocked(u) == nil {
			if m.closed || u.removed {
				m.mu.Unlock()
				return
			}
			ch := m.changed
			m.mu.Unlock()
			<-ch
			m.mu.Lock()
			m.syncScopesLocked(u)
		}
		m.mu.Unlock()

		u.machine.lock.Lock()
		m.mu.Lock()
		o := m.nextOpLocked(u)
		if o == nil {
			m.mu.Unlock()
			u.machine.lock.Unlock()
			continue
		}
		u.running = true
		if o.kind == opAction {
			u.actions = u.actions[1:]
		}
		if o == u.failed {
			m.stopRetryLocked(u, false)
		}
		m.notifyLocked()
		m.mu.Unlock()
		m.execOp(u, o)
		u.machine.lock.Unlock()
	}
}
