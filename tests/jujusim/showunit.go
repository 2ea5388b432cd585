package jujusim

import (
	"maps"
	"sort"
)

// UnitInfo is `juju show-unit` for one unit, relation data included.
type UnitInfo struct {
	Name           string         `json:"-" yaml:"-"`
	WorkloadStatus StatusInfo     `json:"workload-status" yaml:"workload-status"`
	JujuStatus     StatusInfo     `json:"juju-status" yaml:"juju-status"`
	Leader         bool           `json:"leader" yaml:"leader"`
	Machine        string         `json:"machine" yaml:"machine"`
	Principal      string         `json:"principal,omitempty" yaml:"principal,omitempty"`
	Address        string         `json:"address" yaml:"address"`
	Root           string         `json:"root" yaml:"root"`
	OpenPorts      []string       `json:"opened-ports,omitempty" yaml:"opened-ports,omitempty"`
	RelationInfo   []RelationInfo `json:"relation-info,omitempty" yaml:"relation-info,omitempty"`
}

// RelationInfo is one relation of a unit, as show-unit prints it.
type RelationInfo struct {
	RelationID             int                         `json:"relation-id" yaml:"relation-id"`
	Endpoint               string                      `json:"endpoint" yaml:"endpoint"`
	RelatedEndpoint        string                      `json:"related-endpoint" yaml:"related-endpoint"`
	ApplicationData        map[string]string           `json:"application-data" yaml:"application-data"`
	RelatedApplicationData map[string]string           `json:"related-application-data" yaml:"related-application-data"`
	LocalUnit              UnitRelationData            `json:"local-unit" yaml:"local-unit"`
	RelatedUnits           map[string]UnitRelationData `json:"related-units,omitempty" yaml:"related-units,omitempty"`
}

// UnitRelationData is a unit bag and whether the unit is in scope.
type UnitRelationData struct {
	InScope bool              `json:"in-scope" yaml:"in-scope"`
	Data    map[string]string `json:"data" yaml:"data"`
}

// ShowUnit describes a unit and the data of its relations.
func (m *Model) ShowUnit(name string) (UnitInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.resolveUnitLocked(name)
	if err != nil {
		return UnitInfo{}, err
	}
	us := m.unitStatusLocked(u)
	info := UnitInfo{
		Name: u.name, WorkloadStatus: us.Workload, JujuStatus: us.Agent, Leader: us.Leader,
		Machine: u.machine.id, Principal: u.principal, Address: u.machine.addr, Root: u.machine.root, OpenPorts: us.OpenPorts,
	}
	for _, r := range m.sortedRelations() {
		ep, ok := r.endpointOK(u.app)
		if !ok || u.local.rels[r.id] == nil {
			continue
		}
		remote := r.remoteApp(u.app)
		ri := RelationInfo{
			RelationID:             r.id,
			Endpoint:               ep.rel.Name,
			ApplicationData:        maps.Clone(r.apps[u.app].data),
			RelatedApplicationData: maps.Clone(r.apps[remote].data),
			RelatedUnits:           map[string]UnitRelationData{},
		}
		for _, e := range r.eps {
			if e.app == remote {
				ri.RelatedEndpoint = e.rel.Name
			}
		}
		if ru := r.units[u.name]; ru != nil {
			ri.LocalUnit = UnitRelationData{InScope: ru.inScope, Data: maps.Clone(ru.bag.data)}
		}
		names := []string{}
		for n := range r.units {
			o := m.units[n]
			if n != u.name && (o == nil || o.app == remote) && (!r.container || o == nil || o.machine == u.machine) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			ru := r.units[n]
			ri.RelatedUnits[n] = UnitRelationData{InScope: ru.inScope, Data: maps.Clone(ru.bag.data)}
		}
		info.RelationInfo = append(info.RelationInfo, ri)
	}
	return info, nil
}
