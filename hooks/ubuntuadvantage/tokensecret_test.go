package ubuntuadvantage_test

import (
	"strings"
	"testing"
)

// TestTokenSecretWithoutSecrets: token_secret on a Juju without secrets (the harness's
// tools have none) is a Blocked status naming the option, and the machine is not attached.
func TestTokenSecretWithoutSecrets(t *testing.T) {
	h, _ := newHarness(t, true)
	res := h.Run(t, "config-changed", state(map[string]any{"token_secret": "secret:cq8ht8bh4ns7otrqvf8g"}))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Status.Name != "blocked" || !strings.Contains(res.Status.Message, "token_secret") {
		t.Errorf("status = %v, want Blocked naming token_secret", res.Status)
	}
	for _, cmd := range res.Commands {
		if strings.Contains(cmd.String(), "attach") {
			t.Errorf("attached without a token: %s", cmd)
		}
	}
}
