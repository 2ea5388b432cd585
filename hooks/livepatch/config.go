package livepatch

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// Config is the charm configuration, one field per option of config.yaml (a contract test
// keeps them in step).
type Config struct {
	URLTemplate              string `json:"url_template"`
	AuthBasicUsers           string `json:"auth_basic_users"`
	Port                     int    `json:"port"`
	LogLevel                 string `json:"log_level"`
	PsqlDBName               string `json:"psql_dbname"`
	PsqlRoles                string `json:"psql_roles"`
	DBConnMax                int    `json:"dbconn_max"`
	DBConnMaxLifetime        string `json:"dbconn_max_lifetime"`
	Patchstore               string `json:"patchstore"`
	StoragePath              string `json:"storage_path"`
	S3Endpoint               string `json:"s3_endpoint"`
	S3Region                 string `json:"s3_region"`
	S3Bucket                 string `json:"s3_bucket"`
	S3PathPrefix             string `json:"s3_path_prefix"`
	S3PathStyle              bool   `json:"s3_path_style"`
	S3CA                     string `json:"s3_ca"`
	S3CredentialsSecret      string `json:"s3_credentials_secret"`
	S3RedirectDownloads      bool   `json:"s3_redirect_downloads"`
	PatchCacheOn             bool   `json:"patch_cache_on"`
	PatchCacheSize           int    `json:"patch_cache_size"`
	PatchCacheTTL            string `json:"patch_cache_ttl"`
	PatchSyncEnabled         bool   `json:"patch_sync_enabled"`
	SyncToken                string `json:"sync_token"`
	SyncUpstream             string `json:"sync_upstream"`
	SyncUpstreamTier         string `json:"sync_upstream_tier"`
	SyncTier                 string `json:"sync_tier"`
	SyncTiers                bool   `json:"sync_tiers"`
	SyncInterval             string `json:"sync_interval"`
	SyncFlavors              string `json:"sync_flavors"`
	SyncArchitectures        string `json:"sync_architectures"`
	SyncMinimumKernelVersion string `json:"sync_minimum_kernel_version"`
	SyncSendMachineReports   bool   `json:"sync_send_machine_reports"`
	SyncTrustedKey           string `json:"sync_trusted_key"`
	SyncServer               bool   `json:"sync_server"`
	AuthBasicUsersSecret     string `json:"auth_basic_users_secret"`
	SyncTokenSecret          string `json:"sync_token_secret"`
	HTTPProxy                string `json:"http_proxy"`
	HTTPSProxy               string `json:"https_proxy"`
	NoProxy                  string `json:"no_proxy"`
	ReportRetention          int    `json:"report_retention"`
	ReportCleanupInterval    string `json:"report_cleanup_interval"`
	ReportCleanupRowLimit    int    `json:"report_cleanup_row_limit"`
	ContractServerURL        string `json:"contract_server_url"`
	ConcurrencyLimit         int    `json:"concurrency_limit"`
	BurstLimit               int    `json:"burst_limit"`
}

