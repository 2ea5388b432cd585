package actions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/livepatch-onprem/livepatch/hooks"
	"github.com/livepatch-onprem/livepatch/hooks/livepatch"
	"github.com/livepatch-onprem/livepatch/server/config"
)

// bcryptCost is the cost of the hashes set-basic-users makes (htpasswd -B's default).
const bcryptCost = 10

var userName = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)

// SetBasicUsers hashes plaintext user:password pairs and shares the hashes with every unit
// through the peer relation; Reconcile merges them with auth_basic_users.
func SetBasicUsers(ctx context.Context, c *hooks.Context, params map[string]any) (map[string]string, error) {
	if err := requireLeader(ctx, c, "set-basic-users"); err != nil {
		return nil, err
	}
	list, err := stringParam(params, "users")
	if err != nil {
		return nil, err
	}
	appendUsers, err := boolParam(params, "append")
	if err != nil {
		return nil, err
	}
	pairs, err := parseUserPasswords(list)
	if err != nil {
		return nil, err
	}
	peer, err := livepatch.LoadPeer(ctx, c)
	if err != nil {
		return nil, err
	}
	if peer.RelID == "" {
		return nil, livepatch.ErrNoPeerRelation
	}
	var entries, existing []string
	if appendUsers {
		for e := range strings.SplitSeq(peer.Data[livepatch.PeerBasicUsers], ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			user, _, err := config.ParseBasicUser(e)
			if err != nil {
				return nil, fmt.Errorf("cannot append: the users set before are invalid (%v): run without append=true", err)
			}
			existing = append(existing, user)
			entries = append(entries, e)
		}
	}
	var names []string
	for _, p := range pairs {
		for _, u := range existing {
			if u == p.user {
				return nil, fmt.Errorf("user %q already exists: run without append=true to replace the users", p.user)
			}
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(p.password), bcryptCost)
		if err != nil {
			return nil, fmt.Errorf("cannot hash the password of user %q: %w", p.user, err)
		}
		entries = append(entries, p.user+":"+string(hash))
		names = append(names, p.user)
	}
	if err := c.RelationSetApp(ctx, peer.RelID, map[string]string{livepatch.PeerBasicUsers: strings.Join(entries, ",")}); err != nil {
		return nil, err
	}
	return map[string]string{
		"users-set": strings.Join(names, ","),
		"result":    fmt.Sprintf("%d user(s) set; every unit restarts its server with them", len(names)),
	}, nil
}

type userPassword struct {
	user, password string
}

// parseUserPasswords parses "u1:p1,u2:p2". Errors name users and positions, never passwords.
func parseUserPasswords(list string) ([]userPassword, error) {
	var out []userPassword
	seen := map[string]bool{}
	for i, entry := range strings.Split(list, ",") {
		user, password, ok := strings.Cut(entry, ":")
		user = strings.TrimSpace(user)
		switch {
		case !ok || user == "":
			return nil, fmt.Errorf("users entry %d is not of the form user:password", i+1)
		case !userName.MatchString(user):
			return nil, fmt.Errorf("user %q has characters other than letters, digits and ._@+-", user)
		case password == "":
			return nil, fmt.Errorf("user %q has an empty password", user)
		case len(password) > 72:
			return nil, fmt.Errorf("the password of user %q is longer than 72 bytes, which bcrypt cannot hash", user)
		case seen[user]:
			return nil, fmt.Errorf("user %q is given more than once", user)
		}
		seen[user] = true
		out = append(out, userPassword{user: user, password: password})
	}
	if len(out) == 0 {
		return nil, errors.New("no users given: use users=user:password[,user:password...]")
	}
	return out, nil
}
