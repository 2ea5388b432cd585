package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

// Command is one program invocation. Secrets go in Stdin or in files, never in Args: the
// argument list of a process is visible to every user of the machine.
type Command struct {
	Name  string
	Args  []string
	Stdin []byte
}

// String returns the command line, without stdin.
func (cmd Command) String() string {
	return strings.Join(append([]string{cmd.Name}, cmd.Args...), " ")
}

// Runner runs commands and returns their standard output. A command that runs but fails
// returns an *ExitError; a command that cannot be found returns an error that wraps
// exec.ErrNotFound.
type Runner interface {
	Run(ctx context.Context, cmd Command) ([]byte, error)
}

// ExitError is the error of a command that ran and exited with a non-zero status.
type ExitError struct {
	Command string
	Code    int
	Stderr  string
}

// Error returns the command, its exit status and the first line of its stderr (without the
// "ERROR " prefix hook tools write).
func (e *ExitError) Error() string {
	msg := e.Reason()
	if msg == "" {
		return fmt.Sprintf("%s: exit status %d", e.Command, e.Code)
	}
	return fmt.Sprintf("%s: exit status %d: %s", e.Command, e.Code, msg)
}

// Reason returns the first non-empty line of the command's stderr, without "ERROR ".
func (e *ExitError) Reason() string {
	for line := range strings.SplitSeq(e.Stderr, "\n") {
		line = strings.TrimSpace(line)
		if line != "" {
			return strings.TrimPrefix(line, "ERROR ")
		}
	}
	return ""
}

// ExitCode returns the exit status of a command error: 0 for nil, -1 when the command did
// not run to completion.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := errors.AsType[*ExitError](err); ok {
		return ee.Code
	}
	return -1
}

// ExecRunner runs commands as child processes found on PATH.
type ExecRunner struct{}

// Run runs cmd and returns its stdout.
func (ExecRunner) Run(ctx context.Context, cmd Command) ([]byte, error) {
	c := exec.CommandContext(ctx, cmd.Name, cmd.Args...)
	if cmd.Stdin != nil {
		c.Stdin = bytes.NewReader(cmd.Stdin)
	}
	var stdout, stderr bytes.Buffer
	c.Stdout = &stdout
	c.Stderr = &stderr
	err := c.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return stdout.Bytes(), &ExitError{Command: cmd.String(), Code: ee.ExitCode(), Stderr: stderr.String()}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot run %s: %w", cmd.Name, err)
	}
	return stdout.Bytes(), nil
}

// NewHTTPClient returns an HTTP client that uses the model's proxy settings
// (JUJU_CHARM_HTTP_PROXY, JUJU_CHARM_HTTPS_PROXY, JUJU_CHARM_NO_PROXY) looked up with getenv.
func NewHTTPClient(getenv func(string) string) *http.Client {
	p := modelProxy{
		http:    getenv("JUJU_CHARM_HTTP_PROXY"),
		https:   getenv("JUJU_CHARM_HTTPS_PROXY"),
		noProxy: getenv("JUJU_CHARM_NO_PROXY"),
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = p.proxy
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

type modelProxy struct {
	http, https, noProxy string
}

// proxy returns the proxy URL for r, honouring no_proxy entries: "*", host names (matching
// the host and its subdomains, with or without a leading dot) and IP addresses.
func (p modelProxy) proxy(r *http.Request) (*url.URL, error) {
	raw := p.http
	if r.URL.Scheme == "https" {
		raw = p.https
	}
	if raw == "" {
		return nil, nil
	}
	host := r.URL.Hostname()
	for entry := range strings.SplitSeq(p.noProxy, ",") {
		entry = strings.TrimPrefix(strings.TrimSpace(entry), ".")
		if entry == "" {
			continue
		}
		if entry == "*" || host == entry || strings.HasSuffix(host, "."+entry) {
			return nil, nil
		}
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("cannot parse model proxy setting: %w", err)
	}
	return u, nil
}

// DirectHTTPClient returns a copy of client that never uses a proxy, for requests to this
// unit's own services.
func DirectHTTPClient(client *http.Client) *http.Client {
	if client == nil {
		client = http.DefaultClient
	}
	direct := *client
	if t, ok := client.Transport.(*http.Transport); ok {
		t = t.Clone()
		t.Proxy = nil
		direct.Transport = t
	}
	return &direct
}
