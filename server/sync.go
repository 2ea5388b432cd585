package server

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sync outcomes.
const (
	SyncSuccess = "success"
	SyncFailed  = "failed"
	SyncSkipped = "skipped" // another unit held the sync lock
)

// Where the patch list of a sync run came from.
const (
	SyncFromUpstream = "upstream"       // GET /v1/sync/patches of patch-sync.upstream-url
	SyncFromBundle   = "offline-bundle" // an offline bundle an administrator imported
)

// SyncReport is the record of one sync run of a downstream server.
type SyncReport struct {
	ID           int64     `json:"id"`
	StartedAt    time.Time `json:"started-at"`
	EndedAt      time.Time `json:"ended-at"`
	Outcome      string    `json:"outcome"`
	PatchesAdded int       `json:"patches-added"`
	Bytes        int64     `json:"bytes"`
	// Error says what went wrong in words an operator can act on; empty on success.
	Error string `json:"error,omitempty"`
	// Unit is the host name of the unit that ran the sync.
	Unit string `json:"unit"`
	// Source is where the patch list came from: SyncFromUpstream or SyncFromBundle.
	Source string `json:"source,omitempty"`
}

// SyncReportFilter selects sync reports; zero fields match everything.
type SyncReportFilter struct {
	Outcome string
	Limit   int // 0: no limit
}

// SyncStatus is the configuration and state of upstream sync as one unit sees it.
type SyncStatus struct {
	Enabled      bool   `json:"enabled"`
	Upstream     string `json:"upstream"`
	UpstreamTier string `json:"upstream-tier"`
	Tier         string `json:"tier"` // the local tier synced patches land in; empty with SyncTiers
	// SyncTiers is true when the local tiers mirror the upstream's (patch-sync.sync-tiers):
	// synced patches sit in their upstream tier, and local tier changes and promotions are
	// refused.
	SyncTiers bool `json:"sync-tiers"`
	// Running is true while this unit runs a sync.
	Running     bool        `json:"running"`
	LastRun     *SyncReport `json:"last-run,omitempty"`
	LastSuccess *time.Time  `json:"last-success,omitempty"`
	NextRun     *time.Time  `json:"next-run,omitempty"`
	// Warnings are configuration problems that weaken or stop sync.
	Warnings []string `json:"warnings,omitempty"`
}

// NewSyncToken is what the store records for a new sync token.
type NewSyncToken struct {
	Name       string
	Tier       string
	Hash       []byte
	ValidUntil *time.Time
}

// SyncList is the list of a tier's patches that an upstream serves to downstream servers.
// It travels as the signed payload of a SignedSyncList.
type SyncList struct {
	Tier        string    `json:"tier"`
	GeneratedAt time.Time `json:"generated-at"`
	// Tiers are the upstream's tiers in promotion order from Tier onward: the tiers a
	// downstream with patch-sync.sync-tiers mirrors. Absent from older upstreams.
	Tiers   []string    `json:"tiers,omitempty"`
	Patches []SyncPatch `json:"patches"`
}

// SyncPatch is one patch file of a SyncList.
type SyncPatch struct {
	Filename     string `json:"filename"`
	Version      string `json:"version"`
	Kernel       string `json:"kernel"`
	Flavour      string `json:"flavour"`
	Architecture string `json:"architecture"`
	SHA256       string `json:"sha256"`
	Size         int64  `json:"size"`
	Module       string `json:"module"`
	Description  string `json:"description,omitempty"`
	Fixes        []Fix  `json:"fixes,omitempty"`
	// URL is where to download the file: absolute, or a path relative to the upstream URL.
	URL string `json:"url"`
	// Tier is the upstream tier the patch is in: one of SyncList.Tiers. Absent from older
	// upstreams.
	Tier string `json:"tier,omitempty"`
	// Signature is the origin's signature of the file (see PatchSignature): the first
	// server of a sync chain signs the patches it holds from elsewhere, and every server
	// below passes that signature on unchanged. Absent from older upstreams.
	Signature *PatchSignature `json:"signature,omitempty"`
}

