package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Juju secrets (Juju 3.0 and later). Secret content never goes in a command's arguments:
// secret-add and secret-set read it from a file only root can read, removed at once.

// ErrNoSecrets is returned when the hook tools have no secrets (Juju before 3.0).
var ErrNoSecrets = errors.New("this Juju has no secrets (Juju 3.0 or later needed)")

// HasSecrets reports whether the Juju running the hook has secrets a charm can rely on:
// JUJU_VERSION 3.0.3 or later, as ops' JujuVersion.has_secrets decides (3.0.2 renamed
// secret-get's flags, 3.0.3 fixed consumer labels). The data platform libraries ask for
// secrets on a relation only then.
func (c *Context) HasSecrets() bool {
	var v [3]int
	parts := strings.SplitN(c.Getenv("JUJU_VERSION"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	for i, p := range parts {
		// "3.6.4", "3.6-beta1", "3.6.4.1": the leading digits of each part.
		n, _ := strconv.Atoi(p[:len(p)-len(strings.TrimLeft(p, "0123456789"))])
		v[i] = n
	}
	return v[0] > 3 || v[0] == 3 && (v[1] > 0 || v[2] >= 3)
}

// secretTool runs a secret hook tool; a missing tool is ErrNoSecrets.
func (c *Context) secretTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := c.Tools.Run(ctx, Command{Name: name, Args: args})
	if errors.Is(err, exec.ErrNotFound) {
		return nil, ErrNoSecrets
	}
	if err != nil {
		return nil, fmt.Errorf("cannot run hook tool %s: %w", name, err)
	}
	return out, nil
}

// withContentFile writes content to a temporary 0600 YAML (JSON) file for --file.
func withContentFile(content map[string]string, f func(path string) error) error {
	data, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("cannot encode secret content: %w", err)
	}
	tmp, err := os.CreateTemp("", "juju-secret-*.json")
	if err != nil {
		return fmt.Errorf("cannot write secret content: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if err := tmp.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("cannot write secret content: %w", werr)
	}
	return f(tmp.Name())
}

// SecretAdd creates a secret owned by the application (the leader only may) with a label
// and returns its URI.
func (c *Context) SecretAdd(ctx context.Context, label, description string, content map[string]string) (string, error) {
	var uri string
	err := withContentFile(content, func(path string) error {
		out, err := c.secretTool(ctx, "secret-add", "--label", label, "--description", description, "--file", path)
		uri = strings.TrimSpace(string(out))
		return err
	})
	if err != nil {
		return "", err
	}
	return uri, nil
}

// SecretSet replaces the content of a secret this application owns (a new revision when it
// differs).
func (c *Context) SecretSet(ctx context.Context, uri string, content map[string]string) error {
	return withContentFile(content, func(path string) error {
		_, err := c.secretTool(ctx, "secret-set", uri, "--file", path)
		return err
	})
}

// SecretGrant lets the remote application of a relation read a secret this application
// owns, for as long as the relation lives.
func (c *Context) SecretGrant(ctx context.Context, uri, relID string) error {
	_, err := c.secretTool(ctx, "secret-grant", uri, "-r", relID)
	return err
}

// SecretGet returns the content of the latest revision of a secret and makes it the one
// this unit tracks (secret-get --refresh): the reads that follow a secret-changed hook see
// the new content.
func (c *Context) SecretGet(ctx context.Context, uri string) (map[string]string, error) {
	out, err := c.secretTool(ctx, "secret-get", uri, "--refresh", "--format=json")
	if err != nil {
		return nil, err
	}
	var content map[string]string
	if err := json.Unmarshal(out, &content); err != nil {
		return nil, fmt.Errorf("cannot decode output of hook tool secret-get: %w", err)
	}
	return content, nil
}

// SecretInfo is what secret-info-get tells the owner about a secret.
type SecretInfo struct {
	ID       string `json:"-"`
	Revision int    `json:"revision"`
	Label    string `json:"label"`
	Owner    string `json:"owner"`
}

// OwnedSecrets lists the secrets this unit manages (its own, and its application's when it
// is the leader).
func (c *Context) OwnedSecrets(ctx context.Context) ([]SecretInfo, error) {
	out, err := c.secretTool(ctx, "secret-ids", "--format=json")
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := json.Unmarshal(out, &ids); err != nil {
		return nil, fmt.Errorf("cannot decode output of hook tool secret-ids: %w", err)
	}
	var infos []SecretInfo
	for _, id := range ids {
		out, err := c.secretTool(ctx, "secret-info-get", id, "--format=json")
		if err != nil {
			return nil, err
		}
		byID := map[string]SecretInfo{}
		if err := json.Unmarshal(out, &byID); err != nil {
			return nil, fmt.Errorf("cannot decode output of hook tool secret-info-get: %w", err)
		}
		for k, info := range byID {
			info.ID = k
			infos = append(infos, info)
		}
	}
	return infos, nil
}

// SecretRemoveRevision removes one revision of a secret this application owns.
func (c *Context) SecretRemoveRevision(ctx context.Context, uri string, revision int) error {
	_, err := c.secretTool(ctx, "secret-remove", uri, "--revision", strconv.Itoa(revision))
	return err
}

// SecretID returns the id of a secret URI ("secret:<id>", "secret://<model>/<id>" or the
// bare id), to compare secrets whatever the form.
func SecretID(uri string) string {
	uri = strings.TrimSpace(uri)
	uri = strings.TrimPrefix(uri, "secret:")
	if i := strings.LastIndex(uri, "/"); i >= 0 {
		uri = uri[i+1:]
	}
	return uri
}

// SecretOption reads an option that holds the URI of a Juju user secret instead of a secret
// value (as Canonical's newer charms do with their *-secret options): the value of key in the
// secret's latest revision. What the operator must fix (the secret is not granted, lacks the
// key, or this Juju has no secrets) is a Blocked status naming the option; it never shows
// the secret's content.
func (c *Context) SecretOption(ctx context.Context, option, uri, key string) (string, Status, error) {
	content, err := c.SecretGet(ctx, uri)
	if errors.Is(err, ErrNoSecrets) {
		return "", Blocked(fmt.Sprintf("%s needs Juju 3.3 or later (user secrets): use the plain option instead", option)), nil
	}
	if ee, ok := errors.AsType[*ExitError](err); ok {
		return "", Blocked(fmt.Sprintf("cannot read the secret of %s (%s): juju grant-secret <secret> %s", option, ee.Reason(), c.AppName())), nil
	}
	if err != nil {
		return "", Status{}, err
	}
	v, ok := content[key]
	if !ok || v == "" {
		return "", Blocked(fmt.Sprintf("the secret of %s has no %q key: juju update-secret <secret> %s=...", option, key, key)), nil
	}
	return v, Status{}, nil
}
