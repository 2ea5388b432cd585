package livepatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// Options that take a Juju user secret instead of the secret itself, as Canonical's newer
// charms do with their *-secret options: the option holds the secret URI, the charm reads
// the content key with secret-get (tracking the latest revision, so that the secret-changed
// hook that follows juju update-secret re-renders), and the plain option keeps working when
// the secret option is empty.
type secretOption struct {
	option string // the *_secret option
	key    string // the content key it must hold
}

var (
	basicUsersSecret = secretOption{option: "auth_basic_users_secret", key: "users"}
	syncTokenSecret  = secretOption{option: "sync_token_secret", key: "token"}
)

// read returns the value of the option's secret, or a Blocked status that says what to fix.
// The status never shows the secret's content.
func (o secretOption) read(ctx context.Context, c *hooks.Context, uri string) (string, hooks.Status, error) {
	content, err := c.SecretGet(ctx, uri)
	if errors.Is(err, hooks.ErrNoSecrets) {
		return "", hooks.Blocked(fmt.Sprintf("%s needs Juju 3.1 or later: use the plain option instead", o.option)), nil
	}
	if ee, ok := errors.AsType[*hooks.ExitError](err); ok {
		return "", hooks.Blocked(fmt.Sprintf("cannot read the secret of %s (%s): juju grant-secret <secret> %s", o.option, ee.Reason(), c.AppName())), nil
	}
	if err != nil {
		return "", hooks.Status{}, err
	}
	v, ok := content[o.key]
	if !ok || v == "" {
		return "", hooks.Blocked(fmt.Sprintf("the secret of %s has no %q key: juju update-secret <secret> %s=...", o.option, o.key, o.key)), nil
	}
	return v, hooks.Status{}, nil
}

// resolveSecretOptions replaces auth_basic_users and sync_token with the content of their
// *_secret options when those are set.
func resolveSecretOptions(ctx context.Context, c *hooks.Context, cfg *Config) (hooks.Status, error) {
	for _, o := range []struct {
		opt secretOption
		uri string
		dst *string
	}{
		{basicUsersSecret, cfg.AuthBasicUsersSecret, &cfg.AuthBasicUsers},
		{syncTokenSecret, cfg.SyncTokenSecret, &cfg.SyncToken},
	} {
		if o.uri == "" {
			continue
		}
		v, st, err := o.opt.read(ctx, c, o.uri)
		if err != nil || !st.IsZero() {
			return st, err
		}
		*o.dst = v
	}
	return hooks.Status{}, nil
}
