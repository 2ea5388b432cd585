package livepatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
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
		add("s3_endpoint must be set when patchstore is s3 (such as https://s3.example.com), or relate s3-credentials to s3-integrator")
	} else if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		add("s3_endpoint is not an http(s) URL without credentials")
	}
	if cfg.S3Bucket == "" {
		add("s3_bucket must be set when patchstore is s3")
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
	if cfg.Patchstore != "s3" {
		return cr, hooks.Status{}, nil
	}
	if cfg.S3CredentialsSecret == "" {
		return cr, hooks.Blocked("s3_credentials_secret must be set when patchstore is s3: the URI of a Juju user secret with access-key and secret-key; or relate s3-credentials to s3-integrator"), nil
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

// S3CredentialsEndpoint is the relation with the s3-integrator charm (interface s3).
const S3CredentialsEndpoint = "s3-credentials"

// MessageS3CredentialsWaiting is the status while s3-integrator has not shared credentials.
const MessageS3CredentialsWaiting = "Waiting for s3-integrator to share the S3 credentials (s3-credentials relation)"

// The s3 interface as the s3 library v1 (s3-integrator 2/, canonical/object-storage-integrators)
// speaks it: the requirer says its version in lib-version and, where Juju has secrets, asks
// for the keys in a secret (requested-secrets, json.dumps of S3RequirerData.SECRET_FIELDS);
// a v1 provider shares them in the secret its field secret-extra names (data_interfaces'
// group extra). A v0 provider (s3-integrator 1/, data_platform_libs v0) ignores both and
// shares the keys in plain fields.
const (
	s3LibVersion       = "1.0"
	s3RequestedSecrets = `["access-key", "secret-key"]`
)

var s3ProviderSecrets = []providerSecret{{"secret-extra", []string{"access-key", "secret-key"}}}

// s3FromRelation reads the s3-credentials relation when patchstore is s3, as the s3
// requirer library does (v1, which also speaks to v0 providers): the leader writes
// lib-version, requested-secrets where Juju has secrets, and bucket (s3_bucket) and path
// (s3_path_prefix) when set. A v0 provider answers only once bucket is asked for, so when
// s3_bucket is unset and the provider turns out to be v0 (it wrote something, but no
// lib-version of 1 or more) the leader asks for relation-<id>, as both libraries do.
// s3-integrator answers in its own application bag with access-key and secret-key (in plain
// fields or, v1 asked for secrets, in the secret secret-extra names), endpoint, bucket,
// region, path, s3-uri-style (path or host) and tls-ca-chain (a JSON list of PEM
// certificates). Its values replace the s3_* options. related is false without the
// relation; a non-zero status means the chain waits.
func s3FromRelation(ctx context.Context, c *hooks.Context, cfg *Config) (cr s3Credentials, related bool, st hooks.Status, err error) {
	if cfg.Patchstore != "s3" {
		return cr, false, hooks.Status{}, nil
	}
	ids, err := liveRelationIDs(ctx, c, S3CredentialsEndpoint)
	if err != nil || len(ids) == 0 {
		return cr, false, hooks.Status{}, err
	}
	relID := ids[0]
	app, err := c.RelationApp(ctx, relID)
	if err != nil {
		return cr, true, hooks.Status{}, err
	}
	var data map[string]string
	if app != "" {
		if data, err = c.RelationGetApp(ctx, relID, app); err != nil {
			return cr, true, hooks.Status{}, err
		}
	}
	leader, err := c.IsLeader(ctx)
	if err != nil {
		return cr, true, hooks.Status{}, err
	}
	if leader {
		ours, err := c.RelationGetApp(ctx, relID, c.AppName())
		if err != nil {
			return cr, true, hooks.Status{}, err
		}
		want := map[string]string{"lib-version": s3LibVersion}
		if c.HasSecrets() {
			want["requested-secrets"] = s3RequestedSecrets
		}
		if cfg.S3Bucket != "" {
			want["bucket"] = cfg.S3Bucket
		} else if ours["bucket"] == "" && s3ProviderV0(data) {
			want["bucket"] = "relation-" + relID[strings.LastIndexByte(relID, ':')+1:]
		}
		if cfg.S3PathPrefix != "" {
			want["path"] = cfg.S3PathPrefix
		}
		if err := setIfChanged(ours, want, func(d map[string]string) error { return c.RelationSetApp(ctx, relID, d) }); err != nil {
			return cr, true, hooks.Status{}, err
		}
	}
	if app == "" {
		return cr, true, hooks.Waiting(MessageS3CredentialsWaiting), nil
	}
	data, st, err = withProviderSecrets(ctx, c, app, S3CredentialsEndpoint, "S3 credentials", s3ProviderSecrets, data)
	if err != nil || !st.IsZero() {
		return cr, true, st, err
	}
	if data["access-key"] == "" || data["secret-key"] == "" || data["endpoint"] == "" || data["bucket"] == "" {
		return cr, true, hooks.Waiting(MessageS3CredentialsWaiting), nil
	}
	cr = s3Credentials{accessKey: data["access-key"], secretKey: data["secret-key"]}
	cfg.S3Endpoint, cfg.S3Bucket = data["endpoint"], data["bucket"]
	if v := data["region"]; v != "" {
		cfg.S3Region = v
	}
	if v := data["path"]; v != "" {
		cfg.S3PathPrefix = strings.Trim(v, "/")
	}
	switch data["s3-uri-style"] {
	case "path":
		cfg.S3PathStyle = true
	case "host":
		cfg.S3PathStyle = false
	}
	if v := data["tls-ca-chain"]; v != "" {
		var chain []string
		if err := json.Unmarshal([]byte(v), &chain); err != nil {
			return cr, true, hooks.Blocked("s3-integrator shares a tls-ca-chain that is not a JSON list of certificates"), nil
		}
		cfg.S3CA = strings.Join(chain, "\n")
	}
	return cr, true, hooks.Status{}, nil
}

// s3ProviderV0 reports whether an s3 provider's application bag is that of a v0 provider,
// as the s3 library v1 decides: it wrote something but no lib-version, or one below 1.
func s3ProviderV0(data map[string]string) bool {
	v, ok := data["lib-version"]
	if !ok {
		return len(data) > 0
	}
	f, err := strconv.ParseFloat(v, 64)
	return err == nil && f < 1
}