// CheckTiers checks that the list names its tiers, starting with its own, each once and
// validly named, and that every patch is in one of them: what a downstream that mirrors
// the upstream's tiers relies on.
func (l SyncList) CheckTiers() error {
	if len(l.Tiers) == 0 {
		return Errorf(CodeInvalid, "the list does not name the upstream's tiers")
	}
	if l.Tiers[0] != l.Tier {
		return Errorf(CodeInvalid, "the list of tier %q names tier %q first", l.Tier, l.Tiers[0])
	}
	seen := make(map[string]bool, len(l.Tiers))
	for _, t := range l.Tiers {
		if err := CheckTierName(t); err != nil {
			return err
		}
		if seen[t] {
			return Errorf(CodeInvalid, "the list names tier %q twice", t)
		}
		seen[t] = true
	}
	for _, p := range l.Patches {
		if !seen[p.Tier] {
			return Errorf(CodeInvalid, "the list puts %s in tier %q, which is not one of its tiers", p.Filename, p.Tier)
		}
	}
	return nil
}

// TierMirror is what a downstream with patch-sync.sync-tiers makes its catalog follow: the
// upstream's tiers and the tiers of the patches it lists.
type TierMirror struct {
	// Tiers are the upstream's tiers in promotion order; the local tiers become these.
	Tiers []string
	// Patches are every patch the upstream lists (before local filters). A recorded file
	// with the same SHA-256 moves to its listed tier; a synced file the list lacks is
	// blocked with BlockReason, and unblocked when it is listed again.
	Patches []SyncPatch
	// BlockReason is the reason recorded on the synced patches the upstream no longer
	// lists.
	BlockReason string
}

// TierMirrorResult says what mirroring changed.
type TierMirrorResult struct {
	Created []string // tiers added
	Deleted []string // tiers removed
	// Reordered is true when tiers that were there before changed their relative order.
	Reordered bool
	// Kept are the local tiers the upstream does not have that are still in use, so they
	// were not deleted.
	Kept []KeptTier
	// Moved, Blocked and Unblocked are filenames of patches whose tier or blocking changed.
	Moved     []string
	Blocked   []string
	Unblocked []string
}

// Changed reports whether mirroring changed anything.
func (r TierMirrorResult) Changed() bool {
	return len(r.Created)+len(r.Deleted)+len(r.Moved)+len(r.Blocked)+len(r.Unblocked) > 0 || r.Reordered
}

// KeptTier is a local tier that mirroring could not delete, and what uses it.
type KeptTier struct {
	Name string
	// UsedBy says what uses it, e.g. "2 machines, 1 auth token".
	UsedBy string
}

// SignedSyncList is the answer of GET /v1/sync/patches: the JSON bytes of a SyncList and
// an ed25519 signature of exactly those bytes. Both encode as standard base64 in JSON.
type SignedSyncList struct {
	Payload   []byte `json:"payload"`
	Signature []byte `json:"signature"`
	KeyID     string `json:"key-id"`
}

// SyncMachine is a downstream machine as reported to the upstream: its id is an HMAC of
// the machine id keyed with the deployment id, so the upstream cannot learn the real one.
type SyncMachine struct {
	ID       string    `json:"id"`
	Tier     string    `json:"tier"`
	LastSeen time.Time `json:"last-seen,omitzero"`
	Status
}

// Check validates a reported machine.
func (m SyncMachine) Check() error {
	if len(m.ID) != 64 || strings.Trim(m.ID, "0123456789abcdef") != "" {
		return Errorf(CodeInvalid, "invalid machine id %q: want the hex HMAC-SHA256 of the machine id", m.ID)
	}
	if m.Tier != "" {
		if err := CheckTierName(m.Tier); err != nil {
			return err
		}
	}
	return m.Status.Check()
}

// SignSyncList encodes l and signs the bytes with key.
func SignSyncList(l SyncList, key ed25519.PrivateKey) (SignedSyncList, error) {
	payload, err := json.Marshal(l)
	if err != nil {
		return SignedSyncList{}, fmt.Errorf("cannot encode patch list: %w", err)
	}
	return SignedSyncList{
		Payload:   payload,
		Signature: ed25519.Sign(key, payload),
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
	}, nil
}

// ErrBadSignature means a signed patch list does not verify with the trusted key.
var ErrBadSignature = errors.New("bad signature")

