package livepatch

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// renderInput is everything the server configuration is made from.
type renderInput struct {
	cfg       Config
	address   string   // the unit's bind address
	proxies   []string // the addresses haproxy connects from (trusted-proxies)
	dsn       string
	users     []string // user:bcrypt-hash
	syncToken string
	modelUUID string
	// storagePath is storage_path joined under the filesystem root.
	storagePath string
	s3          s3Credentials // from s3_credentials_secret
	proxy       config.Proxy  // the model's proxy settings, used where the options are empty
	signingKey  string        // PEM of the sync signing key; "" when not serving downstreams
}

// renderServerConfig fills the server configuration from the charm configuration.
func renderServerConfig(in renderInput) config.Config {
	cfg := in.cfg
	sc := config.Default()
	sc.Server.Address = net.JoinHostPort(in.address, strconv.Itoa(cfg.Port))
	sc.Server.URLTemplate = cfg.URLTemplate
	sc.Server.LogLevel = cfg.LogLevel
	sc.Server.ConcurrencyLimit = cfg.ConcurrencyLimit
	sc.Server.BurstLimit = cfg.BurstLimit
	sc.Server.TrustedProxies = in.proxies

	sc.Database.ConnectionString = in.dsn
	sc.Database.ConnectionPoolMax = cfg.DBConnMax
	sc.Database.ConnectionLifetimeMax = duration(cfg.DBConnMaxLifetime)

	sc.Auth.BasicUsers = in.users

	sc.PatchStorage.Type = config.StoragePostgres
	if cfg.Patchstore == "filesystem" || cfg.Patchstore == "file" {
		sc.PatchStorage.Type = config.StorageFilesystem
		sc.PatchStorage.FilesystemPath = in.storagePath
	}
	if cfg.Patchstore == "s3" {
		renderS3(&sc.PatchStorage, cfg, in.s3)
	}
	sc.PatchCache = config.PatchCache{
		Enabled:   cfg.PatchCacheOn,
		CacheSize: cfg.PatchCacheSize,
		CacheTTL:  duration(cfg.PatchCacheTTL),
	}
	sc.MachineReports = config.MachineReports{
		RetentionDays:   cfg.ReportRetention,
		CleanupInterval: duration(cfg.ReportCleanupInterval),
		CleanupRowLimit: cfg.ReportCleanupRowLimit,
	}
	sc.Contracts.URL = cfg.ContractServerURL
	sc.SyncServer.SigningKey = in.signingKey

	s := &sc.PatchSync
	// Without an upstream or a token the server cannot sync; it keeps serving what it has.
	s.Enabled = cfg.PatchSyncEnabled && cfg.SyncUpstream != "" && in.syncToken != ""
	s.ID = in.modelUUID
	s.UpstreamURL = cfg.SyncUpstream
	s.Token = in.syncToken
	s.Interval = duration(cfg.SyncInterval)
	s.UpstreamTier = cfg.SyncUpstreamTier
	s.Tier = cfg.SyncTier
	s.SyncTiers = cfg.SyncTiers
	s.Flavors = splitList(cfg.SyncFlavors)
	s.Architectures = splitList(cfg.SyncArchitectures)
	s.MinimumKernelVersion = cfg.SyncMinimumKernelVersion
	s.SendMachineReports = cfg.SyncSendMachineReports
	s.TrustedKey = strings.TrimSpace(cfg.SyncTrustedKey)
	s.Proxy = config.Proxy{
		HTTP:    firstNonEmpty(cfg.HTTPProxy, in.proxy.HTTP),
		HTTPS:   firstNonEmpty(cfg.HTTPSProxy, in.proxy.HTTPS),
		NoProxy: firstNonEmpty(cfg.NoProxy, in.proxy.NoProxy),
	}
	return sc
}

// duration parses an option already checked by Config.Validate.
func duration(s string) config.Duration {
	d, _ := time.ParseDuration(s)
	return config.Duration(d)
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
