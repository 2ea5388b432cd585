package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/atomicfile"
)

// sessionsFile is the name of the session cache in the config directory.
const sessionsFile = "sessions.json"

// session is a cached admin session of one server.
type session struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires-at"`
}

// sessionCache is the file holding the session tokens of every server the user logged in
// to, keyed by server URL. It is private to the user: mode 0600 in a 0700 directory.
type sessionCache struct {
	dir string
}

// sessions returns the session cache of the user's config directory
// ($LIVEPATCH_ADMIN_CONFIG_DIR, else livepatch-admin in os.UserConfigDir).
func (g *global) sessions() (*sessionCache, error) {
	if dir := g.getenv(envConfigDir); dir != "" {
		return &sessionCache{dir: dir}, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return nil, fmt.Errorf("cannot find the config directory for the session cache: %w (set %s)", err, envConfigDir)
	}
	return &sessionCache{dir: filepath.Join(base, "livepatch-admin")}, nil
}

func (c *sessionCache) path() string { return filepath.Join(c.dir, sessionsFile) }

func (c *sessionCache) load() (map[string]session, error) {
	m := map[string]session{}
	data, err := os.ReadFile(c.path())
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read session cache: %w", err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("cannot read session cache %s: %w (delete it and log in again)", c.path(), err)
	}
	return m, nil
}

// get returns the cached session of the server at url.
func (c *sessionCache) get(url string) (session, bool, error) {
	m, err := c.load()
	if err != nil {
		return session{}, false, err
	}
	s, ok := m[url]
	return s, ok && s.Token != "", nil
}

// put caches the session of the server at url.
func (c *sessionCache) put(url string, s session) error {
	m, err := c.load()
	if err != nil {
		m = map[string]session{} // a corrupt cache is replaced
	}
	m[url] = s
	return c.save(m)
}

// delete forgets the session of the server at url.
func (c *sessionCache) delete(url string) error {
	m, err := c.load()
	if err != nil {
		return err
	}
	if _, ok := m[url]; !ok {
		return nil
	}
	delete(m, url)
	return c.save(m)
}

// save writes the cache atomically: a concurrent reader sees the old or the new file.
func (c *sessionCache) save(m map[string]session) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("cannot create config directory: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode session cache: %w", err)
	}
	if err := atomicfile.Write(c.path(), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("cannot write session cache: %w", err)
	}
	return nil
}
