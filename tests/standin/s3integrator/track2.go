package s3integrator

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/tests/standin/hookenv"
)

//go:embed charm2
var files2 embed.FS

// Files2 holds the metadata and config of s3-integrator 2/ (no status-detail action: the
// stand-in's status is the one status-set shows).
var Files2, _ = fs.Sub(files2, "charm2")

// The track 2 charm (canonical/object-storage-integrators, s3/), the s3 library v1 on
// data_interfaces' ProviderData:
//
//   - The keys come from the Juju user secret the credentials option names (access-key and
//     secret-key), read at its latest revision; the unit is Blocked while the option is
//     unset ("Missing config(s): 'credentials'"), the secret does not exist, is not granted
//     or lacks a key, with the real charm's messages.
//   - On relation-created the leader writes lib-version 1.0. On every other hook the leader
//     reconciles: the bucket option's bucket, else the one a v1 requirer asks for (a v0
//     requirer's, which it writes without requested-secrets, is ignored), is listed and
//     created when missing; a bucket it cannot list nor create is "Could not ensure
//     bucket(s): '<name>'" (Blocked): a wrong key shows there. Then it writes the options
//     and keys to every relation whose requirer wrote lib-version or bucket (none before:
//     the library refuses such premature writes): the fields the requirer lists in
//     requested-secrets (access-key, secret-key) in an application secret labelled
//     s3-credentials.<id>.extra.secret, granted to the relation, its URI in secret-extra; the
//     rest, and everything for a requirer that asked for no secrets, in plain fields.
//     attributes stays the comma-separated string; tls-ca-chain is a JSON list.

// Main2 is the dispatch of the track 2 charm.
func Main2() int { return hookenv.Main("s3-integrator", run2) }

// The real charm's status messages.
const (
	MessageMissingCredentials = "Missing config(s): 'credentials'"
	libVersion                = "1.0"
)

// MessageBucketUnavailable is the Blocked message of buckets the charm cannot list nor create.
func MessageBucketUnavailable(buckets ...string) string {
	return "Could not ensure bucket(s): " + quoteList(buckets)
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = "'" + s + "'"
	}
	return strings.Join(q, ", ")
}

func run2(hook string) error {
	if hook == Provides+"-relation-created" {
		if !hookenv.IsLeader() {
			return nil
		}
		return hookenv.Set(os.Getenv("JUJU_RELATION_ID"), true, map[string]string{"lib-version": libVersion})
	}
	s3, status, err := connectionInfo()
	if err != nil {
		return err
	}
	if status != "" {
		return hookenv.Status("blocked", status)
	}
	if !hookenv.IsLeader() {
		return hookenv.Status("active", "")
	}
	missing, invalid, err := reconcileBuckets(s3)
	if err != nil {
		return err
	}
	var msgs []string
	if len(missing) > 0 {
		msgs = append(msgs, MessageBucketUnavailable(missing...))
	}
	if len(invalid) > 0 {
		msgs = append(msgs, "Invalid name for bucket(s): "+quoteList(invalid))
	}
	if len(msgs) > 0 {
		return hookenv.Status("blocked", strings.Join(msgs, ", "))
	}
	return hookenv.Status("active", "")
}

// bucketRE is the real charm's BUCKET_REGEX without its look-ahead (xn-- prefixes and
// -s3alias suffixes are refused apart).
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

func validBucket(b string) bool {
	return b == "" || bucketRE.MatchString(b) && !strings.HasPrefix(b, "xn--") && !strings.HasSuffix(b, "-s3alias")
}

// connectionInfo is the real charm's Context.s3: the options (empty ones left out) and the
// keys of the credentials secret; status is the Blocked message when they are unusable.
func connectionInfo() (map[string]string, string, error) {
	cfg, err := hookenv.Config()
	if err != nil {
		return nil, "", err
	}
	str := func(k string) string { v, _ := cfg[k].(string); return v }
	uri := str("credentials")
	if uri == "" {
		return nil, MessageMissingCredentials, nil
	}
	var invalid []string
	if !validBucket(str("bucket")) {
		invalid = append(invalid, "bucket")
	}
	if v := str("s3-api-version"); v != "" && v != "2" && v != "4" {
		invalid = append(invalid, "s3-api-version")
	}
	info := map[string]string{}
	for _, k := range []string{"endpoint", "bucket", "region", "path", "attributes", "s3-uri-style", "storage-class", "s3-api-version"} {
		if v := str(k); v != "" {
			info[k] = v
		}
	}
	if v := str("tls-ca-chain"); v != "" {
		pem, err := base64.StdEncoding.DecodeString(v)
		chain := parseCAChain(string(pem))
		if err != nil || len(chain) == 0 {
			invalid = append(invalid, "tls_ca_chain")
		} else {
			info["tls-ca-chain"] = pyJSON(chain)
		}
	}
	if len(invalid) > 0 {
		return nil, "Invalid config(s): " + quoteList(invalid), nil
	}
	content, err := hooks.NewContext().SecretGet(context.Background(), uri)
	if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
		id := uri
		switch reason := ee.Reason(); {
		case strings.Contains(reason, "permission denied"):
			return nil, fmt.Sprintf("The secret '%s' has not been granted to the charm", id), nil
		case strings.Contains(reason, "not found"):
			return nil, fmt.Sprintf("The secret '%s' does not exist", id), nil
		default:
			return nil, fmt.Sprintf("The secret '%s' could not be decoded", id), nil
		}
	}
	if err != nil {
		return nil, "", err
	}
	var lacking []string
	for _, k := range []string{"access-key", "secret-key"} {
		if content[k] == "" {
			lacking = append(lacking, k)
		}
	}
	if len(lacking) > 0 {
		return nil, fmt.Sprintf("The secret '%s' is missing mandatory field(s): %s", uri, quoteList(lacking)), nil
	}
	info["access-key"], info["secret-key"] = content["access-key"], content["secret-key"]
	return info, "", nil
}

