package server

import (
	"regexp"
	"time"
)

// Tier is one stage of the promotion order. Position 1 is the first tier, where new
// patches land; a patch promoted to the tier at position N is available to tiers 1..N.
type Tier struct {
	Name     string `json:"name"`
	Position int    `json:"position"`
}

// DefaultTiers are created by the first migration, in promotion order.
var DefaultTiers = []string{"edge", "beta", "candidate", "stable"}

var tierNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CheckTierName validates a tier name.
func CheckTierName(name string) error {
	if !tierNameRE.MatchString(name) {
		return Errorf(CodeInvalid, "invalid tier name %q: use 1-63 lower-case letters, digits and dashes", name)
	}
	return nil
}

// TierPlacement says where a new tier goes: after a named tier, first, or (both zero) last.
type TierPlacement struct {
	After string `json:"after,omitempty"`
	First bool   `json:"first,omitempty"`
}

// Session is an administrator's login session.
type Session struct {
	// ID names the session in listings and revocations; it is not the token.
	ID        string    `json:"id"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created-at,omitzero"`
	ExpiresAt time.Time `json:"expires-at"`
	// Credential is the hash of the user's credential entry at login (see httpapi): the
	// session ends when the user's entry changes. Nil for a session made by a server that
	// did not record it.
	Credential []byte `json:"-"`
	// Current marks, in a listing, the session the request was made with.
	Current bool `json:"current,omitempty"`
	// Valid is false, in a listing, for a session whose user was removed or changed
	// password since: it is refused and deleted at its next use.
	Valid bool `json:"valid"`
}
