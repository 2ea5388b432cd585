// Package config defines the livepatch-server configuration file: its schema, its defaults
// and its validation. The livepatch charm renders this file and the server loads it, so both
// sides share one Go type; the package imports only the standard library and yaml.v3 so the
// hook binary can link it without the database driver.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole server configuration file.
type Config struct {
	Server         Server         `yaml:"server"`
	Database       Database       `yaml:"database"`
	Auth           Auth           `yaml:"auth"`
	PatchStorage   PatchStorage   `yaml:"patch-storage"`
	PatchCache     PatchCache     `yaml:"patch-cache"`
	MachineReports MachineReports `yaml:"machine-reports"`
	Contracts      Contracts      `yaml:"contracts"`
	PatchSync      PatchSync      `yaml:"patch-sync"`
	SyncServer     SyncServer     `yaml:"sync-server"`
}

// Server holds the HTTP listener settings.
type Server struct {
	Address          string `yaml:"address"`
	URLTemplate      string `yaml:"url-template"`
	LogLevel         string `yaml:"log-level"`
	ConcurrencyLimit int    `yaml:"concurrency-limit"`
	BurstLimit       int    `yaml:"burst-limit"`
	// TrustedProxies are the addresses or CIDRs of the reverse proxies (haproxy) whose
	// X-Forwarded-For the server believes; from any other peer the header is ignored and
	// the peer's address is the client's. Empty (the default): no proxy is trusted.
	TrustedProxies []string `yaml:"trusted-proxies,omitempty"`
	// RequestTimeout bounds an API call: its headers and body must arrive, and its answer
	// be written, within it.
	RequestTimeout Duration `yaml:"request-timeout"`
	// UploadTimeout bounds the body of a patch upload, which may be tens of megabytes.
	UploadTimeout Duration `yaml:"upload-timeout"`
	// StallTimeout bounds each write of a patch download: a reader that takes no bytes for
	// that long is disconnected, however long the whole download takes.
	StallTimeout Duration `yaml:"stall-timeout"`
	// DownloadLimit bounds the patch downloads served at once; beyond it downloads get 503
	// with Retry-After.
	DownloadLimit int `yaml:"download-limit"`
	// ShutdownTimeout bounds the drain at stop: requests still running after it are cut off.
	ShutdownTimeout Duration `yaml:"shutdown-timeout"`
}

// Database holds the PostgreSQL connection settings.
type Database struct {
	ConnectionString      string   `yaml:"connection-string"`
	ConnectionPoolMax     int      `yaml:"connection-pool-max"`
	ConnectionLifetimeMax Duration `yaml:"connection-lifetime-max"`
}

// Auth holds the administrator authentication settings.
type Auth struct {
	// BasicUsers are "user:bcrypt-hash" entries as htpasswd -B prints them.
	BasicUsers []string `yaml:"basic-users"`
	// SessionTTL is how long a session token issued at login stays valid.
	SessionTTL Duration `yaml:"session-ttl"`
}

// Patch storage types.
const (
	StoragePostgres   = "postgres"
	StorageFilesystem = "filesystem"
	StorageS3         = "s3"
)

// PatchStorage selects where patch files live.
type PatchStorage struct {
	Type           string `yaml:"type"`
	FilesystemPath string `yaml:"filesystem-path"`
	// The S3 keys locate the bucket of type s3 (see S3 in server/patchstore).
	S3Endpoint   string `yaml:"s3-endpoint,omitempty"`
	S3Region     string `yaml:"s3-region,omitempty"`
	S3Bucket     string `yaml:"s3-bucket,omitempty"`
	S3PathPrefix string `yaml:"s3-path-prefix,omitempty"`
	S3AccessKey  string `yaml:"s3-access-key,omitempty"`
	S3SecretKey  string `yaml:"s3-secret-key,omitempty"`
	S3CAFile     string `yaml:"s3-ca-file,omitempty"`
	S3PathStyle  bool   `yaml:"s3-path-style,omitempty"`
	// RedirectDownloads answers a patch download with a redirect to a short-lived
	// presigned URL of the object, so that machines fetch it from the bucket directly
	// (type s3 only).
	RedirectDownloads bool `yaml:"redirect-downloads,omitempty"`
}

