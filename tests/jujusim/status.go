package jujusim

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// StatusInfo is a status value with its message, as in `juju status`.
type StatusInfo struct {
	Current string    `json:"current" yaml:"current"`
	Message string    `json:"message,omitempty" yaml:"message,omitempty"`
	Since   time.Time `json:"since" yaml:"since"`
}

// Status is a snapshot of the model shaped like `juju status --format yaml`.
type Status struct {
	Model        ModelStatus                  `json:"model" yaml:"model"`
	Machines     map[string]MachineStatus     `json:"machines" yaml:"machines"`
	Applications map[string]ApplicationStatus `json:"applications" yaml:"applications"`
	Relations    []RelationStatus             `json:"relations,omitempty" yaml:"relations,omitempty"`
}

// ModelStatus names the model.
type ModelStatus struct {
	Name    string `json:"name" yaml:"name"`
	UUID    string `json:"uuid" yaml:"uuid"`
	Version string `json:"version" yaml:"version"`
}

// MachineStatus is one emulated machine.
type MachineStatus struct {
	Address string `json:"dns-name" yaml:"dns-name"`
	Root    string `json:"root" yaml:"root"`
}

// ApplicationStatus is one application.
type ApplicationStatus struct {
	Charm         string                `json:"charm" yaml:"charm"`
	CharmName     string                `json:"charm-name" yaml:"charm-name"`
	CharmRev      int                   `json:"charm-rev" yaml:"charm-rev"`
	Version       string                `json:"version,omitempty" yaml:"version,omitempty"`
	Exposed       bool                  `json:"exposed" yaml:"exposed"`
	Status        StatusInfo            `json:"application-status" yaml:"application-status"`
	Relations     map[string][]string   `json:"relations,omitempty" yaml:"relations,omitempty"`
	SubordinateTo []string              `json:"subordinate-to,omitempty" yaml:"subordinate-to,omitempty"`
	Units         map[string]UnitStatus `json:"units,omitempty" yaml:"units,omitempty"`
}

// UnitStatus is one unit; subordinates are nested under their principal.
type UnitStatus struct {
	Workload      StatusInfo            `json:"workload-status" yaml:"workload-status"`
	Agent         StatusInfo            `json:"juju-status" yaml:"juju-status"`
	Leader        bool                  `json:"leader,omitempty" yaml:"leader,omitempty"`
	Machine       string                `json:"machine,omitempty" yaml:"machine,omitempty"`
	PublicAddress string                `json:"public-address" yaml:"public-address"`
	OpenPorts     []string              `json:"open-ports,omitempty" yaml:"open-ports,omitempty"`
	Subordinates  map[string]UnitStatus `json:"subordinates,omitempty" yaml:"subordinates,omitempty"`
}

// RelationStatus is one relation.
type RelationStatus struct {
	ID        int    `json:"relation-id" yaml:"relation-id"`
	Provider  string `json:"provider" yaml:"provider"`
	Requirer  string `json:"requirer" yaml:"requirer"`
	Interface string `json:"interface" yaml:"interface"`
	Type      string `json:"type" yaml:"type"`
}

// Status returns a snapshot of the model.
func (m *Model) Status() *Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statusLocked()
}

// Unit returns a unit's status from a snapshot, looking into subordinates too.
func (s *Status) Unit(name string) (UnitStatus, bool) {
	app, _, _ := strings.Cut(name, "/")
	if a, ok := s.Applications[app]; ok {
		if u, ok := a.Units[name]; ok {
			return u, true
		}
	}
	for _, a := range s.Applications {
		for _, u := range a.Units {
			if sub, ok := u.Subordinates[name]; ok {
				return sub, true
			}
		}
	}
	return UnitStatus{}, false
}

