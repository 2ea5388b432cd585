package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/livepatch-onprem/livepatch/server"
)

// Enable enrols a new machine with an auth token, reporting its status when status is not
// nil. It returns the machine token for later check-ins and the machine's tier. An
// enrolled machine enables again with Reenable.
func (c *Client) Enable(ctx context.Context, machineID, authToken string, status *server.Status) (machineToken, tier string, err error) {
	return c.Reenable(ctx, machineID, authToken, "", status)
}

// Reenable enrols a machine again (with another auth token or tier, or a new machine
// token), proving it is that machine with the machine token it holds (currentToken; ""
// when it holds none, as Enable). The server refuses, with a conflict, to re-enable an
// enrolled machine without its current token.
func (c *Client) Reenable(ctx context.Context, machineID, authToken, currentToken string, status *server.Status) (machineToken, tier string, err error) {
	var in any = struct{}{}
	if status != nil {
		in = status
	}
	var out server.EnableResponse
	_, err = c.do(ctx, request{
		method: http.MethodPost, path: "/v1/client/" + esc(machineID),
		auth: func(r *http.Request) {
			bearer(authToken)(r)
			if currentToken != "" {
				r.Header.Set("Livepatch-Machine-Token", currentToken)
			}
		},
		in: in, out: &out,
	})
	return out.MachineToken, out.Tier, err
}

// CheckIn reports a machine's status and returns the update the server has for it.
func (c *Client) CheckIn(ctx context.Context, machineID, machineToken string, status server.Status) (server.Update, error) {
	var out server.Update
	_, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/client/" + esc(machineID) + "/updates",
		auth: bearer(machineToken), in: status, out: &out,
		replayable: true, // a check-in reports a state: recording it twice is harmless
	})
	return out, err
}

// Disable unregisters a machine.
func (c *Client) Disable(ctx context.Context, machineID, machineToken string) error {
	_, err := c.do(ctx, request{
		method: http.MethodDelete, path: "/v1/client/" + esc(machineID),
		auth: bearer(machineToken),
	})
	return err
}

// Download opens a patch file: rawURL is the URL of a patch offer, or a path such as
// "/patches/<filename>" resolved against the server URL. It returns the body, which the
// caller must close, and its size (-1 when the server did not say). No credentials are
// sent: patch files are public and may be served by another host. The download is a
// transfer: it fails when no byte moves for the request timeout. With MaxSize, a file
// larger than the patch list says is an error, before or while it is read.
func (c *Client) Download(ctx context.Context, rawURL string, opts ...TransferOption) (body io.ReadCloser, size int64, err error) {
	o := transferOpts(opts)
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, 0, fmt.Errorf("invalid patch URL %q: %w", rawURL, err)
	}
	if !u.IsAbs() {
		abs := c.base.JoinPath(u.EscapedPath())
		abs.RawQuery = u.RawQuery
		u = abs
	}
	d := c.deadline(ctx, u.Redacted(), true)
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		d.stop()
		return nil, 0, fmt.Errorf("cannot create request: %w", err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		defer d.stop()
		if te := d.timedOut(); te != nil {
			return nil, 0, te
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("download of %s interrupted: %w", u.Redacted(), ctx.Err())
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, 0, fmt.Errorf("cannot reach patch server at %s: %w", u.Redacted(), err)
	}
	db := &deadlinedBody{rc: resp.Body, d: d}
	if resp.StatusCode != http.StatusOK {
		defer db.Close()
		return nil, 0, decodeError(resp)
	}
	if o.maxSize > 0 && resp.ContentLength > o.maxSize {
		db.Close()
		return nil, 0, fmt.Errorf("cannot download %s: the server announces %d bytes, more than the %d the patch list says", u.Redacted(), resp.ContentLength, o.maxSize)
	}
	var r io.Reader = db
	if o.maxSize > 0 {
		r = bounded(db, o.maxSize)
	}
	return readCloser{Reader: r, Closer: db}, resp.ContentLength, nil
}

// readCloser reads from one source and closes another.
type readCloser struct {
	io.Reader
	io.Closer
}
