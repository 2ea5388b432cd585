// Package s3integrator is the stand-in for the s3-integrator charm (canonical/s3-integrator,
// track 1, on data_platform_libs' s3 library v0): a real charm (metadata, config and actions
// of the real one in charm/, dispatch = this package's Main via the jujusim multi-call
// binary) that shares an S3 bucket and its credentials on the s3 interface as the real one
// does, event by event:
//
//   - The options and the keys are kept in the peer relation's application bag
//     (s3-integrator-peers), as the real charm keeps them; the unit is Blocked with
//     "Missing parameters: ['access-key', 'secret-key']" (a Python list) on start and on
//     every peer relation-changed until the sync-s3-credentials action set both keys, and
//     Active (without a message) after.
//   - config-changed (leader): each option set goes in the peer bag and in the application
//     bag of every s3-credentials relation; an option reset is removed from the peer bag and
//     written as "" (attributes and tls-ca-chain as json.dumps, so "\"\""). attributes is a
//     comma-separated list and tls-ca-chain base64 PEM, both shared as JSON lists;
//     experimental-delete-older-than-days is shared as delete-older-than-days when within
//     [1, 9999999], else the unit is Blocked.
//   - s3-credentials relation-changed (leader): the requirer's application bag is compared
//     with the copy the provider keeps in its own bag (data, json.dumps of the requirer's
//     bag); when bucket was added, the bucket option (or else the requirer's bucket, which
//     then becomes the bucket option) and everything in the peer bag is shared. A requirer
//     that never asks for a bucket gets nothing on that event.
//   - sync-s3-credentials (leader only) stores access-key and secret-key and shares them on
//     every relation; get-s3-credentials and get-s3-connection-info (keys masked) report.
//
// The real charm checks nothing against the S3 service: a wrong key or a missing bucket is
// the requirer's to find. Neither does it share anything in Juju secrets: that is track 2
// (canonical/object-storage-integrators, the s3 library v1), whose stand-in is Main2 and
// Files2 (deployed as s3-integrator-2; see track2.go).
package s3integrator

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/livepatch-onprem/livepatch/tests/standin/hookenv"
)

//go:embed charm
var files embed.FS

// Files holds metadata.yaml, config.yaml and actions.yaml.
var Files, _ = fs.Sub(files, "charm")

// The relations of the charm.
const (
	Peer     = "s3-integrator-peers"
	Provides = "s3-credentials"
)

// Results and failures of the actions, as the real charm words them.
const (
	MessageNotLeader      = "The action can be run only on leader unit."
	MessageSynced         = "Credentials successfully updated."
	MessageConfigured     = "Credentials are configured."
	MessageNotSet         = "Credentials are not set!"
	maxRetentionDays      = 9999999
	maskedKey             = "************"
	deleteOlderThanOption = "delete-older-than-days"
)

// options are the real charm's S3_OPTIONS, in its order.
var options = []string{
	"access-key", "secret-key", "region", "storage-class", "attributes", "bucket", "endpoint",
	"path", "s3-api-version", "s3-uri-style", "tls-ca-chain", deleteOlderThanOption,
}

// MissingMessage is the Blocked message of a unit without the keys listed (the real
// charm's f"Missing parameters: {missing_options}").
func MissingMessage(missing ...string) string {
	q := make([]string, len(missing))
	for i, m := range missing {
		q[i] = "'" + m + "'"
	}
	return "Missing parameters: [" + strings.Join(q, ", ") + "]"
}

// Main is the charm's dispatch.
func Main() int { return hookenv.Main("s3-integrator", run) }

func run(hook string) error {
	switch hook {
	case "start", Peer + "-relation-changed":
		return setStatus()
	case "config-changed":
		return configChanged()
	case Provides + "-relation-changed":
		return relationChanged()
	case "sync-s3-credentials":
		return syncCredentials()
	case "get-s3-credentials":
		return getCredentials()
	case "get-s3-connection-info":
		return getConnectionInfo()
	}
	return nil
}

// peer is the peer relation's application bag, where the real charm keeps its state; id is
// "" without the relation (then, as for ops' empty dict, writes go nowhere).
type peer struct {
	id   string
	data map[string]string
}

