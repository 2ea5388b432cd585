package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/badserver"
	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
)

// shortTimeout is the request timeout of the tests against bad servers.
const shortTimeout = 200 * time.Millisecond

// giveUp bounds how long a test waits for a call it expects to time out: a call still
// running then is a call without a deadline.
const giveUp = 30 * time.Second

// within runs call and returns its error, failing the test if it has not returned after
// giveUp.
func within(t *testing.T, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(giveUp):
		t.Fatalf("the call has not returned after %s: it waits without a deadline", giveUp)
		return nil
	}
}

// calls are one of each kind of call: JSON answers, transfers both ways, machine routes.
var calls = []struct {
	name     string
	transfer bool
	call     func(ctx context.Context, c *client.Client) error
}{
	{"tiers", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.Tiers(ctx)
		return err
	}},
	{"login", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.Login(ctx, "admin", "pw")
		return err
	}},
	{"banner", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.Banner(ctx)
		return err
	}},
	{"debug status", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.DebugStatus(ctx)
		return err
	}},
	{"check-in", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.CheckIn(ctx, "m1", "token", server.Status{})
		return err
	}},
	{"sync trigger --wait", false, func(ctx context.Context, c *client.Client) error {
		_, err := c.TriggerSyncWait(ctx)
		return err
	}},
	{"upload", true, func(ctx context.Context, c *client.Client) error {
		_, _, err := c.UploadPatch(ctx, "livepatch-5.15.0-107.117-generic-107.1-amd64.tar.bz2", strings.NewReader("archive"), 7)
		return err
	}},
	{"download", true, func(ctx context.Context, c *client.Client) error {
		body, _, err := c.Download(ctx, "/patches/f.tar.bz2", client.MaxSize(1<<20))
		if err != nil {
			return err
		}
		defer body.Close()
		_, err = io.Copy(io.Discard, body)
		return err
	}},
	{"bundle export", true, func(ctx context.Context, c *client.Client) error {
		_, err := c.ExportBundle(ctx, "stable", io.Discard)
		return err
	}},
	{"bundle import", true, func(ctx context.Context, c *client.Client) error {
		_, err := c.ImportBundle(ctx, bytes.NewReader(make([]byte, 1<<20)), 1<<20)
		return err
	}},
}

// TestSilentServer: a server that accepts connections and never answers fails every call
// with a *TimeoutError once the request timeout runs out; transfers say they stalled.
func TestSilentServer(t *testing.T) {
	url := badserver.Silent(t)
	c, err := client.New(url, client.WithTimeouts(client.Timeouts{Request: shortTimeout}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := within(t, func() error { return tt.call(t.Context(), c) })
			te, ok := errors.AsType[*client.TimeoutError](err)
			if !ok {
				t.Fatalf("error = %v, want a *client.TimeoutError", err)
			}
			want := &client.TimeoutError{URL: url, Limit: shortTimeout, Stalled: tt.transfer}
			if tt.name == "download" {
				want.URL = url + "/patches/f.tar.bz2"
			}
			if *te != *want {
				t.Errorf("error = %#v, want %#v", te, want)
			}
		})
	}
}

// TestSilentServerMessages: what a person reads of a call that timed out.
func TestSilentServerMessages(t *testing.T) {
	url := badserver.Silent(t)
	c, err := client.New(url, client.WithTimeouts(client.Timeouts{Request: shortTimeout}))
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, func() error { _, err := c.Tiers(t.Context()); return err })
	if want := "livepatch server at " + url + " did not answer within 200ms"; err == nil || err.Error() != want {
		t.Errorf("tiers: %v, want %q", err, want)
	}
	err = within(t, func() error { _, err := c.ExportBundle(t.Context(), "stable", io.Discard); return err })
	if want := "the transfer with livepatch server at " + url + " stalled: no data moved for 200ms"; err == nil || err.Error() != want {
		t.Errorf("export: %v, want %q", err, want)
	}
}

