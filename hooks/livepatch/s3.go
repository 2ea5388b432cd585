package livepatch

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// S3CAPath is where the charm writes s3_ca for the server.
const S3CAPath = "/etc/livepatch/s3-ca.pem"

// The keys of the s3_credentials_secret user secret (those s3-integrator uses).
const (
	s3AccessKeyKey = "access-key"
	s3SecretKeyKey = "secret-key"
)

// s3Credentials are the S3 keys read from s3_credentials_secret.
type s3Credentials struct {
	accessKey, secretKey string
}

// checkS3 lists the problems of the s3_* options when patchstore is s3.
func (cfg Config) checkS3() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if u, err := url.Parse(cfg.S3Endpoint); cfg.S3Endpoint == "" {
		add("s3_endpoint must be set when patchstore is s3 (such as https://s3.example.com)")
	} else if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		add("s3_endpoint is not an http(s) URL without credentials")
	}
	if cfg.S3Bucket == "" {
		add("s3_bucket must be set when patchstore is s3")
	}
	if cfg.S3CredentialsSecret == "" {
		add("s3_credentials_secret must be set when patchstore is s3: the URI of a Juju user secret with access-key and secret-key")
	}
	if cfg.S3CA != "" && !strings.Contains(cfg.S3CA, "-----BEGIN CERTIFICATE-----") {
		add("s3_ca holds no PEM certificate")
	}
	return p
}

// resolveS3Credentials reads s3_credentials_secret when patchstore is s3; a non-zero
// status (Blocked) says what the operator must fix.
func resolveS3Credentials(ctx context.Context, c *hooks.Context, cfg Config) (s3Credentials, hooks.Status, error) {
	var cr s3Credentials
	if cfg.Patchstore != "s3" || cfg.S3CredentialsSecret == "" {
		return cr, hooks.Status{}, nil
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{s3AccessKeyKey, &cr.accessKey}, {s3SecretKeyKey, &cr.secretKey}} {
		v, st, err := c.SecretOption(ctx, "s3_credentials_secret", cfg.S3CredentialsSecret, k.key)
		if err != nil || !st.IsZero() {
			return s3Credentials{}, st, err
		}
		*k.dst = v
	}
	return cr, hooks.Status{}, nil
}

// renderS3 fills the s3 patch storage keys of the server configuration.
func renderS3(s *config.PatchStorage, cfg Config, cr s3Credentials) {
	s.Type = config.StorageS3
	s.S3Endpoint = cfg.S3Endpoint
	s.S3Region = cfg.S3Region
	s.S3Bucket = cfg.S3Bucket
	s.S3PathPrefix = cfg.S3PathPrefix
	s.S3PathStyle = cfg.S3PathStyle
	s.S3AccessKey, s.S3SecretKey = cr.accessKey, cr.secretKey
	s.RedirectDownloads = cfg.S3RedirectDownloads
	if cfg.S3CA != "" {
		s.S3CAFile = S3CAPath
	}
}

// writeS3CA writes s3_ca to S3CAPath, or removes it when unset.
func writeS3CA(c *hooks.Context, cfg Config) error {
	if cfg.Patchstore != "s3" || cfg.S3CA == "" {
		return c.RemoveFile(S3CAPath)
	}
	_, err := c.WriteFile(S3CAPath, []byte(cfg.S3CA), 0o644) // certificates, no secret
	return err
}

// checkStorage runs the server's storage check when patchstore is s3: a bucket that is
// missing or unreachable, or credentials it refuses, block the unit with the server's
// reason (which never carries the secret). A server too old to check is not a problem.
func checkStorage(ctx context.Context, c *hooks.Context, u *Unit, binary string) (hooks.Status, error) {
	if u.Config.Patchstore != "s3" {
		return hooks.Status{}, nil
	}
	_, err := runServer(ctx, c, binary, "storage", "check", "--config", c.Path(SchemaConfigPath))
	switch hooks.ExitCode(err) {
	case 0:
		return hooks.Status{}, nil
	case 3:
		reason := "cannot use the S3 bucket"
		if ee, ok := errors.AsType[*hooks.ExitError](err); ok && ee.Reason() != "" {
			reason = strings.TrimPrefix(ee.Reason(), "error: ")
		}
		return hooks.Blocked("Patch storage unusable: " + config.Redact(reason)), nil
	}
	_ = c.JujuLog(ctx, hooks.LevelWarning, fmt.Sprintf("Patch storage check failed: %v", err))
	return hooks.Status{}, nil
}
