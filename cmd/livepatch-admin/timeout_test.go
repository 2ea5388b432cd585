package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/internal/badserver"
	"github.com/livepatch-onprem/livepatch/internal/cli"
)

// runWithin is runCLI that fails the test when the command has not ended after a
// generous bound: a command still running then waits without a deadline.
func runWithin(t *testing.T, args []string, env map[string]string) (int, string, string) {
	t.Helper()
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := runCLI(t, args, env, "")
		done <- result{code, stdout, stderr}
	}()
	select {
	case r := <-done:
		return r.code, r.stdout, r.stderr
	case <-time.After(30 * time.Second):
		t.Fatalf("livepatch-admin %s has not ended after 30s: it waits without a deadline", strings.Join(args, " "))
		return 0, "", ""
	}
}

// TestHungServer: a server that accepts connections and never answers ends a command with
// exit 1 and an error that says so and how to wait longer.
func TestHungServer(t *testing.T) {
	url := badserver.Silent(t)
	dir := t.TempDir()
	loginSession(t, dir, url)
	bundle := filepath.Join(t.TempDir(), "stable.bundle")
	for _, tt := range []struct {
		name   string
		args   []string
		env    map[string]string
		stderr string
	}{{
		name:   "--timeout",
		args:   []string{"tier", "list", "--timeout", "200ms"},
		stderr: "error: livepatch server at " + url + " did not answer within 200ms (wait longer with --timeout or LIVEPATCH_TIMEOUT)\n",
	}, {
		name:   "LIVEPATCH_TIMEOUT",
		args:   []string{"report", "kernels"},
		env:    map[string]string{envTimeout: "0.2s"},
		stderr: "error: livepatch server at " + url + " did not answer within 200ms (wait longer with --timeout or LIVEPATCH_TIMEOUT)\n",
	}, {
		name:   "the flag over the environment",
		args:   []string{"login", "-a", "admin:pw", "--timeout", "100ms"},
		env:    map[string]string{envTimeout: "1h"},
		stderr: "error: livepatch server at " + url + " did not answer within 100ms (wait longer with --timeout or LIVEPATCH_TIMEOUT)\n",
	}, {
		name:   "a transfer",
		args:   []string{"bundle", "export", "stable", bundle, "--timeout", "200ms"},
		stderr: "error: the transfer with livepatch server at " + url + " stalled: no data moved for 200ms (wait longer with --timeout or LIVEPATCH_TIMEOUT)\n",
	}} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{envURL: url, envConfigDir: dir}
			for k, v := range tt.env {
				env[k] = v
			}
			code, stdout, stderr := runWithin(t, tt.args, env)
			if code != cli.ExitError || stdout != "" || stderr != tt.stderr {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1, stderr %q", code, stdout, stderr, tt.stderr)
			}
		})
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("a stalled export left %s: %v", bundle, err)
	}
}

// TestEndlessAnswer: an answer that never ends is read no further than its bound.
func TestEndlessAnswer(t *testing.T) {
	url := badserver.Endless(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", `{"tiers":[`, `{"name":"edge","position":1},`)
	dir := t.TempDir()
	loginSession(t, dir, url)
	code, stdout, stderr := runWithin(t, []string{"tier", "list"}, map[string]string{envURL: url, envConfigDir: dir})
	want := "error: cannot decode response of GET /v1/admin/tiers from livepatch server at " + url + ": the answer is larger than 8 MiB\n"
	if code != cli.ExitError || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 1, stderr %q", code, stdout, stderr, want)
	}
}

// TestBadTimeouts: a timeout that is not a duration in range is a usage error.
func TestBadTimeouts(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		msg  string
	}{
		{[]string{"tier", "list", "--timeout", "soon"}, nil, `error: invalid --timeout "soon": want a duration such as 30s or 5m, at most 24h0m0s`},
		{[]string{"tier", "list", "--connect-timeout", "0s"}, nil, `error: invalid --connect-timeout "0s": want a duration such as 30s or 5m, at most 24h0m0s`},
		{[]string{"tier", "list"}, map[string]string{envTimeout: "-1s"}, `error: invalid LIVEPATCH_TIMEOUT "-1s": want a duration such as 30s or 5m, at most 24h0m0s`},
		{[]string{"tier", "list"}, map[string]string{envConnect: "48h"}, `error: invalid LIVEPATCH_CONNECT_TIMEOUT "48h": want a duration such as 30s or 5m, at most 24h0m0s`},
	} {
		env := map[string]string{envURL: "http://127.0.0.1:1", envConfigDir: t.TempDir()}
		for k, v := range tt.env {
			env[k] = v
		}
		code, _, stderr := runCLI(t, tt.args, env, "")
		if code != cli.ExitUsage || !strings.HasPrefix(stderr, tt.msg+"\nUsage:") {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 and %q with the usage", tt.args, tt.env, code, stderr, tt.msg)
		}
	}
}