// PatchCache configures the in-memory cache of patch file contents.
type PatchCache struct {
	Enabled   bool     `yaml:"enabled"`
	CacheSize int      `yaml:"cache-size"`
	CacheTTL  Duration `yaml:"cache-ttl"`
}

// MachineReports configures how check-ins are recorded and how long their history stays.
type MachineReports struct {
	RetentionDays   int      `yaml:"retention-days"`
	CleanupInterval Duration `yaml:"cleanup-interval"`
	CleanupRowLimit int      `yaml:"cleanup-row-limit"`
	// StaleAfterDays removes the machines not seen for this many days (never seen: since
	// they enabled) at every cleanup; 0, the default, keeps every machine. A removed
	// machine frees its place in its auth token's max-machines and enables again as a new
	// machine if it comes back.
	StaleAfterDays int `yaml:"stale-after-days"`
	// SynchronousCommit makes each check-in wait for its disk flush before it is
	// acknowledged. Off (the default), a PostgreSQL crash can lose the last fraction of a
	// second of check-ins, which machines send again at their next check; a clean restart
	// loses nothing.
	SynchronousCommit bool `yaml:"synchronous-commit"`
}

// Contracts points at the Ubuntu Pro contracts server that validates resource tokens.
type Contracts struct {
	URL string `yaml:"url"`
}

// PatchSync configures pulling patches from an upstream livepatch server.
type PatchSync struct {
	Enabled              bool     `yaml:"enabled"`
	ID                   string   `yaml:"id"`
	UpstreamURL          string   `yaml:"upstream-url"`
	Token                string   `yaml:"token"`
	Interval             Duration `yaml:"interval"`
	UpstreamTier         string   `yaml:"upstream-tier"`
	Tier                 string   `yaml:"tier"`
	Flavors              []string `yaml:"flavors"`
	Architectures        []string `yaml:"architectures"`
	MinimumKernelVersion string   `yaml:"minimum-kernel-version"`
	SendMachineReports   bool     `yaml:"send-machine-reports"`
	MachineCount         string   `yaml:"machine-count"`
	TrustedKey           string   `yaml:"trusted-key"`
	Proxy                Proxy    `yaml:"proxy"`
	// SyncTiers mirrors the upstream's tiers from upstream-tier onward: sync creates and
	// deletes local tiers to match, places every synced patch in its upstream tier, and
	// blocks the synced patches the upstream no longer lists; local tier changes and
	// promotions are refused. Destructive: local tiers the upstream lacks are deleted.
	SyncTiers bool `yaml:"sync-tiers,omitempty"`
}

// Proxy holds the proxies used for outbound sync traffic.
type Proxy struct {
	HTTP    string `yaml:"http"`
	HTTPS   string `yaml:"https"`
	NoProxy string `yaml:"no-proxy"`
}

// SyncServer configures this server as an upstream for other servers.
type SyncServer struct {
	SigningKey string `yaml:"signing-key"`
}

