package hooks

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// outputRunner answers every hook tool with the same output.
type outputRunner struct {
	out  []byte
	code int
}

func (r outputRunner) Run(_ context.Context, cmd Command) ([]byte, error) {
	if r.code != 0 {
		return r.out, &ExitError{Command: cmd.String(), Code: r.code, Stderr: string(r.out)}
	}
	return r.out, nil
}

// jsonStrings returns the string values of a JSON document (none when it does not parse).
// Keys are left out: they are names (of options, of relation keys), never secrets, and
// decoding errors name the field they are about.
func jsonStrings(data []byte) []string {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// FuzzToolOutput feeds arbitrary output of the hook tools to every parser of the runtime:
// none panics, what they return is well formed, and an error names the tool and never
// repeats a value of the output (relation data holds passwords).
func FuzzToolOutput(f *testing.F) {
	for _, seed := range []string{
		`["db:3","db:4"]`, `["postgresql/1","postgresql/0"]`, `"postgresql"`, `true`, `false`, `null`, ``,
		`{"host":"10.0.0.9","password":"pg-s3cret/pass"}`, `{"password":5}`, `{"a":{"b":"c"}}`,
		`{"bind-addresses":[{"interface-name":"eth0","addresses":[{"value":"10.0.0.5","cidr":"10.0.0.0/24"}]}],"ingress-addresses":["10.0.0.5"]}`,
		`{"url_template":"http://x/{filename}","port":8080,"patch_cache_on":true}`, `{"port":"8080"}`,
		`"10.0.0.5\n"`, `[1,2,3]`, `{"users":"admin:pw","append":true}`,
	} {
		f.Add([]byte(seed), 0)
	}
	f.Add([]byte("ERROR relation not found\n"), 1)
	f.Add([]byte("ERROR invalid value \"x\" for option -r\n"), 2)
	f.Fuzz(func(t *testing.T, out []byte, code int) {
		code %= 3
		c := &Context{Tools: outputRunner{out: out, code: code}, Getenv: func(string) string { return "" }}
		ctx := context.Background()
		// A failing tool's first stderr line is its message and is shown; what a tool
		// prints on stdout never is.
		var values []string
		if code == 0 {
			values = jsonStrings(out)
		}
		check := func(tool string, err error) {
			t.Helper()
			if err == nil {
				return
			}
			msg := err.Error()
			if !strings.Contains(msg, "hook tool "+tool) {
				t.Fatalf("%s: error %q does not name the tool", tool, msg)
			}
			for _, v := range values {
				if len(v) >= 8 && strings.Contains(msg, v) && !strings.Contains(tool, v) {
					t.Fatalf("%s: error %q repeats the value %q of the output", tool, msg, v)
				}
			}
		}
		ids, err := c.RelationIDs(ctx, "db")
		check("relation-ids", err)
		if err == nil && ids == nil && strings.TrimSpace(string(out)) != "null" {
			t.Fatalf("relation-ids: nil without error from %q", out)
		}
		units, err := c.RelationList(ctx, "db:3")
		check("relation-list", err)
		if err == nil && !slices.IsSorted(units) {
			t.Fatalf("relation-list: unsorted %q", units)
		}
		_, err = c.RelationApp(ctx, "db:3")
		check("relation-list", err)
		data, err := c.RelationGet(ctx, "db:3", "postgresql/0")
		check("relation-get", err)
		if err == nil && data == nil {
			t.Fatal("relation-get: nil bag without error")
		}
		data, err = c.RelationGetApp(ctx, "db:3", "postgresql")
		check("relation-get", err)
		if err == nil && data == nil {
			t.Fatal("relation-get --app: nil bag without error")
		}
		params, err := c.ActionGet(ctx)
		check("action-get", err)
		if err == nil && params == nil {
			t.Fatal("action-get: nil parameters without error")
		}
		_, err = c.IsLeader(ctx)
		check("is-leader", err)
		n, err := c.NetworkGet(ctx, "website")
		check("network-get", err)
		if addr := n.BindAddress(); addr != "" && !slices.Contains(values, addr) {
			t.Fatalf("network-get: bind address %q is not in the output", addr)
		}
		addr, err := c.UnitGet(ctx, "private-address")
		check("unit-get", err)
		if addr != strings.TrimSpace(addr) {
			t.Fatalf("unit-get: untrimmed %q", addr)
		}
		var cfg struct {
			URLTemplate string `json:"url_template"`
			Port        int    `json:"port"`
			CacheOn     bool   `json:"patch_cache_on"`
		}
		check("config-get", c.ConfigGet(ctx, &cfg))
	})
}

// FuzzExitErrorReason checks the reason of a failed command is one line of its stderr.
func FuzzExitErrorReason(f *testing.F) {
	f.Add("ERROR relation not found\n")
	f.Add("\n\n  ERROR  \nsecond line\n")
	f.Add("Job for livepatch-server.service failed.\r\nSee journalctl\n")
	f.Fuzz(func(t *testing.T, stderr string) {
		e := &ExitError{Command: "relation-get -r db:3", Code: 1, Stderr: stderr}
		r := e.Reason()
		if strings.Contains(r, "\n") || !strings.Contains(stderr, r) {
			t.Fatalf("reason %q of stderr %q", r, stderr)
		}
		if !strings.HasPrefix(e.Error(), "relation-get -r db:3: exit status 1") {
			t.Fatalf("error %q", e.Error())
		}
	})
}

// FuzzDispatch checks what JUJU_DISPATCH_PATH or argv[0] may name.
func FuzzDispatch(f *testing.F) {
	f.Add("hooks/install", "./dispatch")
	f.Add("", "/var/lib/juju/agents/unit-a-0/charm/actions/schema-upgrade")
	f.Add("actions/../hooks/x", "")
	f.Fuzz(func(t *testing.T, path, argv0 string) {
		kind, name, err := Dispatch(path, argv0)
		if err != nil {
			return
		}
		if kind != "hooks" && kind != "actions" || name == "" || strings.Contains(name, "/") {
			t.Fatalf("Dispatch(%q, %q) = %q, %q", path, argv0, kind, name)
		}
	})
}
