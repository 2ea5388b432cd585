package jujusim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"strings"
)

// Request is one hook tool invocation, as Juju's jujuc client sends it.
type Request struct {
	ContextID   string
	Dir         string
	CommandName string
	Args        []string
	StdinSet    bool
	Stdin       []byte
}

// Response is a hook tool's exit code and output.
type Response struct {
	Code   int
	Stdout []byte
	Stderr []byte
}

// Jujuc is the RPC receiver hook tool clients call ("Jujuc.Main"), as in Juju.
type Jujuc struct{ m *Model }

// Main runs one hook tool in the context named by the request.
func (j *Jujuc) Main(req Request, resp *Response) error {
	if req.CommandName == "systemctl" {
		*resp = j.m.systemctl(req)
		return nil
	}
	j.m.mu.Lock()
	defer j.m.mu.Unlock()
	c, ok := j.m.contexts[req.ContextID]
	if !ok {
		return fmt.Errorf("bad request: unknown context %q", req.ContextID)
	}
	t := &toolCall{m: j.m, c: c, u: c.unit, dir: req.Dir, stdin: req.Stdin, stdinSet: req.StdinSet}
	code, err := t.run(req.CommandName, req.Args)
	if err != nil {
		return err
	}
	*resp = Response{Code: code, Stdout: t.stdout.Bytes(), Stderr: t.stderr.Bytes()}
	return nil
}

func (m *Model) serveTools() error {
	srv := rpc.NewServer()
	if err := srv.Register(&Jujuc{m: m}); err != nil {
		return fmt.Errorf("cannot serve hook tools: %w", err)
	}
	lis, err := net.Listen("unix", m.sock)
	if err != nil {
		return fmt.Errorf("cannot serve hook tools: %w", err)
	}
	m.lis = lis
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(conn)
		}
	}()
	return nil
}

// toolClientMain is the hook tool side: it forwards argv to the agent socket and replays the
// answer, as Juju's jujuc does.
func toolClientMain(name string, args []string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "ERROR %s\n", err)
		return 1
	}
	ctxID := os.Getenv("JUJU_CONTEXT_ID")
	addr := os.Getenv("JUJU_AGENT_SOCKET_ADDRESS")
	network := os.Getenv("JUJU_AGENT_SOCKET_NETWORK")
	if network == "" {
		network = "unix"
	}
	switch {
	case ctxID == "":
		return fail(errors.New("JUJU_CONTEXT_ID not set"))
	case addr == "":
		return fail(errors.New("JUJU_AGENT_SOCKET_ADDRESS not set"))
	}
	dir, err := os.Getwd()
	if err != nil {
		return fail(err)
	}
	client, err := rpc.Dial(network, addr)
	if err != nil {
		return fail(fmt.Errorf("cannot connect to agent: %w", err))
	}
	defer client.Close()
	req := Request{ContextID: ctxID, Dir: dir, CommandName: name, Args: args}
	var resp Response
	err = client.Call("Jujuc.Main", req, &resp)
	if err != nil && strings.Contains(err.Error(), errNeedStdin.Error()) {
		req.Stdin, err = io.ReadAll(os.Stdin)
		if err != nil {
			return fail(err)
		}
		req.StdinSet = true
		err = client.Call("Jujuc.Main", req, &resp)
	}
	if err != nil {
		return fail(err)
	}
	os.Stdout.Write(resp.Stdout)
	os.Stderr.Write(resp.Stderr)
	return resp.Code
}

// machineCommands are the stand-ins linked into each machine's bin directory, on the hook PATH
// after the tools directory.
var machineCommands = []string{"systemctl", "pro", "ubuntu-advantage", "ua", "apt-get", "apt", "add-apt-repository"}

// MultiCall runs the multi-call binary's role when the process was started as a hook tool,
// systemctl, pro, apt-get or a stand-in charm's dispatch, and reports whether it did (the
// caller then exits with the code). Call it first thing in main, or in TestMain of tests that
// use the test binary as Options.ToolBinary.
func MultiCall() (code int, handled bool) {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := toolTable[name]; ok || name == "systemctl" {
		return toolClientMain(name, args), true
	}
	if f, ok := multiCalls[name]; ok {
		return f(args), true
	}
	if len(args) >= 2 && args[0] == charmMarker {
		f, ok := standinCharms[args[1]]
		if !ok {
			fmt.Fprintf(os.Stderr, "ERROR unknown stand-in charm %q\n", args[1])
			return 1, true
		}
		return f(), true
	}
	return 0, false
}

// charmMarker is the first argument a stand-in charm's dispatch passes to the binary.
const charmMarker = "__jujusim_charm"

// multiCalls are the non-tool roles (pro, apt-get, ...), registered by name.
var multiCalls = map[string]func(args []string) int{}

// standinCharms are the dispatch entry points of built-in stand-in charms.
var standinCharms = map[string]func() int{}
