package livepatch

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server"
)

// The sync signing key. With sync_server set, the leader creates an ed25519 key once and
// keeps it in a Juju secret owned by the application (label SigningSecretLabel), whose URI
// it shares in the peer application bag; every unit reads the secret and serves with the
// key (sync-server.signing-key), signing the patch lists and patches downstream servers
// sync. Where Juju has no secrets (before 3.0) the key set lives in the peer application bag
// itself. No key material ever shows in a status, a log line or an action result: only
// public keys and key ids do.
//
// A rotation has three steps, each an action on the leader, so that downstream servers and
// clients never meet a signature they cannot check: prepare (a next key is made, shown by
// get-signing-key, not used yet), activate (the next key signs; the old public key stays
// listed as retired, still to be trusted for the signatures it made), drop-retired.

// Names of the signing key state.
const (
	// SigningSecretLabel labels the application's signing key secret.
	SigningSecretLabel = "sync-signing-key"
	// PeerSigningSecret is the peer application bag key holding the secret's URI.
	PeerSigningSecret = "signing-key-secret"
	// PeerSigningKeys is the peer application bag key holding the key set where Juju has no
	// secrets.
	PeerSigningKeys = "signing-keys"

	secretKeyActive  = "signing-key"
	secretKeyNext    = "next-key"
	secretKeyRetired = "retired-keys"
)

// MessageSigningKeyWait is the status of a non-leader before the leader made the key.
const MessageSigningKeyWait = "Waiting for the leader to create the sync signing key"

// SigningKeys is the application's signing key set.
type SigningKeys struct {
	// Active signs what this deployment serves to downstream servers.
	Active ed25519.PrivateKey
	// Next is the key a rotation prepared, not yet signing; nil when none.
	Next ed25519.PrivateKey
	// Retired are the public keys of keys that signed before, which downstream servers and
	// clients still trust until the operator drops them.
	Retired []ed25519.PublicKey
	// URI is the secret holding the set; "" when it lives in the peer relation.
	URI string
}

// Trusted lists the public keys downstream servers (sync_trusted_key) and clients
// (trusted-key) should trust: the active key, the next one, the retired ones.
func (k SigningKeys) Trusted() []ed25519.PublicKey {
	out := []ed25519.PublicKey{k.Active.Public().(ed25519.PublicKey)}
	if k.Next != nil {
		out = append(out, k.Next.Public().(ed25519.PublicKey))
	}
	return append(out, k.Retired...)
}

// content encodes the key set as secret content (or peer data).
func (k SigningKeys) content() (map[string]string, error) {
	active, err := server.MarshalPrivateKey(k.Active)
	if err != nil {
		return nil, err
	}
	out := map[string]string{secretKeyActive: string(active)}
	if k.Next != nil {
		next, err := server.MarshalPrivateKey(k.Next)
		if err != nil {
			return nil, err
		}
		out[secretKeyNext] = string(next)
	}
	if len(k.Retired) > 0 {
		var pubs []string
		for _, p := range k.Retired {
			pubs = append(pubs, server.MarshalPublicKey(p))
		}
		out[secretKeyRetired] = strings.Join(pubs, ",")
	}
	return out, nil
}

// parseSigningKeys decodes a key set. Errors never quote key material.
func parseSigningKeys(content map[string]string) (SigningKeys, error) {
	var k SigningKeys
	var err error
	if k.Active, err = server.ParsePrivateKey([]byte(content[secretKeyActive])); err != nil {
		return SigningKeys{}, fmt.Errorf("the %s of the key set is not an ed25519 private key", secretKeyActive)
	}
	if next := content[secretKeyNext]; next != "" {
		if k.Next, err = server.ParsePrivateKey([]byte(next)); err != nil {
			return SigningKeys{}, fmt.Errorf("the %s of the key set is not an ed25519 private key", secretKeyNext)
		}
	}
	if retired := strings.TrimSpace(content[secretKeyRetired]); retired != "" {
		if k.Retired, err = server.ParsePublicKeys(retired); err != nil {
			return SigningKeys{}, fmt.Errorf("the %s of the key set are not ed25519 public keys", secretKeyRetired)
		}
	}
	return k, nil
}

