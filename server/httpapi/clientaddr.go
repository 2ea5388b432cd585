package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// remoteAddr describes the caller for security events: the client address, and the
// trusted proxy it came through when there is one.
func (s *Server) remoteAddr(r *http.Request) string {
	peer := peerHost(r)
	if client := s.clientAddr(r); client != peer {
		return client + " via " + peer
	}
	return peer
}

// clientAddr is the address failed logins are counted against. From a trusted proxy it is
// the rightmost X-Forwarded-For entry that is not itself a trusted proxy (the one the
// nearest proxy appended for its client; entries to its left are the client's own claims);
// from any other peer it is the peer, whatever the header says.
func (s *Server) clientAddr(r *http.Request) string {
	peer := peerHost(r)
	if !s.trusted(peer) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil {
				return client // not an address: stop at the last one believed
			}
			client = a.Unmap().String()
			if !s.trusted(client) {
				return client
			}
		}
	}
	return client
}

// trusted reports whether addr is one of the trusted proxies.
func (s *Server) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
