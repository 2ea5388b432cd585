package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/proxy"
)

// Command is one program invocation. Secrets go in Stdin or in files, never in Args: the
// argument list of a process is visible to every user of the machine.
type Command struct {
	Name  string
	Args  []string
	Stdin []byte
	// Env holds environment variables ("key=value") set for the command on top of the
	// hook's own, such as Proxy.Env. It is not part of the command line String returns.
	Env []string
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
	if len(cmd.Env) > 0 {
		c.Env = append(os.Environ(), cmd.Env...)
	}
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
// (JUJU_CHARM_HTTP_PROXY, JUJU_CHARM_HTTPS_PROXY, JUJU_CHARM_NO_PROXY) looked up with getenv,
// with the no_proxy rules of internal/proxy.
func NewHTTPClient(getenv func(string) string) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = proxy.Func(getenv(EnvHTTPProxy), getenv(EnvHTTPSProxy), getenv(EnvNoProxy))
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
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