// LoadSigningKeys reads the application's key set; with create (the leader, in a hook) it
// makes the first key when there is none. ok is false when there is no key yet.
func LoadSigningKeys(ctx context.Context, c *hooks.Context, peer Peer, create bool) (keys SigningKeys, ok bool, err error) {
	if uri := peer.Data[PeerSigningSecret]; uri != "" {
		content, err := c.SecretGet(ctx, uri)
		if err != nil {
			return SigningKeys{}, false, fmt.Errorf("cannot read the sync signing key secret: %w", err)
		}
		if keys, err = parseSigningKeys(content); err != nil {
			return SigningKeys{}, false, fmt.Errorf("cannot read the sync signing key secret: %w", err)
		}
		keys.URI = uri
		return keys, true, nil
	}
	if data := peer.Data[PeerSigningKeys]; data != "" {
		var content map[string]string
		if err := json.Unmarshal([]byte(data), &content); err != nil {
			return SigningKeys{}, false, errors.New("cannot read the sync signing keys of the peer relation: not a JSON object")
		}
		if keys, err = parseSigningKeys(content); err != nil {
			return SigningKeys{}, false, fmt.Errorf("cannot read the sync signing keys of the peer relation: %w", err)
		}
		return keys, true, nil
	}
	if !create {
		return SigningKeys{}, false, nil
	}
	if peer.RelID == "" {
		return SigningKeys{}, false, nil
	}
	// A secret made before, whose URI did not reach the peer bag, is reused.
	owned, err := c.OwnedSecrets(ctx)
	if err != nil && !errors.Is(err, hooks.ErrNoSecrets) {
		return SigningKeys{}, false, err
	}
	for _, s := range owned {
		if s.Label == SigningSecretLabel {
			peer.Data[PeerSigningSecret] = s.ID
			if keys, ok, err = LoadSigningKeys(ctx, c, peer, false); err != nil || !ok {
				return keys, ok, err
			}
			return keys, true, c.RelationSetApp(ctx, peer.RelID, map[string]string{PeerSigningSecret: s.ID})
		}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKeys{}, false, fmt.Errorf("cannot generate the sync signing key: %w", err)
	}
	keys = SigningKeys{Active: key}
	if err := SaveSigningKeys(ctx, c, peer, &keys); err != nil {
		return SigningKeys{}, false, err
	}
	c.Logf(ctx, "Created the sync signing key %s", server.KeyID(key.Public().(ed25519.PublicKey)))
	return keys, true, nil
}

// SaveSigningKeys stores the key set (leader only): a new revision of the secret, or a new
// secret whose URI goes to the peer bag, or the peer bag itself where Juju has no secrets.
func SaveSigningKeys(ctx context.Context, c *hooks.Context, peer Peer, keys *SigningKeys) error {
	content, err := keys.content()
	if err != nil {
		return err
	}
	if peer.RelID == "" {
		return ErrNoPeerRelation
	}
	if keys.URI != "" {
		if err := c.SecretSet(ctx, keys.URI, content); err != nil {
			return fmt.Errorf("cannot update the sync signing key secret: %w", err)
		}
		return nil
	}
	uri, err := c.SecretAdd(ctx, SigningSecretLabel, "livepatch sync signing keys", content)
	if errors.Is(err, hooks.ErrNoSecrets) {
		data, err := json.Marshal(content)
		if err != nil {
			return fmt.Errorf("cannot encode the sync signing keys: %w", err)
		}
		return c.RelationSetApp(ctx, peer.RelID, map[string]string{PeerSigningKeys: string(data)})
	}
	if err != nil {
		return fmt.Errorf("cannot create the sync signing key secret: %w", err)
	}
	keys.URI = uri
	return c.RelationSetApp(ctx, peer.RelID, map[string]string{PeerSigningSecret: uri})
}

// signingKeyPEM returns the PEM of the active key for sync-server.signing-key, or a status
// when the chain must stop (a non-leader waiting for the leader's key).
func signingKeyPEM(ctx context.Context, c *hooks.Context, cfg Config, peer Peer, leader bool) (string, hooks.Status, error) {
	if !cfg.SyncServer {
		return "", hooks.Status{}, nil
	}
	keys, ok, err := LoadSigningKeys(ctx, c, peer, leader)
	if err != nil {
		return "", hooks.Status{}, err
	}
	if !ok {
		return "", hooks.Waiting(MessageSigningKeyWait), nil
	}
	pem, err := server.MarshalPrivateKey(keys.Active)
	if err != nil {
		return "", hooks.Status{}, err
	}
	return string(pem), hooks.Status{}, nil
}

// SecretRemove handles secret-remove: Juju tells the leader a revision of one of the
// application's secrets is no longer read by anyone; the signing key secret's old revisions
// are removed. Then it reconciles.
func SecretRemove(ctx context.Context, c *hooks.Context) (hooks.Status, error) {
	peer, err := LoadPeer(ctx, c)
	if err != nil {
		return hooks.Status{}, err
	}
	uri, rev := c.Getenv("JUJU_SECRET_ID"), c.Getenv("JUJU_SECRET_REVISION")
	if own := peer.Data[PeerSigningSecret]; own != "" && hooks.SecretID(own) == hooks.SecretID(uri) {
		if n, ok := parseGeneration(rev); ok && n > 0 {
			if err := c.SecretRemoveRevision(ctx, uri, n); err != nil {
				return hooks.Status{}, err
			}
		}
	}
	return Reconcile(ctx, c)
}
