package livepatch

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Keys of the peer relation's application bag, written by the leader and read by every unit.
const (
	// PeerResourceToken is the resource token obtained by get-resource-token.
	PeerResourceToken = "resource-token"
	// PeerBasicUsers is the comma-separated user:bcrypt-hash list set by set-basic-users.
	PeerBasicUsers = "basic-users"
	// PeerRestartGeneration is the rolling restart generation, a decimal number (absent: 0).
	// The leader increments it after schema-upgrade and when a unit asks for a restart; every
	// unit then restarts its server once, one unit at a time in unit-number order.
	PeerRestartGeneration = "restart-generation"
)

// Keys of each unit's own bag in the peer relation.
const (
	// PeerRestartedGeneration is the generation at which the unit last (re)started its
	// server, published once the server answered healthy. Absent: the unit never started
	// its server, and the rolling restart does not wait for it.
	PeerRestartedGeneration = "restarted-generation"
	// PeerRestartWanted is set, to the generation the unit has passed, when the unit needs
	// another restart (its configuration or its binary changed): the leader then starts the
	// next generation once the current one is through.
	PeerRestartWanted = "restart-wanted"
)

// ErrNoPeerRelation is returned when the peer relation does not exist yet.
var ErrNoPeerRelation = errors.New("the peer relation is not established yet: retry in a moment")

// Peer is the peer relation: the shared application bag and the units' bags.
type Peer struct {
	RelID string
	// Data is the application bag.
	Data map[string]string
	// Units holds the bag of every other unit in the relation.
	Units map[string]map[string]string
	// Own is this unit's bag.
	Own map[string]string
}

// LoadPeer reads the peer relation's bags; with no peer relation yet it returns a Peer with
// an empty RelID and no data.
func LoadPeer(ctx context.Context, c *hooks.Context) (Peer, error) {
	p := Peer{Data: map[string]string{}, Units: map[string]map[string]string{}, Own: map[string]string{}}
	ids, err := c.RelationIDs(ctx, PeerEndpoint)
	if err != nil {
		return Peer{}, err
	}
	if len(ids) == 0 {
		return p, nil
	}
	p.RelID = ids[0]
	if p.Data, err = c.RelationGetApp(ctx, p.RelID, c.AppName()); err != nil {
		return Peer{}, err
	}
	if p.Own, err = c.RelationGet(ctx, p.RelID, c.UnitName()); err != nil {
		return Peer{}, err
	}
	units, err := c.RelationList(ctx, p.RelID)
	if err != nil {
		return Peer{}, err
	}
	for _, unit := range units {
		if p.Units[unit], err = c.RelationGet(ctx, p.RelID, unit); err != nil {
			return Peer{}, err
		}
	}
	return p, nil
}

// SetPeerData sets keys of the peer application bag (leader only); the other units get a
// peer relation-changed hook and reconcile.
func SetPeerData(ctx context.Context, c *hooks.Context, data map[string]string) error {
	p, err := LoadPeer(ctx, c)
	if err != nil {
		return err
	}
	if p.RelID == "" {
		return ErrNoPeerRelation
	}
	return c.RelationSetApp(ctx, p.RelID, data)
}

// parseGeneration reads a generation number from relation data: a decimal number without
// sign. ok is false for a missing or malformed value.
func parseGeneration(s string) (gen int, ok bool) {
	if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// Generation returns the rolling restart generation the leader set (0 when unset; a
// malformed value counts as 0).
func (p Peer) Generation() int {
	g, _ := parseGeneration(p.Data[PeerRestartGeneration])
	return g
}

// unitNumber returns the number of unit "app/N", or -1.
func unitNumber(unit string) int {
	_, num, ok := strings.Cut(unit, "/")
	if !ok {
		return -1
	}
	n, ok := parseGeneration(num)
	if !ok {
		return -1
	}
	return n
}

// Blocker returns the first unit, in unit-number order, of those before unit that has
// started its server but not yet published that it restarted at gen and is healthy; ""
// when unit may restart now. Units that never started their server do not hold the others.
func (p Peer) Blocker(unit string, gen int) string {
	self := unitNumber(unit)
	names := make([]string, 0, len(p.Units))
	for name := range p.Units {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return unitNumber(a) - unitNumber(b) })
	for _, name := range names {
		if unitNumber(name) >= self {
			break
		}
		if passed, ok := parseGeneration(p.Units[name][PeerRestartedGeneration]); ok && passed < gen {
			return name
		}
	}
	return ""
}

// Pending returns the other units that have started their server but not yet passed gen,
// in unit-number order.
func (p Peer) Pending(gen int) []string {
	var out []string
	for name, bag := range p.Units {
		if passed, ok := parseGeneration(bag[PeerRestartedGeneration]); ok && passed < gen {
			out = append(out, name)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return unitNumber(a) - unitNumber(b) })
	return out
}

// RestartWanted reports whether another unit asks for a restart after passing gen.
func (p Peer) RestartWanted(gen int) bool {
	for _, bag := range p.Units {
		if wanted, ok := parseGeneration(bag[PeerRestartWanted]); ok && wanted >= gen {
			return true
		}
	}
	return false
}
