package contracts_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/upstream"
	"github.com/livepatch-onprem/livepatch/tests/standin/contracts"
)

// send sends a JSON request with a bearer token and decodes the JSON answer into out.
func send(t *testing.T, method, url, token string, body, out any) int {
	t.Helper()
	var r bytes.Buffer
	if body != nil {
		json.NewEncoder(&r).Encode(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, &r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// resourceToken gets a resource token the way the livepatch charm's get-resource-token
// action does: contract token -> machine token -> resource token.
func resourceToken(t *testing.T, cs *contracts.Server, resource string) string {
	t.Helper()
	var mt struct {
		MachineToken string `json:"machineToken"`
	}
	if code := send(t, "POST", cs.URL+"/v1/context/machines/token", "contract", map[string]string{"machineId": "m1"}, &mt); code != http.StatusOK {
		t.Fatalf("machine token: HTTP %d", code)
	}
	var rt struct {
		ResourceToken string `json:"resourceToken"`
	}
	if code := send(t, "GET", cs.URL+"/v1/resources/"+resource+"/context/machines/m1", mt.MachineToken, nil, &rt); code != http.StatusOK {
		t.Fatalf("resource token: HTTP %d", code)
	}
	return rt.ResourceToken
}

// TestResourceTokenCheck checks the stand-in with the checker an upstream livepatch server
// uses (server/upstream), so the two agree on the contract of docs/contracts.md.
func TestResourceTokenCheck(t *testing.T) {
	cs := contracts.New("contract")
	if err := cs.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	onprem := resourceToken(t, cs, "livepatch-onprem")
	other := resourceToken(t, cs, "esm-infra")

	var ok struct {
		Valid   bool   `json:"valid"`
		Expires string `json:"expires"`
	}
	if code := send(t, "GET", cs.URL+"/v1/resources/livepatch-onprem/context/token", onprem, nil, &ok); code != http.StatusOK || !ok.Valid || ok.Expires == "" {
		t.Errorf("valid token: HTTP %d, %+v", code, ok)
	}
	for _, tt := range []struct {
		name, token string
		want        int
	}{
		{"unknown", "nope", http.StatusUnauthorized},
		{"empty", "", http.StatusUnauthorized},
		{"other resource", other, http.StatusForbidden},
	} {
		if code := send(t, "GET", cs.URL+"/v1/resources/livepatch-onprem/context/token", tt.token, nil, nil); code != tt.want {
			t.Errorf("%s token: HTTP %d, want %d", tt.name, code, tt.want)
		}
	}

	checker, err := upstream.NewContracts(cs.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := checker.CheckResourceToken(t.Context(), onprem); err != nil {
		t.Errorf("upstream check of a valid token: %v", err)
	}
	for _, tok := range []string{"nope", other} {
		err := checker.CheckResourceToken(t.Context(), tok)
		if se, ok := errors.AsType[*server.Error](err); !ok || se.Code != server.CodeUnauthorized {
			t.Errorf("upstream check of %q = %v, want an unauthorized error", tok, err)
		}
	}
	cs.RevokeResourceTokens()
	if cs.ValidResourceToken("livepatch-onprem", onprem) {
		t.Error("revoked token still valid")
	}
	if code := send(t, "GET", cs.URL+"/v1/resources/livepatch-onprem/context/token", onprem, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("revoked token: HTTP %d, want 401", code)
	}
}
