package client_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/livepatch-onprem/livepatch/server/client"
)

// A download the server redirects (patch-storage.redirect-downloads) is fetched from the
// object store's presigned URL, which is asked without the client's credentials; the
// caller gets the bytes and the size as for a streamed download.
func TestDownloadFollowsRedirect(t *testing.T) {
	var storeAuth, storeQuery string
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storeAuth, storeQuery = r.Header.Get("Authorization"), r.URL.RawQuery
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	t.Cleanup(store.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, store.URL+"/bucket/f.tar.bz2?X-Amz-Signature=abc", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, size, err := c.WithToken("sess").Download(t.Context(), "/patches/f.tar.bz2", client.MaxSize(5))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(body)
	body.Close()
	if err != nil || string(data) != "hello" || size != 5 {
		t.Errorf("Download = %q, %d, %v; want hello, 5", data, size, err)
	}
	if storeAuth != "" || storeQuery != "X-Amz-Signature=abc" {
		t.Errorf("the object store was asked with auth %q, query %q", storeAuth, storeQuery)
	}
}