// UnitNames lists the units of an application in a snapshot (subordinates included).
func (s *Status) UnitNames(app string) []string {
	var out []string
	for _, a := range s.Applications {
		for name, u := range a.Units {
			if strings.HasPrefix(name, app+"/") {
				out = append(out, name)
			}
			for sub := range u.Subordinates {
				if strings.HasPrefix(sub, app+"/") {
					out = append(out, sub)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return unitNumber(out[i]) < unitNumber(out[j]) })
	return out
}

func (m *Model) unitStatusLocked(u *unit) UnitStatus {
	us := UnitStatus{
		Workload:      u.workload,
		Agent:         u.agent,
		Leader:        m.apps[u.app].leader == u.name,
		PublicAddress: u.machine.addr,
		OpenPorts:     sortedPorts(u.ports),
	}
	if u.principal == "" {
		us.Machine = u.machine.id
	}
	if u.failed != nil {
		us.Workload = StatusInfo{Current: "error", Message: u.agent.Message, Since: u.agent.Since}
	}
	return us
}

var statusSeverity = map[string]int{"error": 6, "blocked": 5, "maintenance": 4, "waiting": 3, "active": 2, "unknown": 1}

// appStatusLocked is the status the leader set, or else the most severe unit status.
func (m *Model) appStatusLocked(a *application) StatusInfo {
	if a.status != nil {
		return *a.status
	}
	best := StatusInfo{Current: "unknown"}
	for _, u := range m.units {
		if u.app != a.name {
			continue
		}
		s := m.unitStatusLocked(u).Workload
		if statusSeverity[s.Current] > statusSeverity[best.Current] {
			best = s
		}
	}
	return best
}

func (m *Model) statusLocked() *Status {
	st := &Status{
		Model:        ModelStatus{Name: m.name, UUID: m.uuid, Version: jujuVersion},
		Machines:     map[string]MachineStatus{},
		Applications: map[string]ApplicationStatus{},
	}
	for id, mc := range m.machines {
		st.Machines[id] = MachineStatus{Address: mc.addr, Root: mc.root}
	}
	for name, a := range m.apps {
		as := ApplicationStatus{
			Charm:     a.charmURL,
			CharmName: a.ch.Meta().Name,
			CharmRev:  a.revision,
			Version:   a.version,
			Exposed:   a.exposed,
			Status:    m.appStatusLocked(a),
			Relations: map[string][]string{},
			Units:     map[string]UnitStatus{},
		}
		st.Applications[name] = as
	}
	for _, u := range m.units {
		if u.principal != "" {
			continue
		}
		us := m.unitStatusLocked(u)
		for _, s := range m.units {
			if s.principal == u.name {
				if us.Subordinates == nil {
					us.Subordinates = map[string]UnitStatus{}
				}
				us.Subordinates[s.name] = m.unitStatusLocked(s)
			}
		}
		st.Applications[u.app].Units[u.name] = us
	}
	for _, r := range m.sortedRelations() {
		if r.dying {
			continue
		}
		rs := RelationStatus{ID: r.id, Interface: r.eps[0].rel.Interface, Type: "regular"}
		if r.isPeer() {
			rs.Type = "peer"
			rs.Provider, rs.Requirer = r.eps[0].String(), r.eps[0].String()
		} else {
			for _, ep := range r.eps {
				if ep.rel.Role == "provider" {
					rs.Provider = ep.String()
				} else {
					rs.Requirer = ep.String()
				}
			}
			if r.container {
				rs.Type = "subordinate"
			}
		}
		st.Relations = append(st.Relations, rs)
		for i, ep := range r.eps {
			remote := r.eps[len(r.eps)-1-i].app
			as := st.Applications[ep.app]
			if !slices.Contains(as.Relations[ep.rel.Name], remote) {
				as.Relations[ep.rel.Name] = append(as.Relations[ep.rel.Name], remote)
			}
			if r.container && m.apps[ep.app].subordinate && !slices.Contains(as.SubordinateTo, remote) {
				as.SubordinateTo = append(as.SubordinateTo, remote)
				sort.Strings(as.SubordinateTo)
			}
			st.Applications[ep.app] = as
		}
	}
	return st
}

// Tabular renders the snapshot like `juju status`.
func (s *Status) Tabular() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "Model\tController\tCloud/Region\tVersion\n%s\tjujusim\tlocalhost/localhost\t%s\n\n", s.Model.Name, s.Model.Version)
	fmt.Fprintln(w, "App\tVersion\tStatus\tScale\tCharm\tRev\tExposed\tMessage")
	apps := slices.Sorted(maps.Keys(s.Applications))
	for _, name := range apps {
		a := s.Applications[name]
		exposed := "no"
		if a.Exposed {
			exposed = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", name, a.Version, a.Status.Current, len(s.UnitNames(name)), a.CharmName, a.CharmRev, exposed, a.Status.Message)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Unit\tWorkload\tAgent\tMachine\tPublic address\tPorts\tMessage")
	for _, name := range apps {
		units := slices.Sorted(maps.Keys(s.Applications[name].Units))
		sort.Slice(units, func(i, j int) bool { return unitNumber(units[i]) < unitNumber(units[j]) })
		for _, un := range units {
			u := s.Applications[name].Units[un]
			star := ""
			if u.Leader {
				star = "*"
			}
			fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n", un, star, u.Workload.Current, u.Agent.Current, u.Machine, u.PublicAddress, strings.Join(u.OpenPorts, ","), u.Workload.Message)
			subs := slices.Sorted(maps.Keys(u.Subordinates))
			for _, sn := range subs {
				su := u.Subordinates[sn]
				star := ""
				if su.Leader {
					star = "*"
				}
				fmt.Fprintf(w, "  %s%s\t%s\t%s\t\t%s\t%s\t%s\n", sn, star, su.Workload.Current, su.Agent.Current, su.PublicAddress, strings.Join(su.OpenPorts, ","), su.Workload.Message)
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Machine\tState\tAddress\tRoot")
	for _, id := range slices.Sorted(maps.Keys(s.Machines)) {
		mc := s.Machines[id]
		fmt.Fprintf(w, "%s\tstarted\t%s\t%s\n", id, mc.Address, mc.Root)
	}
	if len(s.Relations) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Integration provider\tRequirer\tInterface\tType")
		for _, r := range s.Relations {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Provider, r.Requirer, r.Interface, r.Type)
		}
	}
	w.Flush()
	return b.String()
}
