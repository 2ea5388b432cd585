// Package badserver runs loopback servers that misbehave as a hung or hostile server
// does, for the tests of the clients' deadlines and answer bounds: one that accepts
// connections and never answers, one whose answer never ends, and one whose answer comes
// a little at a time without end.
package badserver

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Silent starts a listener on loopback that accepts connections, reads whatever the
// client sends and never answers. It returns its URL, http://127.0.0.1:<port>; the test's
// cleanup closes it and its connections.
func Silent(t testing.TB) string {
	return serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
}

// Endless starts a listener on loopback that answers the first request of every
// connection with head (a status line and header lines, each ending in CRLF), an empty
// line, body, then chunk repeated until the client goes away. It returns its URL.
func Endless(t testing.TB, head, body, chunk string) string {
	return answer(t, func(c net.Conn) {
		if _, err := io.WriteString(c, head+"\r\n"+body); err != nil {
			return
		}
		buf := []byte(chunk)
		for len(buf) < 32<<10 {
			buf = append(buf, chunk...)
		}
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

// Trickle is Endless, except that chunk goes once every interval: the answer always moves
// and never ends.
func Trickle(t testing.TB, head, body, chunk string, interval time.Duration) string {
	return answer(t, func(c net.Conn) {
		if _, err := io.WriteString(c, head+"\r\n"+body); err != nil {
			return
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for range tick.C {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	})
}

// answer accepts connections on loopback and, once the head of a request arrived on one,
// runs answer on it while what else comes is read and dropped.
func answer(t testing.TB, answer func(net.Conn)) string {
	return serve(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		go io.Copy(io.Discard, r)
		answer(c)
	})
}

// serve accepts connections on loopback and runs handle on each until the test ends.
func serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen on loopback: %v", err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			if closed {
				c.Close()
			}
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + l.Addr().String()
}