// Verify checks the signature with key and decodes the list. A nil key skips the check
// (a downstream without a trusted key). Errors wrap ErrBadSignature when the signature
// is wrong.
func (s SignedSyncList) Verify(key ed25519.PublicKey) (SyncList, error) {
	if key != nil && !ed25519.Verify(key, s.Payload, s.Signature) {
		if s.KeyID != KeyID(key) {
			return SyncList{}, fmt.Errorf("%w: the list is signed by key %s, not by the trusted key %s", ErrBadSignature, s.KeyID, KeyID(key))
		}
		return SyncList{}, fmt.Errorf("%w: the list does not verify with the trusted key %s", ErrBadSignature, KeyID(key))
	}
	var l SyncList
	if err := json.Unmarshal(s.Payload, &l); err != nil {
		return SyncList{}, fmt.Errorf("cannot decode the patch list: %w", err)
	}
	return l, nil
}

// VerifyWith checks the signature with the trusted key that signed it and decodes the
// list; with several trusted keys (a rotation) and none of them the signer, the error
// says which keys are trusted. No keys skips the check, as Verify(nil) does.
func (s SignedSyncList) VerifyWith(keys []ed25519.PublicKey) (SyncList, error) {
	var key ed25519.PublicKey
	switch {
	case len(keys) == 0:
	case len(keys) == 1:
		key = keys[0]
	default:
		if key = KeyFor(keys, s.KeyID); key == nil {
			return SyncList{}, fmt.Errorf("%w: the list is signed by key %s, not by a trusted key (%s)", ErrBadSignature, s.KeyID, KeyIDs(keys))
		}
	}
	return s.Verify(key)
}

// PatchSignature is an ed25519 signature of one patch file by the server it originates
// from: of PatchSignedMessage(filename, sha256, size). Machines whose client has that
// server's public key as trusted-key accept only patches it signed, so a server lower in
// a sync chain cannot hand them a file the origin never published.
type PatchSignature struct {
	KeyID     string `json:"key-id"`
	Signature []byte `json:"signature"` // standard base64 in JSON
}

// patchSignatureContext separates patch signatures from any other use of the key (a list
// payload is JSON and never starts with it).
const patchSignatureContext = "livepatch patch signature v1\n"

// PatchSignedMessage is what a patch signature signs: the filename (which names the
// kernel, flavour, version and architecture), the SHA-256 of the file and its size.
func PatchSignedMessage(filename, sha256 string, size int64) []byte {
	return fmt.Appendf(nil, "%s%s\n%s\n%d\n", patchSignatureContext, filename, sha256, size)
}

// SignPatch signs a patch file with key.
func SignPatch(key ed25519.PrivateKey, filename, sha256 string, size int64) *PatchSignature {
	return &PatchSignature{
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
		Signature: ed25519.Sign(key, PatchSignedMessage(filename, sha256, size)),
	}
}

// Check validates the form of a signature: a key id and 64 signature bytes.
func (s *PatchSignature) Check() error {
	if len(s.KeyID) != 16 || strings.Trim(s.KeyID, "0123456789abcdef") != "" {
		return Errorf(CodeInvalid, "invalid patch signature: key id %q is not 16 hex digits", s.KeyID)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return Errorf(CodeInvalid, "invalid patch signature: %d bytes, want %d", len(s.Signature), ed25519.SignatureSize)
	}
	return nil
}

// VerifyPatch checks that sig is key's signature of the patch file. A nil sig fails: a
// caller holding a trusted key wants signed patches only. Errors wrap ErrBadSignature and
// say what is wrong in words for an operator.
func VerifyPatch(key ed25519.PublicKey, sig *PatchSignature, filename, sha256 string, size int64) error {
	switch {
	case sig == nil:
		return fmt.Errorf("%w: the patch is not signed, and the trusted key %s requires a signature", ErrBadSignature, KeyID(key))
	case sig.KeyID != KeyID(key):
		return fmt.Errorf("%w: the patch is signed by key %s, not by the trusted key %s", ErrBadSignature, sig.KeyID, KeyID(key))
	case !ed25519.Verify(key, PatchSignedMessage(filename, sha256, size), sig.Signature):
		return fmt.Errorf("%w: the patch signature does not verify with the trusted key %s", ErrBadSignature, KeyID(key))
	}
	return nil
}

// KeyID names a public key: the hex of the first 8 bytes of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// KeyIDs names keys for a message: "3f2a..., 9c41...".
func KeyIDs(keys []ed25519.PublicKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = KeyID(k)
	}
	return strings.Join(ids, ", ")
}

// KeyFor returns the key of keys whose KeyID is id, or nil.
func KeyFor(keys []ed25519.PublicKey, id string) ed25519.PublicKey {
	for _, k := range keys {
		if KeyID(k) == id {
			return k
		}
	}
	return nil
}