// Duration is a time.Duration written as a Go duration string ("30m", "240h").
type Duration time.Duration

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) {
	return time.Duration(d).String(), nil
}

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: cannot read duration: %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (use a form like 30m or 6h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns a configuration with every default filled in; the required keys
// (server.address, server.url-template, database.connection-string) are left empty.
func Default() Config {
	return Config{
		Server: Server{
			LogLevel:         "info",
			ConcurrencyLimit: 50,
			BurstLimit:       500,
			RequestTimeout:   Duration(30 * time.Second),
			UploadTimeout:    Duration(10 * time.Minute),
			StallTimeout:     Duration(30 * time.Second),
			DownloadLimit:    200,
			ShutdownTimeout:  Duration(10 * time.Second),
		},
		Database: Database{
			ConnectionPoolMax:     15,
			ConnectionLifetimeMax: Duration(30 * time.Minute),
		},
		Auth:           Auth{SessionTTL: Duration(240 * time.Hour)},
		PatchStorage:   PatchStorage{Type: StoragePostgres},
		PatchCache:     PatchCache{Enabled: true, CacheSize: 128, CacheTTL: Duration(time.Hour)},
		MachineReports: MachineReports{RetentionDays: 90, CleanupInterval: Duration(6 * time.Hour), CleanupRowLimit: 1000},
		Contracts:      Contracts{URL: "https://contracts.canonical.com"},
		PatchSync: PatchSync{
			// No default upstream: this server speaks only the on-prem sync protocol, which
			// Canonical's hosted service does not (its protocol is not public).
			UpstreamURL:  "",
			Interval:     Duration(time.Hour),
			UpstreamTier: "stable",
			MachineCount: "bucket",
		},
	}
}

// Load reads, parses and validates the configuration file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("cannot read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("invalid config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML on top of the defaults, rejecting unknown keys, and validates the result.
// A validation failure lists every problem at once.
func Parse(data []byte) (Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("cannot parse: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Marshal renders the configuration as YAML.
func (c Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("cannot render config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("cannot render config: %w", err)
	}
	return buf.Bytes(), nil
}

// ValidationError lists every problem found in a configuration.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return fmt.Sprintf("%d problems:\n- %s", len(e.Problems), strings.Join(e.Problems, "\n- "))
}

var (
	userPattern   = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)
	bcryptPattern = regexp.MustCompile(`^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$`)
	kernelPattern = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)
	logLevels     = []string{"debug", "info", "warn", "error"}
)

// MaxUserName is the longest administrator user name, in bytes. The API refuses longer
// names in basic auth before any other work.
const MaxUserName = 64

// CheckUserName reports whether name can be an administrator's user name: 1 to MaxUserName
// letters, digits and ._@+- characters.
func CheckUserName(name string) bool {
	return len(name) <= MaxUserName && userPattern.MatchString(name)
}

// ParseBasicUser splits a "user:bcrypt-hash" entry. The error names the user, never the hash.
func ParseBasicUser(entry string) (user, hash string, err error) {
	user, hash, ok := strings.Cut(strings.TrimSpace(entry), ":")
	if !ok || user == "" {
		return "", "", errors.New(`entry is not of the form user:bcrypt-hash (use the output of htpasswd -bnBC 10 USER PASSWORD)`)
	}
	if len(user) > MaxUserName {
		return "", "", fmt.Errorf("user name %.16q... is longer than %d bytes", user, MaxUserName)
	}
	if !userPattern.MatchString(user) {
		return "", "", fmt.Errorf("user %q has characters other than letters, digits and ._@+-", user)
	}
	if !bcryptPattern.MatchString(hash) {
		return "", "", fmt.Errorf("user %q: password is not a bcrypt hash (use the output of htpasswd -bnBC 10 %s PASSWORD)", user, user)
	}
	return user, hash, nil
}

