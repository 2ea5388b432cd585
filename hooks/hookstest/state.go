// Package hookstest runs a charm's hooks and actions against an in-memory model: a State goes
// in, the hook runs with fake hook tools, a temporary filesystem root and fake system
// commands, and the resulting state comes out (status, relation data, ports, logs, action
// results, the commands that ran, files under the root). It behaves like Juju where the
// charm can tell: hook tools take the same arguments, print JSON, fail with exit status 2 on
// usage errors and 1 on runtime errors, and relation data and ports are committed only when
// the hook succeeds while status and logs apply at once.
package hookstest

import (
	"fmt"
	"maps"
	"slices"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// State is the part of the model one unit sees.
type State struct {
	// Unit is this unit's name, such as "livepatch/0".
	Unit string
	// Leader reports whether the unit is its application's leader.
	Leader bool
	// ModelUUID is the model's UUID.
	ModelUUID string
	// Config holds the charm configuration set by the operator; with Harness.LoadCharm, the
	// defaults of config.yaml fill the rest.
	Config map[string]any
	// Relations are the relations of the unit, peers included.
	Relations []Relation
	// Address is the unit's address (network-get, unit-get); default 192.0.2.10.
	Address string
	// Env holds extra environment variables of the hook process.
	Env map[string]string

	// Status is the unit's workload status.
	Status hooks.Status
	// AppStatus is the application's workload status (set by the leader).
	AppStatus hooks.Status
	// AppVersion is the workload version set by application-version-set.
	AppVersion string
	// Ports are the opened ports, such as "8080/tcp", sorted.
	Ports []string
	// Logs are the juju-log lines, "LEVEL message".
	Logs []string
	// Secrets are the secrets of other applications the unit may read, by id (the URI
	// without "secret:" or "secret://<model>/"). With a nil map the hook tools have no
	// secret-get, as before Juju 3.0; a read that tracks a new revision applies at once,
	// as the controller saves it.
	Secrets map[string]Secret
}

// Secret is a secret another application owns, as the controller keeps it for this unit.
type Secret struct {
	// Revisions holds the content of each revision, revision 1 first; the last is the latest.
	Revisions []map[string]string
	// Tracked is the revision secret-get returns without --refresh or --peek; 0 until the
	// unit first reads the secret, which tracks the latest.
	Tracked int
	// Denied makes every read fail with "permission denied": the secret is not granted to
	// the unit (or its relation is gone).
	Denied bool
}

// Update returns the secret with a new latest revision holding content, as the owner's
// secret-set makes one.
func (s Secret) Update(content map[string]string) Secret {
	s.Revisions = append(slices.Clone(s.Revisions), maps.Clone(content))
	return s
}

// Relation is one relation of the unit and the data the unit can see in it.
type Relation struct {
	// ID is the relation id number; Endpoint:ID is its relation id string.
	ID       int
	Endpoint string
	// RemoteApp is the remote application; for a peer relation, the unit's own application.
	RemoteApp string
	// RemoteUnits maps each remote unit in scope to its data bag.
	RemoteUnits map[string]map[string]string
	// RemoteAppData is the remote application's data bag.
	RemoteAppData map[string]string
	// LocalUnitData is this unit's data bag.
	LocalUnitData map[string]string
	// LocalAppData is this application's data bag (in a peer relation, the shared one).
	LocalAppData map[string]string
}

// RelID returns the relation id string, such as "db:3".
func (r Relation) RelID() string { return fmt.Sprintf("%s:%d", r.Endpoint, r.ID) }

// Relation returns the first relation on endpoint, or nil.
func (s *State) Relation(endpoint string) *Relation {
	for i := range s.Relations {
		if s.Relations[i].Endpoint == endpoint {
			return &s.Relations[i]
		}
	}
	return nil
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	out := s
	out.Config = maps.Clone(s.Config)
	out.Env = maps.Clone(s.Env)
	out.Ports = slices.Clone(s.Ports)
	out.Logs = slices.Clone(s.Logs)
	out.Relations = cloneRelations(s.Relations)
	if s.Secrets != nil {
		out.Secrets = make(map[string]Secret, len(s.Secrets))
		for id, sec := range s.Secrets {
			sec.Revisions = slices.Clone(sec.Revisions)
			out.Secrets[id] = sec
		}
	}
	return out
}

func cloneRelations(rels []Relation) []Relation {
	if rels == nil {
		return nil
	}
	out := make([]Relation, len(rels))
	for i, r := range rels {
		out[i] = r
		out[i].RemoteAppData = cloneBag(r.RemoteAppData)
		out[i].LocalUnitData = cloneBag(r.LocalUnitData)
		out[i].LocalAppData = cloneBag(r.LocalAppData)
		if r.RemoteUnits != nil {
			out[i].RemoteUnits = make(map[string]map[string]string, len(r.RemoteUnits))
			for u, bag := range r.RemoteUnits {
				out[i].RemoteUnits[u] = cloneBag(bag)
			}
		}
	}
	return out
}

func cloneBag(bag map[string]string) map[string]string {
	if bag == nil {
		return nil
	}
	return maps.Clone(bag)
}

// Clone returns a deep copy of r.
func (r Relation) Clone() Relation { return cloneRelations([]Relation{r})[0] }
