package reliability

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/livepatch-onprem/livepatch/server"
)

// flakyUpstream is the upstream the deployment syncs from in the upstream drill: a mirror
// of the real upstream that checks the real upstream's signature on the patch list, points
// the list's download URLs at itself and signs it with a key of its own (the deployment's
// sync_trusted_key), so that every download of a sync goes through it. It passes everything
// through until armed; armed, it lets `downloads` patch downloads through, then cuts the
// next one in the middle of its body and from then on drops every connection at once: the
// upstream disappears in the middle of a sync. restore brings it back.
type flakyUpstream struct {
	URL       string
	PublicKey string // base64, for sync_trusted_key

	upstreamKey ed25519.PublicKey
	key         ed25519.PrivateKey
	proxy       *httputil.ReverseProxy
	srv         *http.Server

	mu        sync.Mutex
	armed     bool
	downloads int  // downloads still let through when armed
	gone      bool // every connection is dropped
	cut       string
}

func newFlakyUpstream(t *testing.T, upstreamURL, upstreamKey string) *flakyUpstream {
	t.Helper()
	target, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	upKey, err := server.ParsePublicKey(upstreamKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyUpstream{
		URL: "http://" + ln.Addr().String(), PublicKey: server.MarshalPublicKey(pub),
		upstreamKey: upKey, key: key, proxy: httputil.NewSingleHostReverseProxy(target),
	}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve)}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *flakyUpstream) serve(w http.ResponseWriter, r *http.Request) {
	download := strings.HasPrefix(r.URL.Path, "/v1/patches/") || strings.HasPrefix(r.URL.Path, "/patches/")
	f.mu.Lock()
	gone := f.gone
	cut := false
	if f.armed && !gone && download {
		if f.downloads == 0 {
			cut, f.gone, f.cut = true, true, r.URL.Path
		} else {
			f.downloads--
		}
	}
	f.mu.Unlock()
	switch {
	case gone:
		drop(w)
	case cut:
		// The headers and half the file, then the connection goes.
		rec := &capture{header: http.Header{}}
		f.proxy.ServeHTTP(rec, r)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		body := rec.body.Bytes()
		w.Write(body[:len(body)/2])
		http.NewResponseController(w).Flush()
		drop(w)
	case r.URL.Path == "/v1/sync/patches":
		f.mirrorList(w, r)
	default:
		f.proxy.ServeHTTP(w, r)
	}
}

// mirrorList answers the patch list of the real upstream, re-pointed and re-signed.
func (f *flakyUpstream) mirrorList(w http.ResponseWriter, r *http.Request) {
	rec := &capture{header: http.Header{}}
	f.proxy.ServeHTTP(rec, r)
	if rec.code != http.StatusOK {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		w.Write(rec.body.Bytes())
		return
	}
	var signed server.SignedSyncList
	if err := json.Unmarshal(rec.body.Bytes(), &signed); err != nil {
		http.Error(w, "mirror: cannot decode the upstream's list: "+err.Error(), http.StatusBadGateway)
		return
	}
	list, err := signed.Verify(f.upstreamKey)
	if err != nil {
		http.Error(w, "mirror: "+err.Error(), http.StatusBadGateway)
		return
	}
	for i := range list.Patches {
		list.Patches[i].URL = f.URL + "/v1/patches/" + list.Patches[i].Filename
	}
	resigned, err := server.SignSyncList(list, f.key)
	if err != nil {
		http.Error(w, "mirror: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resigned)
}

// drop closes the client's connection without an answer, with a reset, as a host that went
// away.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// arm makes the next sync lose the upstream after downloads patch downloads.
func (f *flakyUpstream) arm(downloads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.downloads, f.gone, f.cut = true, downloads, false, ""
}

// restore brings the upstream back.
func (f *flakyUpstream) restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.gone = false, false
}

// cutFile returns the path of the download that was cut ("" if none).
func (f *flakyUpstream) cutFile() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cut
}

// capture records a response in memory.
type capture struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}

func (c *capture) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return c.body.Write(b)
}