// LoadConfig reads the charm configuration.
func LoadConfig(ctx context.Context, c *hooks.Context) (Config, error) {
	var cfg Config
	if err := c.ConfigGet(ctx, &cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// MessageURLTemplateNotSet is the status while url_template is empty.
const MessageURLTemplateNotSet = "✘ url_template config not set"

// Validate checks the options an operator sets and returns every problem, each naming its
// option. Secrets (password hashes, tokens) never appear in the problems.
func (cfg Config) Validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	switch {
	case cfg.URLTemplate == "":
		add(MessageURLTemplateNotSet)
	case !strings.Contains(cfg.URLTemplate, "{filename}"):
		add("url_template must contain {filename}, as in http://<haproxy>/v1/patches/{filename}")
	case config.CheckURLTemplate(cfg.URLTemplate) != nil:
		add("url_template %q is not an http(s) URL", cfg.URLTemplate)
	}
	if _, err := parseBasicUsers(cfg.AuthBasicUsers); err != nil {
		add("auth_basic_users %v", err)
	}
	if cfg.Port < 1024 || cfg.Port > 65535 {
		add("port %d is not between 1024 and 65535 (the server runs unprivileged, as the %s user; haproxy serves clients on 80 and 443)", cfg.Port, ServiceUser)
	}
	if levels := []string{"debug", "info", "warn", "error"}; !slices.Contains(levels, cfg.LogLevel) {
		add("log_level %q is not one of %s", cfg.LogLevel, strings.Join(levels, ", "))
	}
	if cfg.PsqlDBName == "" {
		add("psql_dbname must not be empty")
	}
	for _, d := range []struct{ name, value string }{
		{"dbconn_max_lifetime", cfg.DBConnMaxLifetime},
		{"patch_cache_ttl", cfg.PatchCacheTTL},
		{"sync_interval", cfg.SyncInterval},
		{"report_cleanup_interval", cfg.ReportCleanupInterval},
	} {
		if v, err := time.ParseDuration(d.value); err != nil || v < 0 {
			add("%s %q is not a duration such as 30m or 6h", d.name, d.value)
		}
	}
	for _, n := range []struct {
		name  string
		value int
	}{
		{"dbconn_max", cfg.DBConnMax},
		{"concurrency_limit", cfg.ConcurrencyLimit},
		{"report_retention", cfg.ReportRetention},
		{"report_cleanup_row_limit", cfg.ReportCleanupRowLimit},
	} {
		if n.value < 1 {
			add("%s must be at least 1", n.name)
		}
	}
	if cfg.BurstLimit < 0 {
		add("burst_limit must not be negative")
	}
	if cfg.PatchCacheOn && cfg.PatchCacheSize < 1 {
		add("patch_cache_size must be at least 1 when patch_cache_on is true")
	}
	switch cfg.Patchstore {
	case "postgres":
	case "filesystem", "file":
		if !strings.HasPrefix(cfg.StoragePath, "/") {
			add("storage_path must be an absolute directory when patchstore is filesystem")
		}
	case "s3":
		p = append(p, cfg.checkS3()...)
	default:
		add("patchstore %q is not one of postgres, filesystem, s3", cfg.Patchstore)
	}
	if err := config.CheckKernelVersion(cfg.SyncMinimumKernelVersion); err != nil {
		add("sync_minimum_kernel_version %q is not of the form x.y.z", cfg.SyncMinimumKernelVersion)
	}
	if key := strings.TrimSpace(cfg.SyncTrustedKey); key != "" {
		if _, err := server.ParsePublicKeys(key); err != nil {
			add("sync_trusted_key is not the base64 of an ed25519 public key: give the content of the upstream's signing.pub (two, comma-separated, while it rotates keys)")
		}
	}
	if cfg.SyncTiers && cfg.SyncTier != "" {
		add("sync_tier %q is meaningless with sync_tiers: synced patches go to the tier they are in on the upstream; unset sync_tier", cfg.SyncTier)
	}
	if cfg.PatchSyncEnabled {
		// An empty sync_upstream blocks later in the guard chain, with what to do.
		if u, err := url.Parse(cfg.SyncUpstream); cfg.SyncUpstream != "" && (err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https")) {
			add("sync_upstream %q is not an http(s) URL", cfg.SyncUpstream)
		}
		if v, err := time.ParseDuration(cfg.SyncInterval); err == nil && v < time.Minute {
			add("sync_interval must be at least 1m")
		}
	}
	if u, err := url.Parse(cfg.ContractServerURL); err != nil || u.Host == "" {
		add("contract_server_url %q is not a URL", cfg.ContractServerURL)
	}
	for i := range p {
		p[i] = config.Redact(p[i]) // problems quote URLs, which may carry credentials
	}
	return p
}

// parseBasicUsers parses a comma-separated list of user:bcrypt-hash entries into a list of
// users (in order) and their entries. The error names the entry by position and user, never
// the hash.
func parseBasicUsers(list string) ([]basicUser, error) {
	var users []basicUser
	n := 0
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		n++
		user, _, err := config.ParseBasicUser(entry)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %v", n, err)
		}
		users = append(users, basicUser{name: user, entry: entry})
	}
	return users, nil
}

type basicUser struct {
	name  string
	entry string // user:hash
}

// mergeBasicUsers returns the entries of base with those of override added; an override user
// replaces a base user of the same name.
func mergeBasicUsers(base, override []basicUser) []string {
	var out []string
	replaced := map[string]bool{}
	for _, u := range override {
		replaced[u.name] = true
	}
	for _, u := range base {
		if !replaced[u.name] {
			out = append(out, u.entry)
		}
	}
	for _, u := range override {
		out = append(out, u.entry)
	}
	return out
}

// splitList splits a comma-separated option into its non-empty, trimmed items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
