package server

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"
)

// errNotPublicKey is what ParsePublicKey says of anything else than a public key.
var errNotPublicKey = fmt.Errorf("not an ed25519 public key: want the base64 or hex of its %d bytes, or a PEM PUBLIC KEY block", ed25519.PublicKeySize)

// ParsePublicKey reads an ed25519 public key written as base64 (standard or URL alphabet,
// padded or not) or hex of its 32 bytes, or as a PEM "PUBLIC KEY" block (PKIX, as openssl
// pkey -pubout writes it). Surrounding white space is ignored.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if block, rest := pem.Decode([]byte(s)); block != nil && strings.HasPrefix(s, "-----BEGIN") && len(bytes.TrimSpace(rest)) == 0 {
		if block.Type != "PUBLIC KEY" {
			return nil, errNotPublicKey
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not an ed25519 public key: %w", err)
		}
		ed, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("not an ed25519 public key: a %T", key)
		}
		return ed, nil
	}
	if b, err := decodeBase64(s); err == nil && len(b) == ed25519.PublicKeySize {
		return ed25519.PublicKey(b), nil
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
		return ed25519.PublicKey(b), nil
	}
	return nil, errNotPublicKey
}

// ParsePublicKeys reads one or more ed25519 public keys in ParsePublicKey's forms,
// separated by commas or white space (a signing.pub per line, PEM blocks one after the
// other): an origin rotating its signing key is trusted under both keys for a while. A key
// given twice counts once. Every setting and flag that holds trusted keys reads them here:
// the server's patch-sync.trusted-key, the charm's sync_trusted_key, the client's
// trusted-key and livepatch-admin's --trusted-key.
func ParsePublicKeys(s string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	isSep := func(r rune) bool { return r == ',' || unicode.IsSpace(r) }
	for rest := s; ; {
		rest = strings.TrimLeftFunc(rest, isSep)
		if rest == "" {
			break
		}
		var field string
		if strings.HasPrefix(rest, "-----BEGIN") {
			// A PEM block runs to the end of its END line.
			end := strings.Index(rest, "\n-----END")
			if end < 0 {
				return nil, errors.New("not an ed25519 public key: a PEM block without its END line")
			}
			if nl := strings.IndexByte(rest[end+1:], '\n'); nl >= 0 {
				end += 1 + nl
			} else {
				end = len(rest)
			}
			field, rest = rest[:end], rest[end:]
		} else if i := strings.IndexFunc(rest, isSep); i >= 0 {
			field, rest = rest[:i], rest[i:]
		} else {
			field, rest = rest, ""
		}
		key, err := ParsePublicKey(field)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(keys, func(k ed25519.PublicKey) bool { return k.Equal(key) }) {
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no public key given")
	}
	return keys, nil
}

// LoadPublicKeys reads the setting name's value: public keys in ParsePublicKeys' form, or
// the path of a file holding them. Its errors name the setting.
func LoadPublicKeys(name, value string) ([]ed25519.PublicKey, error) {
	if keys, err := ParsePublicKeys(value); err == nil {
		return keys, nil
	}
	data, err := os.ReadFile(value)
	if err != nil {
		return nil, fmt.Errorf("%s is neither an ed25519 public key nor a readable file: %v", name, err)
	}
	keys, err := ParsePublicKeys(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s file %s: %v", name, value, err)
	}
	return keys, nil
}