// ParseTrustedProxies parses addresses ("10.0.0.2") and CIDRs ("10.0.0.0/24") of trusted
// proxies; a bare address is a /32 (or /128).
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%.64q is not an IP address or CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// CheckURLTemplate checks a patch download URL template.
func CheckURLTemplate(tmpl string) error {
	if tmpl == "" {
		return errors.New("url template is not set")
	}
	if !strings.Contains(tmpl, "{filename}") {
		return fmt.Errorf("url template %q does not contain {filename}", tmpl)
	}
	u, err := url.Parse(strings.ReplaceAll(tmpl, "{filename}", "f"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url template %q is not an http(s) URL", tmpl)
	}
	return nil
}

// CheckKernelVersion checks an "x.y.z" minimum kernel version ("" allowed).
func CheckKernelVersion(v string) error {
	if v != "" && !kernelPattern.MatchString(v) {
		return fmt.Errorf("kernel version %q is not of the form x.y.z", v)
	}
	return nil
}

// Validate checks every value and reports all problems at once.
func (c Config) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if c.Server.Address == "" {
		add("server.address is required")
	} else if _, _, err := net.SplitHostPort(c.Server.Address); err != nil {
		add("server.address %q is not host:port", c.Server.Address)
	}
	if err := CheckURLTemplate(c.Server.URLTemplate); err != nil {
		add("server.url-template: %v", err)
	}
	if !slices.Contains(logLevels, c.Server.LogLevel) {
		add("server.log-level %q is not one of %s", c.Server.LogLevel, strings.Join(logLevels, ", "))
	}
	if c.Server.ConcurrencyLimit < 1 {
		add("server.concurrency-limit must be at least 1")
	}
	if c.Server.BurstLimit < 0 {
		add("server.burst-limit must not be negative")
	}
	if _, err := ParseTrustedProxies(c.Server.TrustedProxies); err != nil {
		add("server.trusted-proxies: %v", err)
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"request-timeout", c.Server.RequestTimeout}, {"upload-timeout", c.Server.UploadTimeout},
		{"stall-timeout", c.Server.StallTimeout}, {"shutdown-timeout", c.Server.ShutdownTimeout},
	} {
		if d.d <= 0 {
			add("server.%s must be positive", d.key)
		}
	}
	if c.Server.DownloadLimit < 1 {
		add("server.download-limit must be at least 1")
	}
	if c.Database.ConnectionString == "" {
		add("database.connection-string is required")
	}
	if c.Database.ConnectionPoolMax < 1 {
		add("database.connection-pool-max must be at least 1")
	}
	if c.Database.ConnectionLifetimeMax < 0 {
		add("database.connection-lifetime-max must not be negative")
	}
	for i, e := range c.Auth.BasicUsers {
		if _, _, err := ParseBasicUser(e); err != nil {
			add("auth.basic-users[%d]: %v", i, err)
		}
	}
	if c.Auth.SessionTTL <= 0 {
		add("auth.session-ttl must be positive")
	}
	switch c.PatchStorage.Type {
	case StoragePostgres:
	case StorageFilesystem:
		if c.PatchStorage.FilesystemPath == "" {
			add("patch-storage.filesystem-path is required when patch-storage.type is filesystem")
		}
	case StorageS3:
		p = append(p, c.PatchStorage.checkS3()...)
	default:
		add("patch-storage.type %q is not one of postgres, filesystem, s3", c.PatchStorage.Type)
	}
	if c.PatchStorage.RedirectDownloads && c.PatchStorage.Type != StorageS3 {
		add("patch-storage.redirect-downloads needs patch-storage.type s3")
	}
	if c.PatchCache.Enabled && c.PatchCache.CacheSize < 1 {
		add("patch-cache.cache-size must be at least 1 when the cache is enabled")
	}
	if c.PatchCache.CacheTTL < 0 {
		add("patch-cache.cache-ttl must not be negative")
	}
	if c.MachineReports.RetentionDays < 1 {
		add("machine-reports.retention-days must be at least 1")
	}
	if c.MachineReports.CleanupInterval <= 0 {
		add("machine-reports.cleanup-interval must be positive")
	}
	if c.MachineReports.CleanupRowLimit < 1 {
		add("machine-reports.cleanup-row-limit must be at least 1")
	}
	if c.MachineReports.StaleAfterDays < 0 || c.MachineReports.StaleAfterDays > 36500 {
		add("machine-reports.stale-after-days must be from 0 (off) to 36500")
	}
	if c.Contracts.URL != "" {
		if u, err := url.Parse(c.Contracts.URL); err != nil || u.Host == "" {
			add("contracts.url %q is not a URL", c.Contracts.URL)
		}
	}
	s := c.PatchSync
	if s.Enabled {
		if s.UpstreamURL == "" {
			add("patch-sync.upstream-url is empty: give the URL of the livepatch on-prem server to sync from, or turn patch-sync.enabled off and import offline bundles")
		} else if u, err := url.Parse(s.UpstreamURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			add("patch-sync.upstream-url %q is not an http(s) URL", s.UpstreamURL)
		}
		if s.Interval < Duration(time.Minute) {
			add("patch-sync.interval must be at least 1m")
		}
	}
	if s.SyncTiers && s.Tier != "" {
		add("patch-sync.tier %q is meaningless with patch-sync.sync-tiers: synced patches go to the tier they are in on the upstream; leave patch-sync.tier empty", s.Tier)
	}
	if err := CheckKernelVersion(s.MinimumKernelVersion); err != nil {
		add("patch-sync.minimum-kernel-version: %v", err)
	}
	if s.MachineCount != "bucket" && s.MachineCount != "exact" {
		add("patch-sync.machine-count %q is not one of bucket, exact", s.MachineCount)
	}
	if len(p) > 0 {
		for i := range p {
			p[i] = Redact(p[i]) // problems quote URLs, which may carry credentials
		}
		return &ValidationError{Problems: p}
	}
	return nil
}

