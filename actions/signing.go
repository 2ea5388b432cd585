package actions

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server"
)

// errNoSyncServer fails the signing key actions of a deployment that serves no downstream.
var errNoSyncServer = errors.New("this deployment does not serve downstream servers: juju config livepatch sync_server=true first")

// loadKeys returns the application's signing keys, or an error that says what to do.
func loadKeys(ctx context.Context, c *hooks.Context) (livepatch.SigningKeys, livepatch.Peer, error) {
	cfg, err := livepatch.LoadConfig(ctx, c)
	if err != nil {
		return livepatch.SigningKeys{}, livepatch.Peer{}, err
	}
	if !cfg.SyncServer {
		return livepatch.SigningKeys{}, livepatch.Peer{}, errNoSyncServer
	}
	peer, err := livepatch.LoadPeer(ctx, c)
	if err != nil {
		return livepatch.SigningKeys{}, livepatch.Peer{}, err
	}
	keys, ok, err := livepatch.LoadSigningKeys(ctx, c, peer, false)
	if err != nil {
		return livepatch.SigningKeys{}, livepatch.Peer{}, err
	}
	if !ok {
		return livepatch.SigningKeys{}, livepatch.Peer{}, errors.New("the leader has not created the sync signing key yet: wait for the units to settle and run the action again")
	}
	return keys, peer, nil
}

func publicKey(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// keyResults are the public parts of a key set, as the signing key actions print them.
func keyResults(keys livepatch.SigningKeys) map[string]string {
	pub := publicKey(keys.Active)
	var trusted []string
	for _, k := range keys.Trusted() {
		trusted = append(trusted, server.MarshalPublicKey(k))
	}
	out := map[string]string{
		"key-id":       server.KeyID(pub),
		"public-key":   server.MarshalPublicKey(pub),
		"trusted-keys": strings.Join(trusted, ","),
	}
	if keys.Next != nil {
		out["next-key"] = server.MarshalPublicKey(publicKey(keys.Next))
		out["next-key-id"] = server.KeyID(publicKey(keys.Next))
	}
	if len(keys.Retired) > 0 {
		var retired []string
		for _, k := range keys.Retired {
			retired = append(retired, server.MarshalPublicKey(k))
		}
		out["retired-keys"] = strings.Join(retired, ",")
	}
	return out
}

// GetSigningKey prints the public keys downstream servers and clients trust: never a
// private key.
func GetSigningKey(ctx context.Context, c *hooks.Context, _ map[string]any) (map[string]string, error) {
	keys, _, err := loadKeys(ctx, c)
	if err != nil {
		return nil, err
	}
	out := keyResults(keys)
	out["result"] = "give trusted-keys to the downstream servers (juju config <downstream> sync_trusted_key=<trusted-keys>) " +
		"and to clients that check origin signatures (livepatch-client config trusted-key=<trusted-keys>)"
	return out, nil
}

// RotateSigningKey runs one step of a signing key rotation on the leader: prepare a next
// key, activate it, or drop the retired keys.
func RotateSigningKey(ctx context.Context, c *hooks.Context, params map[string]any) (map[string]string, error) {
	if err := requireLeader(ctx, c, "rotate-signing-key"); err != nil {
		return nil, err
	}
	step, err := stringParam(params, "step")
	if err != nil {
		return nil, err
	}
	keys, peer, err := loadKeys(ctx, c)
	if err != nil {
		return nil, err
	}
	var result string
	switch step {
	case "prepare":
		if keys.Next != nil {
			return nil, fmt.Errorf("key %s is already prepared: once every downstream trusts it, run rotate-signing-key step=activate", server.KeyID(publicKey(keys.Next)))
		}
		if _, keys.Next, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("cannot generate a signing key: %w", err)
		}
		result = "prepared key " + server.KeyID(publicKey(keys.Next)) + ", not signing yet: add it to every downstream's trusted keys " +
			"(sync_trusted_key=<trusted-keys>), then run rotate-signing-key step=activate"
	case "activate":
		if keys.Next == nil {
			return nil, errors.New("no key is prepared: run rotate-signing-key step=prepare first")
		}
		keys.Retired = append([]ed25519.PublicKey{publicKey(keys.Active)}, keys.Retired...)
		keys.Active, keys.Next = keys.Next, nil
		result = "key " + server.KeyID(publicKey(keys.Active)) + " signs from now on (the units restart one at a time); " +
			"the retired keys stay in trusted-keys for the signatures they made: once every downstream has synced, " +
			"run rotate-signing-key step=drop-retired"
	case "drop-retired":
		if len(keys.Retired) == 0 {
			return nil, errors.New("there is no retired key to drop")
		}
		keys.Retired = nil
		result = "retired keys dropped: downstream servers and clients may stop trusting them (sync_trusted_key=<trusted-keys>)"
	default:
		return nil, fmt.Errorf("step %q is not one of prepare, activate, drop-retired", step)
	}
	if err := livepatch.SaveSigningKeys(ctx, c, peer, &keys); err != nil {
		return nil, err
	}
	out := keyResults(keys)
	out["result"] = result
	return out, nil
}
