package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"
)

// AuthToken lets machines of one tier enable themselves. Token is set only in the answer
// that creates it; the store keeps its SHA-256 hash.
type AuthToken struct {
	ID          string     `json:"id"` // a free label for a group of machines
	Tier        string     `json:"tier"`
	Token       string     `json:"token,omitempty"`
	CreatedAt   time.Time  `json:"created-at"`
	ExpiresAt   *time.Time `json:"expires-at,omitempty"`
	MaxMachines int        `json:"max-machines,omitempty"` // 0: unlimited
	Machines    int        `json:"machines"`
	Revoked     bool       `json:"revoked"`
}

// SyncToken lets a downstream server sync one tier from this server.
type SyncToken struct {
	Name       string     `json:"name"`
	Tier       string     `json:"tier"`
	Token      string     `json:"token,omitempty"`
	CreatedAt  time.Time  `json:"created-at"`
	ValidUntil *time.Time `json:"valid-until,omitempty"`
	Revoked    bool       `json:"revoked"`
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckLabel validates a token id or name.
func CheckLabel(kind, label string) error {
	if !labelRE.MatchString(label) {
		return Errorf(CodeInvalid, "invalid %s %q: use 1-128 letters, digits, dots, dashes and underscores", kind, label)
	}
	return nil
}

// NewToken returns a random bearer token (256 bits, URL-safe base64) for machines and sessions.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewUUID returns a random UUIDv4, the form auth and sync tokens take in the real product.
func NewUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

// HashToken returns the stored form of a token. Tokens carry at least 122 random bits, so
// a plain SHA-256 is safe and keeps verification free of bcrypt cost on the hot path.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