func loadPeer() (*peer, error) {
	ids, err := hookenv.RelationIDs(Peer)
	if err != nil || len(ids) == 0 {
		return &peer{data: map[string]string{}}, err
	}
	data, err := hookenv.AppData(ids[0], appName())
	if err != nil {
		return nil, err
	}
	return &peer{id: ids[0], data: data}, nil
}

// set is the real charm's set_secret("app", key, value): an empty value deletes the key,
// which must be there (a KeyError, the hook fails, otherwise).
func (p *peer) set(key, value string) error {
	if value == "" {
		if _, ok := p.data[key]; !ok {
			return fmt.Errorf("KeyError: '%s'", key)
		}
		delete(p.data, key)
	} else {
		p.data[key] = value
	}
	if p.id == "" {
		return nil
	}
	return hookenv.Set(p.id, true, map[string]string{key: value})
}

func appName() string {
	u := os.Getenv("JUJU_UNIT_NAME")
	return u[:max(strings.LastIndexByte(u, '/'), 0)]
}

func missing(p *peer) []string {
	var m []string
	for _, k := range []string{"access-key", "secret-key"} {
		if p.data[k] == "" {
			m = append(m, k)
		}
	}
	return m
}

func setStatus() error {
	p, err := loadPeer()
	if err != nil {
		return err
	}
	if m := missing(p); len(m) > 0 {
		return hookenv.Status("blocked", MissingMessage(m...))
	}
	return hookenv.Status("active", "")
}

// share is update_connection_info on every s3-credentials relation: list options are
// encoded with json.dumps, every other value as it is.
func share(values map[string]any) error {
	if len(values) == 0 {
		return nil
	}
	ids, err := hookenv.RelationIDs(Provides)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := shareOn(id, values); err != nil {
			return err
		}
	}
	return nil
}

func shareOn(relID string, values map[string]any) error {
	bag := map[string]string{}
	for k, v := range values {
		switch v := v.(type) {
		case string:
			if k == "attributes" || k == "tls-ca-chain" {
				bag[k] = pyJSON(v)
			} else {
				bag[k] = v
			}
		default:
			bag[k] = pyJSON(v)
		}
	}
	return hookenv.Set(relID, true, bag)
}

func configChanged() error {
	if !hookenv.IsLeader() {
		return nil
	}
	cfg, err := hookenv.Config()
	if err != nil {
		return err
	}
	p, err := loadPeer()
	if err != nil {
		return err
	}
	update := map[string]any{}
	for _, option := range options {
		if option == deleteOlderThanOption {
			v, ok := cfg["experimental-"+option]
			if !ok {
				continue
			}
			days, _ := v.(float64)
			if days > 0 && days <= maxRetentionDays {
				s := strconv.Itoa(int(days))
				update[option] = s
				if err := p.set(option, s); err != nil {
					return err
				}
				if err := hookenv.Status("active", ""); err != nil {
					return err
				}
			} else {
				hookenv.Log("Invalid value %v for config '%s'", v, option)
				msg := fmt.Sprintf("Option %s value %d outside allowed range [1, %d].", option, int(days), maxRetentionDays)
				if err := hookenv.Status("blocked", msg); err != nil {
					return err
				}
			}
			continue
		}
		v, _ := cfg[option].(string)
		if v == "" {
			if option == "access-key" || option == "secret-key" {
				continue
			}
			if _, ok := p.data[option]; ok {
				if err := p.set(option, ""); err != nil {
					return err
				}
				update[option] = ""
			}
			continue
		}
		switch option {
		case "attributes":
			values := strings.Split(v, ",")
			update[option] = values
			if err := p.set(option, pyJSON(values)); err != nil {
				return err
			}
		case "tls-ca-chain":
			pem, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return fmt.Errorf("binascii.Error: tls-ca-chain: %w", err)
			}
			chain := parseCAChain(string(pem))
			if len(chain) == 0 {
				return errors.New("ValueError: No certificate found in chain file")
			}
			update[option] = chain
			if err := p.set(option, pyJSON(chain)); err != nil {
				return err
			}
		default:
			update[option] = v
			if err := p.set(option, v); err != nil {
				return err
			}
		}
	}
	return share(update)
}

var certRE = regexp.MustCompile(`(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----`)

// parseCAChain is the real charm's parse_ca_chain: the certificates of a PEM chain.
func parseCAChain(pem string) []string { return certRE.FindAllString(pem, -1) }

