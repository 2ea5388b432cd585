package haproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/livepatch-onprem/livepatch/internal/pgtest"
	"github.com/livepatch-onprem/livepatch/internal/testca"
)

// siteCA makes a CA and a certificate for 127.0.0.1 signed by it, as PEM.
func siteCA(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	ca, err := testca.New("site CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = ca.Sign("127.0.0.1", "livepatch.internal")
	if err != nil {
		t.Fatal(err)
	}
	return ca.Cert, certPEM, keyPEM
}

// Real haproxy with the bundle's kind of service: TLS terminated with the ssl_cert and
// ssl_key options (crts: [DEFAULT]), and the client's address sent to the backend in the
// one X-Forwarded-For header haproxy sets, whatever the client sent.
func TestTLSAndForwardedFor(t *testing.T) {
	if _, err := os.Stat(Binary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is missing: apt-get install -y haproxy")
		}
		t.Skip("haproxy is missing: apt-get install -y haproxy")
	}
	root := t.TempDir()
	t.Setenv("JUJU_SIM_ROOT", root)
	caPEM, certPEM, keyPEM := siteCA(t)

	seen := make(chan []string, 10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values("X-Forwarded-For")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(backend.Close)
	host, port, _ := net.SplitHostPort(backend.Listener.Addr().String())

	front, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var services []Service
	if err := yaml.Unmarshal([]byte(fmt.Sprintf(`
- service_name: livepatch
  service_host: "0.0.0.0"
  service_port: %d
  crts: [DEFAULT]
  service_options:
    - balance leastconn
    - http-request del-header X-Forwarded-For
    - option forwardfor
  server_options: maxconn 200
`, front)), &services); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"global_maxconn": 4096.0, "global_spread_checks": 0.0, "global_default_dh_param": 2048.0,
		"default_mode": "http", "default_retries": 3.0, "default_options": "httplog, dontlognull",
		"default_timeouts": "queue 60000, connect 5000, client 60000, server 60000",
		"ssl_cert":         base64.StdEncoding.EncodeToString(certPEM),
		"ssl_key":          base64.StdEncoding.EncodeToString(keyPEM),
	}
	if err := writeCerts(cfg, services); err != nil {
		t.Fatal(err)
	}
	rendered := Render(cfg, services, map[string][]server{"livepatch": {{name: "livepatch-0", addr: host, port: port}}}, "127.0.0.1", "0")
	for _, want := range []string{
		"bind 127.0.0.1:" + strconv.Itoa(front) + " ssl crt " + filepath.Join(root, "var/lib/haproxy/default.pem") + " no-sslv3\n",
		"    default_backend livepatch\n    http-request del-header X-Forwarded-For\n",
		"backend livepatch\n    balance leastconn\n    option forwardfor\n",
	} {
		if !strings.Contains(rendered, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, rendered)
		}
	}
	cfgFile := filepath.Join(root, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(Binary, "-c", "-q", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, Binary, "-db", "-f", cfgFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/debug/info", front)
	var resp *http.Response
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ { // until haproxy listens
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		if resp, err = client.Do(req); err == nil || time.Now().After(deadline) || i > 3000 {
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		t.Fatalf("https through haproxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := <-seen; len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("backend saw X-Forwarded-For %q, want only haproxy's [127.0.0.1]", got)
	}

	// A client that does not trust the site's CA is refused.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the site's CA: %v, want a certificate error", err)
	}
}