// ParsePrivateKey reads an ed25519 private key: PEM ("PRIVATE KEY", PKCS #8, as
// livepatch-server keys generate and openssl genpkey -algorithm ed25519 write it), or
// base64 of the 64-byte private key (seed and public key). A bare 32-byte seed is
// refused: it cannot be told apart from a public key given by mistake.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cannot parse PEM private key: %w", err)
		}
		key, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("the PEM private key is a %T, not an ed25519 key", k)
		}
		return key, nil
	}
	b, err := decodeBase64(strings.TrimSpace(string(data)))
	if err == nil && len(b) == ed25519.PrivateKeySize {
		key := ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
		if !key.Equal(ed25519.PrivateKey(b)) {
			return nil, errors.New("the base64 private key is inconsistent: its public half does not match its seed")
		}
		return key, nil
	}
	return nil, errors.New("not a PEM ed25519 private key, nor the base64 of a 64-byte ed25519 private key")
}

// MarshalPrivateKey writes key as PEM (PKCS #8), the form ParsePrivateKey reads.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("cannot encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey writes a public key as standard base64, the form ParsePublicKey reads.
func MarshalPublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Telemetry headers a downstream server sends with its sync requests.
const (
	HeaderDeploymentID = "Livepatch-Deployment-Id"
	HeaderMachineCount = "Livepatch-Machine-Count"
)

// MaxSyncMachines bounds the machines of one machine report request.
const MaxSyncMachines = 1000

// CheckDeploymentID validates a deployment id (patch-sync.id; the charm uses the model UUID).
func CheckDeploymentID(id string) error {
	if !labelRE.MatchString(id) {
		return Errorf(CodeInvalid, "invalid deployment id %q: use 1-128 letters, digits, dots, dashes and underscores", id)
	}
	return nil
}

// How a downstream deployment authenticated its last sync list request.
const (
	ViaSyncToken     = "sync-token"
	ViaResourceToken = "resource-token"
)

// DownstreamSync is the telemetry of one sync list request of a downstream deployment: what
// its upstream records, one row per deployment, to show in the downstream report.
type DownstreamSync struct {
	DeploymentID string
	Via          string // ViaSyncToken or ViaResourceToken
	SyncToken    string // the sync token's name; empty with a resource token
	// Credential is the stored hash (HashToken) of the token it authenticated with: a
	// deployment id belongs to the credential that recorded it, until that credential is
	// no longer valid or the record is stale.
	Credential []byte
	Tier       string // the tier it asked for
	// MachineCount is the Livepatch-Machine-Count it sent (a bucket's lower bound, or
	// exact with patch-sync.machine-count: exact); nil when it sent none.
	MachineCount *int
	At           time.Time
}

// Downstream is a downstream deployment as its upstream sees it: its last sync list
// request and a summary of the machines it reports (patch-sync.send-machine-reports).
type Downstream struct {
	ID string `json:"id"` // the deployment id (the downstream's patch-sync.id)
	// FirstSeen and LastSync are the times of its first and last recorded sync list
	// requests. They, Via, SyncToken, Tier and MachineCount are absent when only its
	// machine reports are known (reports recorded before the upstream recorded lists).
	FirstSeen    time.Time `json:"first-seen,omitzero"`
	LastSync     time.Time `json:"last-sync,omitzero"`
	Via          string    `json:"via,omitempty"`
	SyncToken    string    `json:"sync-token,omitempty"`
	Tier         string    `json:"tier,omitempty"`
	MachineCount *int      `json:"machine-count,omitempty"`
	// ReportedMachines is how many machines it reports; PatchStates counts them per patch
	// state (states without machines are left out); LastReport is its last machine report.
	ReportedMachines int            `json:"reported-machines"`
	PatchStates      map[string]int `json:"patch-states"`
	LastReport       time.Time      `json:"last-report,omitzero"`
}

// DownstreamMachine is a machine a downstream deployment reported, and when it did.
type DownstreamMachine struct {
	SyncMachine
	ReportedAt time.Time `json:"reported-at"`
}

// DownstreamMachineFilter selects the reported machines of one downstream deployment.
type DownstreamMachineFilter struct {
	DeploymentID string
	Tier         string // the downstream's tier of the machine
	PatchState   string
	After        string // machine id cursor: list machines with a greater id
	Limit        int    // 0: no limit
}
