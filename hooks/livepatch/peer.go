package livepatch

import (
	"context"
	"errors"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Keys of the peer relation's application bag, written by the leader and read by every unit.
const (
	// PeerResourceToken is the resource token obtained by get-resource-token.
	PeerResourceToken = "resource-token"
	// PeerBasicUsers is the comma-separated user:bcrypt-hash list set by set-basic-users.
	PeerBasicUsers = "basic-users"
	// PeerRestartCue changes when every unit must restart its server (after schema-upgrade).
	PeerRestartCue = "restart-cue"
)

// ErrNoPeerRelation is returned when the peer relation does not exist yet.
var ErrNoPeerRelation = errors.New("the peer relation is not established yet: retry in a moment")

// Peer is the peer relation and its application bag.
type Peer struct {
	RelID string
	Data  map[string]string
}

// LoadPeer reads the peer relation's application bag; with no peer relation yet it returns a
// Peer with an empty RelID and no data.
func LoadPeer(ctx context.Context, c *hooks.Context) (Peer, error) {
	ids, err := c.RelationIDs(ctx, PeerEndpoint)
	if err != nil {
		return Peer{}, err
	}
	if len(ids) == 0 {
		return Peer{Data: map[string]string{}}, nil
	}
	data, err := c.RelationGetApp(ctx, ids[0], c.AppName())
	if err != nil {
		return Peer{}, err
	}
	return Peer{RelID: ids[0], Data: data}, nil
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