// s3BucketPattern is the S3 bucket naming rule: 3 to 63 lower-case letters, digits, dots
// and hyphens, starting and ending with a letter or digit.
var s3BucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// checkS3 lists the problems of the s3 keys. No message quotes the secret key, nor the
// access key, which some operators treat as secret too.
func (s PatchStorage) checkS3() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if s.S3Endpoint == "" {
		add("patch-storage.s3-endpoint is required when patch-storage.type is s3 (a URL such as https://s3.example.com)")
	} else if u, err := url.Parse(s.S3Endpoint); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		add("patch-storage.s3-endpoint %q is not an http(s) URL", s.S3Endpoint)
	} else if u.User != nil {
		add("patch-storage.s3-endpoint must not carry credentials: use patch-storage.s3-access-key and s3-secret-key")
	} else if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		add("patch-storage.s3-endpoint %q must have no path or query: give the bucket in s3-bucket and a key prefix in s3-path-prefix", s.S3Endpoint)
	}
	if s.S3Bucket == "" {
		add("patch-storage.s3-bucket is required when patch-storage.type is s3")
	} else if !s3BucketPattern.MatchString(s.S3Bucket) || strings.Contains(s.S3Bucket, "..") {
		add("patch-storage.s3-bucket %q is not a valid bucket name (3 to 63 lower-case letters, digits, dots and hyphens)", s.S3Bucket)
	}
	if s.S3Region != "" && !regionPattern.MatchString(s.S3Region) {
		add("patch-storage.s3-region %q is not a region name such as us-east-1", s.S3Region)
	}
	if prefix := strings.Trim(s.S3PathPrefix, "/"); len(prefix) > 512 {
		add("patch-storage.s3-path-prefix is longer than 512 characters")
	} else if prefix != "" && slices.ContainsFunc(strings.Split(prefix, "/"), func(seg string) bool { return seg == "" || seg == "." || seg == ".." }) {
		add("patch-storage.s3-path-prefix %q has an empty, . or .. segment", s.S3PathPrefix)
	}
	if s.S3AccessKey == "" || s.S3SecretKey == "" {
		add("patch-storage.s3-access-key and patch-storage.s3-secret-key are required when patch-storage.type is s3")
	}
	if s.S3CAFile != "" && !strings.HasPrefix(s.S3CAFile, "/") {
		add("patch-storage.s3-ca-file %q is not an absolute path", s.S3CAFile)
	}
	return p
}

// regionPattern is what an S3 region name looks like (us-east-1, eu-central-2, garage).
var regionPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