func relationChanged() error {
	if !hookenv.IsLeader() {
		return nil
	}
	relID := os.Getenv("JUJU_RELATION_ID")
	remote := os.Getenv("JUJU_REMOTE_APP")
	ours, err := hookenv.AppData(relID, appName())
	if err != nil {
		return err
	}
	theirs := map[string]string{}
	if remote != "" {
		if theirs, err = hookenv.AppData(relID, remote); err != nil {
			return err
		}
		delete(theirs, "data")
	}
	old := map[string]string{}
	if s := ours["data"]; s != "" {
		if err := json.Unmarshal([]byte(s), &old); err != nil {
			return fmt.Errorf("cannot decode data: %w", err)
		}
	}
	_, hadBucket := old["bucket"]
	_, hasBucket := theirs["bucket"]
	if err := hookenv.Set(relID, true, map[string]string{"data": pyJSON(theirs)}); err != nil {
		return err
	}
	if hadBucket || !hasBucket {
		return nil
	}
	// credentials_requested
	p, err := loadPeer()
	if err != nil {
		return err
	}
	bucket := p.data["bucket"]
	if bucket == "" {
		bucket = theirs["bucket"]
	}
	// The real charm tests get_secret("app", bucket) (the bucket's name as a key), which
	// is never set: the bucket always becomes the bucket option.
	if _, ok := p.data[bucket]; !ok {
		if err := p.set("bucket", bucket); err != nil {
			return err
		}
	}
	desired := map[string]any{}
	for _, option := range options {
		v, ok := p.data[option]
		if !ok {
			continue
		}
		if option == "attributes" || option == "tls-ca-chain" {
			var list []string
			if err := json.Unmarshal([]byte(v), &list); err != nil {
				return fmt.Errorf("cannot decode %s: %w", option, err)
			}
			desired[option] = list
		} else {
			desired[option] = v
		}
	}
	return shareOn(relID, desired)
}

func actionParams() (map[string]any, error) {
	params := map[string]any{}
	err := hookenv.Get(&params, "action-get")
	return params, err
}

func actionFail(msg string) error {
	_, err := hookenv.Run("action-fail", msg)
	return err
}

func actionSet(results map[string]string) error {
	var args []string
	for k, v := range results {
		args = append(args, k+"="+v)
	}
	_, err := hookenv.Run("action-set", args...)
	return err
}

func syncCredentials() error {
	if !hookenv.IsLeader() {
		return actionFail(MessageNotLeader)
	}
	params, err := actionParams()
	if err != nil {
		return err
	}
	access, _ := params["access-key"].(string)
	secret, _ := params["secret-key"].(string)
	p, err := loadPeer()
	if err != nil {
		return err
	}
	if err := p.set("access-key", access); err != nil {
		return err
	}
	if err := p.set("secret-key", secret); err != nil {
		return err
	}
	if err := share(map[string]any{"access-key": access, "secret-key": secret}); err != nil {
		return err
	}
	return actionSet(map[string]string{"ok": MessageSynced})
}

func getCredentials() error {
	p, err := loadPeer()
	if err != nil {
		return err
	}
	if _, ok := p.data["access-key"]; !ok {
		return actionFail(MessageNotSet)
	}
	if _, ok := p.data["secret-key"]; !ok {
		return actionFail(MessageNotSet)
	}
	return actionSet(map[string]string{"ok": MessageConfigured})
}

func getConnectionInfo() error {
	p, err := loadPeer()
	if err != nil {
		return err
	}
	info := map[string]string{}
	for _, option := range options {
		v, ok := p.data[option]
		if !ok {
			continue
		}
		if option == "access-key" || option == "secret-key" {
			v = maskedKey
		}
		info[option] = v
	}
	if len(info) == 0 {
		return actionFail(MessageNotSet)
	}
	return actionSet(info)
}

// pyJSON is Python's json.dumps of v (", " and ": " separators, non-ASCII escaped), which
// the real charm writes in the relation and peer bags.
func pyJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	var out strings.Builder
	inString, escaped := false, false
	for _, r := range string(b) {
		switch {
		case inString && escaped:
			escaped = false
		case inString && r == '\\':
			escaped = true
		case r == '"':
			inString = !inString
		case !inString && (r == ',' || r == ':'):
			out.WriteRune(r)
			out.WriteByte(' ')
			continue
		}
		if r > 0x7e {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return out.String()
}
