// Command jujusim is the command line of the Juju model emulator (package tests/jujusim), with
// Juju's verbs so deployment guides run nearly verbatim:
//
//	jujusim bootstrap [--map-charm URL=PATH]... [--contracts-token T]...
//	jujusim deploy ./bundle/bundle.yaml --overlay overlay.yaml
//	jujusim config livepatch url_template='http://{haproxy}/patches/{filename}'
//	jujusim run-action livepatch/leader get-resource-token --wait
//	jujusim status --format yaml
//	jujusim destroy-model --no-prompt
//
// The model lives in a state directory (--model-dir, else $JUJUSIM_HOME, else
// ~/.local/share/jujusim) and is owned by a controller daemon started by bootstrap (or the
// first deploy) that keeps running between calls and owns every process of the model. Other
// commands are sent to the daemon over a unix socket in the state directory.
//
// The binary is also the emulator's multi-call binary: started as a hook tool, systemctl, pro
// or apt-get (by the name of its symlink) it plays that role.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/livepatch-onprem/livepatch/tests/jujusim"
)

func main() {
	if code, ok := jujusim.MultiCall(); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

// callRequest is what the client sends the daemon: the command line and where it was typed.
type callRequest struct {
	Args []string `json:"args"`
	Dir  string   `json:"dir"`
}

// callResponse is the command's output and exit code.
type callResponse struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
}

// run is the client: bootstrap, destroy-model and daemon are local, everything else goes to
// the daemon.
func run(args []string) int {
	dir, args := modelDir(args)
	if len(args) == 0 || args[0] == "help" || args[0] == "--help" || args[0] == "-h" {
		fmt.Print(usage)
		return 0
	}
	var err error
	switch args[0] {
	case "__daemon":
		err = runDaemon(dir, args[1:])
	case "bootstrap":
		err = bootstrap(dir, args[1:])
	case "destroy-model", "kill-controller", "destroy-controller":
		err = destroy(dir)
	default:
		if args[0] == "deploy" && !running(dir) {
			if err := bootstrap(dir, nil); err != nil {
				fmt.Fprintf(os.Stderr, "ERROR %v\n", err)
				return 1
			}
		}
		return call(dir, args)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR %v\n", err)
		return 1
	}
	return 0
}

const usage = `jujusim - a Juju model emulator

Usage: jujusim [--model-dir DIR] <command> [args]

Commands (as in juju):
  bootstrap [--map-charm URL=PATH]... [--contracts-token T]... [--update-status-interval D]
  deploy <bundle.yaml|charm> [application] [-n N] [--overlay F]... [--config k=v|file.yaml]
  config|configure <app> [key[=value]...] [--reset k,...]
  model-config [key[=value]...]   (automatically-retry-hooks)
  run <unit> <action> [k=v...] [--no-wait]      run-action <unit> <action> [k=v...] [--wait]
  show-task|show-action-output <id>
  status [--format tabular|yaml|json]
  integrate|relate <a> <b>     remove-relation <a> <b>
  add-unit <app> [-n N]        remove-unit <unit>...      remove-application <app>
  upgrade-charm|refresh <app> --path <charm>
  resolved|resolve <unit> [--no-retry]
  show-unit <unit> [--format yaml|json]
  debug-log [--replay] [--include U] [-n N]
  exec --unit <unit> -- <cmd...>    ssh <unit> <cmd...>
  expose <app>   unexpose <app>   update-status
  wait [--timeout 10m] [--status APP_OR_UNIT=STATUS]...
  contracts-url
  destroy-model [--no-prompt]

Units may be named <app>/leader. The model directory is --model-dir, $JUJUSIM_HOME or
~/.local/share/jujusim.
`

func modelDir(args []string) (string, []string) {
	dir := os.Getenv("JUJUSIM_HOME")
	var rest []string
	for i := 0; i < len(args); i++ {
		if v, ok := strings.CutPrefix(args[i], "--model-dir="); ok {
			dir = v
		} else if args[i] == "--model-dir" && i+1 < len(args) {
			dir = args[i+1]
			i++
		} else {
			rest = append(rest, args[i])
		}
	}
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local/share/jujusim")
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	return dir, rest
}

func socketPath(dir string) string { return filepath.Join(dir, "controller.sock") }

func client(dir string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath(dir))
		},
	}}
}

func running(dir string) bool {
	resp, err := client(dir).Get("http://jujusim/ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func call(dir string, args []string) int {
	if !running(dir) {
		fmt.Fprintf(os.Stderr, "ERROR no model running in %s: run \"jujusim bootstrap\" or deploy first\n", dir)
		return 1
	}
	cwd, _ := os.Getwd()
	body, _ := json.Marshal(callRequest{Args: args, Dir: cwd})
	resp, err := client(dir).Post("http://jujusim/call", "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR cannot reach controller: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	var out callResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR bad controller response: %v\n", err)
		return 1
	}
	os.Stdout.WriteString(out.Stdout)
	os.Stderr.WriteString(out.Stderr)
	return out.Code
}

// bootstrap starts the controller daemon in the background unless it is running.
func bootstrap(dir string, args []string) error {
	if running(dir) {
		fmt.Fprintf(os.Stderr, "Controller already running in %s\n", dir)
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot bootstrap: %w", err)
	}
	self := os.Args[0]
	if !strings.Contains(self, "/") {
		p, err := exec.LookPath(self)
		if err != nil {
			return fmt.Errorf("cannot bootstrap: %w", err)
		}
		self = p
	}
	logf, err := os.OpenFile(filepath.Join(dir, "controller.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot bootstrap: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(self, append([]string{"--model-dir", dir, "__daemon"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot bootstrap: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !running(dir) {
		select {
		case err := <-exited:
			return fmt.Errorf("cannot bootstrap: controller exited (%v); see %s", err, filepath.Join(dir, "controller.log"))
		case <-deadline.C:
			return errors.New("cannot bootstrap: controller did not start")
		case <-tick.C:
		}
	}
	fmt.Fprintf(os.Stderr, "Bootstrapped jujusim controller in %s (pid %d)\n", dir, cmd.Process.Pid)
	return nil
}

// destroy asks the daemon to stop every process and exit, then removes the state directory.
func destroy(dir string) error {
	if running(dir) {
		resp, err := client(dir).Post("http://jujusim/shutdown", "application/json", nil)
		if err != nil {
			return fmt.Errorf("cannot destroy model: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// The daemon answers once everything is stopped; wait for its socket to go away.
		deadline := time.NewTimer(60 * time.Second)
		defer deadline.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for running(dir) {
			select {
			case <-deadline.C:
				return errors.New("cannot destroy model: controller still running")
			case <-tick.C:
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cannot destroy model: %w", err)
	}
	fmt.Fprintln(os.Stderr, "Model destroyed.")
	return nil
}
