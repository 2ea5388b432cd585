package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/livepatch-onprem/livepatch/server"
)

// Files keys generate writes.
const (
	signingKeyFile = "signing.key" // PEM (PKCS #8) ed25519 private key, mode 0600
	signingPubFile = "signing.pub" // base64 of the 32-byte public key, one line
)

// cmdKeys runs "keys generate --out DIR": a new ed25519 key pair for signing the patch
// lists this server serves to downstream servers (sync-server.signing-key), and the
// public key downstream servers trust (patch-sync.trusted-key).
func cmdKeys(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		return usageError{"keys needs a subcommand: generate"}
	}
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	out := fs.String("out", "", "directory for signing.key and signing.pub")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"keys generate needs --out DIR"}
	}
	pub, err := generateKeys(*out)
	if err != nil {
		return err
	}
	keyPath, pubPath := filepath.Join(*out, signingKeyFile), filepath.Join(*out, signingPubFile)
	fmt.Fprintf(stdout, "Wrote %s (secret: set sync-server.signing-key to its path)\n", keyPath)
	fmt.Fprintf(stdout, "Wrote %s (key id %s: give it to downstream servers as patch-sync.trusted-key)\n", pubPath, server.KeyID(pub))
	return nil
}

// generateKeys writes a new key pair in dir. It never replaces an existing key: downstream
// servers trust the public key, so replacing it is a decision to make on purpose.
func generateKeys(dir string) (ed25519.PublicKey, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cannot generate key: %w", err)
	}
	keyPEM, err := server.MarshalPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create key directory: %w", err)
	}
	keyPath := filepath.Join(dir, signingKeyFile)
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s already exists: remove it first to replace the key (downstream servers must then trust the new %s)", keyPath, signingPubFile)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot create signing key: %w", err)
	}
	if _, err := f.Write(keyPEM); err != nil {
		f.Close()
		os.Remove(keyPath)
		return nil, fmt.Errorf("cannot write signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(keyPath)
		return nil, fmt.Errorf("cannot write signing key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, signingPubFile), []byte(server.MarshalPublicKey(pub)+"\n"), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, fmt.Errorf("cannot write public key: %w", err)
	}
	return pub, nil
}