// s3Client is the real charm's S3Manager resource: the endpoint with the keys, path-style
// unless s3-uri-style says host, trusting the system's CAs (the stand-in serves loopback).
func s3Client(info map[string]string) (*minio.Client, error) {
	u, err := url.Parse(info["endpoint"])
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not a URL", info["endpoint"])
	}
	lookup := minio.BucketLookupPath
	if info["s3-uri-style"] == "host" {
		lookup = minio.BucketLookupDNS
	}
	region := info["region"]
	if region == "" {
		region = "us-east-1"
	}
	return minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(info["access-key"], info["secret-key"], ""),
		Secure: u.Scheme == "https", Region: region, BucketLookup: lookup, MaxRetries: 1,
	})
}

// ensureBucket is the real charm's ensure_bucket: list the bucket, else create it and list
// it again.
func ensureBucket(c *minio.Client, bucket, path, region string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list := func() bool {
		for oi := range c.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: strings.TrimPrefix(path, "/"), MaxKeys: 1}) {
			if oi.Err != nil {
				hookenv.Log("The bucket '%s' can't be fetched; Response: %v", bucket, oi.Err)
				return false
			}
			break
		}
		return true
	}
	if list() {
		return true
	}
	hookenv.Status("maintenance", fmt.Sprintf("Creating bucket: '%s'...", bucket))
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
		hookenv.Log("Could not create the bucket '%s'; Response: %v", bucket, err)
		return false
	}
	return list()
}

// reconcileBuckets is the real charm's reconcile_buckets on the leader.
func reconcileBuckets(s3 map[string]string) (missing, invalid []string, err error) {
	c, err := s3Client(s3)
	if err != nil {
		return []string{s3["bucket"]}, nil, nil
	}
	configBucket, configPath := s3["bucket"], s3["path"]
	if configBucket != "" && !ensureBucket(c, configBucket, configPath, s3["region"]) {
		return []string{configBucket}, nil, nil
	}
	ids, err := hookenv.RelationIDs(Provides)
	if err != nil {
		return nil, nil, err
	}
	me := appName()
	for _, id := range ids {
		remote, err := hookenv.RemoteApp(id)
		if err != nil || remote == "" {
			continue
		}
		req, err := hookenv.AppData(id, remote)
		if err != nil {
			return nil, nil, err
		}
		var requested []string
		if s := req["requested-secrets"]; s != "" {
			if err := json.Unmarshal([]byte(s), &requested); err != nil {
				return nil, nil, fmt.Errorf("cannot decode requested-secrets: %w", err)
			}
		}
		if req["lib-version"] == "" && req["bucket"] == "" {
			continue // PrematureDataAccessError: the requirer has not asked yet
		}
		relBucket := req["bucket"]
		if len(requested) == 0 {
			relBucket = "" // a v0 requirer's bucket is discarded
		}
		path := configPath
		if path == "" {
			path = req["path"]
		}
		data := maps.Clone(s3)
		data["path"] = path
		if configBucket == "" && relBucket != "" {
			if !validBucket(relBucket) {
				if !slices.Contains(invalid, relBucket) {
					invalid = append(invalid, relBucket)
				}
				continue
			}
			if !ensureBucket(c, relBucket, path, s3["region"]) {
				if !slices.Contains(missing, relBucket) {
					missing = append(missing, relBucket)
				}
				continue
			}
			data["bucket"] = relBucket
		}
		if err := publish(id, me, requested, data); err != nil {
			return nil, nil, err
		}
	}
	return missing, invalid, nil
}

// publish is data_interfaces' update_relation_data on the provider: the requested fields
// in the relation's extra secret, the rest in plain fields.
func publish(relID, me string, requested []string, data map[string]string) error {
	ours, err := hookenv.AppData(relID, me)
	if err != nil {
		return err
	}
	secret := map[string]string{}
	for _, k := range requested {
		if v, ok := data[k]; ok {
			secret[k] = v
			delete(data, k)
		}
	}
	if len(secret) > 0 {
		hc := hooks.NewContext()
		ctx := context.Background()
		if uri := ours["secret-extra"]; uri == "" {
			label := fmt.Sprintf("%s.%s.extra.secret", Provides, relID[strings.LastIndexByte(relID, ':')+1:])
			uri, err := hc.SecretAdd(ctx, label, "", secret)
			if err != nil {
				return err
			}
			if err := hc.SecretGrant(ctx, uri, relID); err != nil {
				return err
			}
			data["secret-extra"] = uri
		} else {
			old, err := hc.SecretGet(ctx, uri)
			if err != nil {
				return err
			}
			merged := maps.Clone(old)
			maps.Copy(merged, secret)
			if !maps.Equal(merged, old) {
				if err := hc.SecretSet(ctx, uri, merged); err != nil {
					return err
				}
			}
		}
	}
	return hookenv.Set(relID, true, data)
}
