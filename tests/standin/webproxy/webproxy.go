// Package webproxy is the forward HTTP proxy of proxied-network tests (where squid would sit):
// it forwards requests for loopback hosts (the contracts stand-in, an upstream), answers for
// the internet hosts the real Pro client reaches to check a proxy (api.snapcraft.io,
// archive.ubuntu.com, esm.ubuntu.com) as an internet-connected proxy would, refuses every
// other host with 502 as a proxy without a route does, and records each request.
package webproxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"time"
)

// internetHosts are answered by the proxy itself.
var internetHosts = []string{"api.snapcraft.io", "archive.ubuntu.com", "esm.ubuntu.com"}

// Proxy is a running forward proxy.
type Proxy struct {
	// URL is the proxy's URL, such as http://127.0.0.1:3128.
	URL string

	srv *http.Server
	mu  sync.Mutex
	log []string
}

// Start starts a proxy on a free loopback port.
func Start() (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{URL: "http://" + lis.Addr().String()}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(lis)
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// Requests returns the requests seen so far, as "METHOD URL" ("CONNECT host:port" for
// tunnels).
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.log)
}

func (p *Proxy) record(r *http.Request) {
	line := r.Method + " " + r.URL.String()
	if r.Method == http.MethodConnect {
		line = r.Method + " " + r.Host
	}
	p.mu.Lock()
	p.log = append(p.log, line)
	p.mu.Unlock()
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.record(r)
	host := r.URL.Hostname()
	if r.Method == http.MethodConnect {
		host, _, _ = net.SplitHostPort(r.Host)
	}
	switch {
	case r.Method == http.MethodConnect && slices.Contains(internetHosts, host):
		// The tunnel opens; what follows would be TLS with the internet host.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		conn.Close()
	case r.Method == http.MethodConnect && loopback(host):
		p.tunnel(w, r)
	case !r.URL.IsAbs():
		http.Error(w, "not a proxy request", http.StatusBadRequest)
	case slices.Contains(internetHosts, host):
		w.WriteHeader(http.StatusOK)
	case loopback(host):
		(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = r.URL
			pr.Out.Host = r.Host
		}}).ServeHTTP(w, r)
	default:
		http.Error(w, "no route to "+strings.ToLower(host), http.StatusBadGateway)
	}
}

// tunnel connects a CONNECT request to a loopback address.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request) {
	upstream, err := net.DialTimeout("tcp", r.Host, 10*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		io.Copy(upstream, conn)
		upstream.Close()
	}()
	io.Copy(conn, upstream)
	conn.Close()
}
