package upstream_test

import (
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/upstream"
)

func TestContracts(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		calls[token]++
		mu.Unlock()
		if r.Method != "GET" || r.URL.Path != "/v1/resources/livepatch-onprem/context/token" {
			http.NotFound(w, r)
			return
		}
		switch token {
		case "good":
			io.WriteString(w, `{"valid":true,"expires":"2024-05-01T13:00:00Z"}`)
		case "soon":
			io.WriteString(w, `{"valid":true,"expires":"2024-05-01T12:02:00Z"}`)
		case "invalid":
			io.WriteString(w, `{"valid":false}`)
		case "expired":
			io.WriteString(w, `{"valid":true,"expires":"2024-05-01T11:00:00Z"}`)
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
		case "garbage":
			io.WriteString(w, `<html>`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	c, err := upstream.NewContracts(srv.URL+"/", nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	check := func(token string, want server.Code, msg string) {
		t.Helper()
		err := c.CheckResourceToken(t.Context(), token)
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v, want accepted", token, err)
			}
			return
		}
		if server.ErrorCode(err) != want || !strings.Contains(server.ErrorMessage(err), msg) {
			t.Errorf("%s: %v (code %s), want code %s with %q", token, err, server.ErrorCode(err), want, msg)
		}
	}
	check("good", "", "")
	check("good", "", "")
	check("soon", "", "")
	check("refused", server.CodeUnauthorized, "the contracts server refused the resource token")
	check("refused", server.CodeUnauthorized, "refused")
	check("invalid", server.CodeUnauthorized, "not valid or has expired")
	check("expired", server.CodeUnauthorized, "not valid or has expired")
	check("broken", server.CodeUnavailable, "answered 500 Internal Server Error")
	check("garbage", server.CodeUnavailable, "answered something else")
	// Accepted tokens are remembered for 5 minutes, and never past their expiry.
	now = now.Add(time.Minute)
	check("good", "", "")
	check("soon", "", "")
	now = now.Add(2 * time.Minute) // past soon's expiry
	check("good", "", "")
	check("soon", server.CodeUnauthorized, "not valid or has expired")
	now = now.Add(3 * time.Minute) // past the cache time
	check("good", "", "")
	mu.Lock()
	if calls["good"] != 2 || calls["soon"] != 2 || calls["refused"] != 1 {
		t.Errorf("contracts server calls = %v; want good and soon twice, refused once (cached)", calls)
	}
	mu.Unlock()

	srv.Close()
	check("other", server.CodeUnavailable, "cannot reach the contracts server at "+srv.URL)
	if _, err := upstream.NewContracts("not a url", nil, nil); err == nil {
		t.Errorf("NewContracts accepted a bad URL")
	}
}

func TestLoadTrustedKeys(t *testing.T) {
	const b64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	const b64New = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
	encode := func(keys []ed25519.PublicKey) []string {
		var out []string
		for _, k := range keys {
			out = append(out, server.MarshalPublicKey(k))
		}
		return out
	}
	for _, tt := range []struct {
		value string
		want  []string
	}{
		{b64, []string{b64}},
		{b64 + "," + b64New, []string{b64, b64New}},
		{" " + b64 + " , " + b64New + " ," + b64, []string{b64, b64New}},
	} {
		keys, err := upstream.LoadTrustedKeys(tt.value)
		if err != nil || !slices.Equal(encode(keys), tt.want) {
			t.Errorf("LoadTrustedKeys(%q) = %v, %v; want %v", tt.value, encode(keys), err, tt.want)
		}
	}
	// A file: signing.pub, or one key per line during a rotation.
	path := t.TempDir() + "/signing.pub"
	if err := writeFile(path, b64+"\n"+b64New+"\n"); err != nil {
		t.Fatal(err)
	}
	if keys, err := upstream.LoadTrustedKeys(path); err != nil || !slices.Equal(encode(keys), []string{b64, b64New}) {
		t.Errorf("LoadTrustedKeys(path) = %v, %v", encode(keys), err)
	}
	if err := writeFile(path, "not a key"); err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.LoadTrustedKeys(path); err == nil || !strings.Contains(err.Error(), "patch-sync.trusted-key file "+path) {
		t.Errorf("LoadTrustedKeys(bad file) = %v", err)
	}
	if _, err := upstream.LoadTrustedKeys(b64 + ",c2hvcnQ="); err == nil {
		t.Error("LoadTrustedKeys accepted a list with a bad key")
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
