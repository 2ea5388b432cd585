package livepatch

import (
	"context"

	"github.com/livepatch-onprem/livepatch/hooks"
)

// resolveSecretOptions replaces auth_basic_users and sync_token with the content of their
// *_secret options (Juju user secrets: keys "users" and "token") when those are set. The
// reads track the latest revision, so the secret-changed hook that follows juju
// update-secret re-renders; the plain options keep working when the *_secret ones are empty.
func resolveSecretOptions(ctx context.Context, c *hooks.Context, cfg *Config) (hooks.Status, error) {
	for _, o := range []struct {
		option, key, uri string
		dst              *string
	}{
		{"auth_basic_users_secret", "users", cfg.AuthBasicUsersSecret, &cfg.AuthBasicUsers},
		{"sync_token_secret", "token", cfg.SyncTokenSecret, &cfg.SyncToken},
	} {
		if o.uri == "" {
			continue
		}
		v, st, err := c.SecretOption(ctx, o.option, o.uri, o.key)
		if err != nil || !st.IsZero() {
			return st, err
		}
		*o.dst = v
	}
	return hooks.Status{}, nil
}