// TestCallerCancelIsNotATimeout: a caller that gives up gets its own context's error, not
// a timeout.
func TestCallerCancelIsNotATimeout(t *testing.T) {
	c, err := client.New(badserver.Silent(t), client.WithTimeouts(client.Timeouts{Request: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = within(t, func() error { _, err := c.Tiers(ctx); return err })
	if _, ok := errors.AsType[*client.TimeoutError](err); ok || !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want the caller's cancellation", err)
	}
}

// TestTricklingAnswer: an answer that keeps coming a byte at a time is cut by the request
// timeout, which bounds a whole call, not each read.
func TestTricklingAnswer(t *testing.T) {
	url := badserver.Trickle(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", `{"tiers":[`, " ", 10*time.Millisecond)
	c, err := client.New(url, client.WithTimeouts(client.Timeouts{Request: shortTimeout}))
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, func() error { _, err := c.Tiers(t.Context()); return err })
	if te, ok := errors.AsType[*client.TimeoutError](err); !ok || te.Stalled {
		t.Errorf("error = %#v, want a *client.TimeoutError of the whole call", err)
	}
}

// TestTransferThatMovesIsNotCut: a download slower in total than the request timeout goes
// on as long as its bytes keep moving.
func TestTransferThatMovesIsNotCut(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds")
	}
	// A byte every 100ms for 3s, against a 2s timeout.
	url := badserver.Trickle(t, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n", "", "x", 100*time.Millisecond)
	c, err := client.New(url, client.WithTimeouts(client.Timeouts{Request: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := c.Download(t.Context(), "/patches/f.tar.bz2", client.MaxSize(30))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if len(data) != 30 {
		t.Errorf("read %d bytes, want 30", len(data))
	}
	if te, ok := errors.AsType[*client.TooLargeError](err); !ok || te.Limit != 30 {
		t.Errorf("error = %v, want the size bound of 30 bytes", err)
	}
}

// TestEndlessAnswer: answers that never end are read no further than their bound.
func TestEndlessAnswer(t *testing.T) {
	const okJSON = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	timeouts := client.WithTimeouts(client.Timeouts{Request: giveUp})
	newClient := func(url string) *client.Client {
		c, err := client.New(url, timeouts)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("JSON", func(t *testing.T) {
		t.Parallel()
		c := newClient(badserver.Endless(t, okJSON, `{"tiers":[`, `{"name":"edge","position":1},`))
		err := within(t, func() error { _, err := c.Tiers(t.Context()); return err })
		if te, ok := errors.AsType[*client.TooLargeError](err); !ok || te.Limit != client.MaxAnswer {
			t.Fatalf("error = %v, want a *client.TooLargeError of MaxAnswer", err)
		}
		if !strings.HasSuffix(err.Error(), ": the answer is larger than 8 MiB") {
			t.Errorf("message = %q", err)
		}
	})
	t.Run("debug status", func(t *testing.T) {
		t.Parallel()
		c := newClient(badserver.Endless(t, okJSON, `{"status":"`, "OK"))
		err := within(t, func() error { _, err := c.DebugStatus(t.Context()); return err })
		if _, ok := errors.AsType[*client.TooLargeError](err); !ok {
			t.Errorf("error = %v, want a *client.TooLargeError", err)
		}
	})
	t.Run("error body", func(t *testing.T) {
		t.Parallel()
		c := newClient(badserver.Endless(t, "HTTP/1.1 500 Internal Server Error\r\n", `{"code":"internal","message":"`, "x"))
		err := within(t, func() error { _, err := c.Tiers(t.Context()); return err })
		if apiErr, ok := errors.AsType[*client.APIError](err); !ok || apiErr.Status != 500 || apiErr.Message != "server returned 500 Internal Server Error" {
			t.Errorf("error = %#v, want the status's APIError", err)
		}
	})
	t.Run("no content", func(t *testing.T) {
		t.Parallel()
		c := newClient(badserver.Endless(t, "HTTP/1.1 200 OK\r\n", "", "x"))
		if err := within(t, func() error { return c.DeleteTier(t.Context(), "edge") }); err != nil {
			t.Errorf("error = %v, want none: a discarded answer is not read to its end", err)
		}
	})
	t.Run("download", func(t *testing.T) {
		t.Parallel()
		c := newClient(badserver.Endless(t, "HTTP/1.1 200 OK\r\n", "", "x"))
		err := within(t, func() error {
			body, _, err := c.Download(t.Context(), "/patches/f.tar.bz2", client.MaxSize(1000))
			if err != nil {
				return err
			}
			defer body.Close()
			n, err := io.Copy(io.Discard, body)
			if n != 1000 {
				t.Errorf("read %d bytes, want 1000", n)
			}
			return err
		})
		if te, ok := errors.AsType[*client.TooLargeError](err); !ok || te.Limit != 1000 {
			t.Errorf("error = %v, want a *client.TooLargeError of 1000 bytes", err)
		}
	})
	t.Run("download announced too large", func(t *testing.T) {
		t.Parallel()
		url := badserver.Endless(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n", "", "x")
		c := newClient(url)
		err := within(t, func() error {
			_, _, err := c.Download(t.Context(), "/patches/f.tar.bz2", client.MaxSize(1000))
			return err
		})
		want := "cannot download " + url + "/patches/f.tar.bz2: the server announces 1000000 bytes, more than the 1000 the patch list says"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %q", err, want)
		}
	})
}

// TestTLSHandshakeTimeout: a server that accepts the connection and never starts the TLS
// handshake fails the call after the connect timeout, whatever the request timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	url := "https://" + strings.TrimPrefix(badserver.Silent(t), "http://")
	c, err := client.New(url, client.WithTimeouts(client.Timeouts{Connect: shortTimeout, Request: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, func() error { _, err := c.Tiers(t.Context()); return err })
	if want := "cannot reach livepatch server at " + url + ": net/http: TLS handshake timeout"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}
