package app

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"strings"

	"github.com/livepatch-onprem/livepatch/server"
)

// LoadSigningKey reads sync-server.signing-key: the path of a key file as keys generate
// writes it, or the key itself (PEM, or base64 of the 64-byte private key).
func LoadSigningKey(value string) (ed25519.PrivateKey, error) {
	if strings.Contains(value, "-----BEGIN") {
		return server.ParsePrivateKey([]byte(value))
	}
	if key, err := server.ParsePrivateKey([]byte(value)); err == nil {
		return key, nil
	}
	data, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("sync-server.signing-key is neither a key nor a readable key file: %v", err)
	}
	key, err := server.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("sync-server.signing-key file %s: %v", value, err)
	}
	return key, nil
}
