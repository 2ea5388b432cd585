package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
	"github.com/livepatch-onprem/livepatch/server/client"
	"github.com/livepatch-onprem/livepatch/server/patchfile"
)

const testMachineID = "0123456789abcdef0123456789abcdef"

// fakeAPI is an in-memory server.
type fakeAPI struct {
	mu           sync.Mutex
	authToken    string
	tier         string
	machineToken string
	offer        *server.PatchOffer
	files        map[string][]byte // by URL
	downloads    int
	checkIns     []server.Status
	disabled     int
	unreachable  bool
	advice       int    // check interval the server advises, in minutes
	kernelState  string // what the server says of the machine's kernel
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{authToken: "auth-token", tier: "stable", files: map[string][]byte{}}
}

var errUnreachable = errors.New("cannot reach livepatch server at http://livepatch.test: connection refused")

func (f *fakeAPI) Reenable(ctx context.Context, machineID, authToken, currentToken string, status *server.Status) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unreachable {
		return "", "", errUnreachable
	}
	if authToken != f.authToken {
		return "", "", &client.APIError{Status: http.StatusUnauthorized, Code: server.CodeUnauthorized, Message: "invalid auth token"}
	}
	if f.machineToken != "" && currentToken != f.machineToken {
		return "", "", &client.APIError{Status: http.StatusConflict, Code: server.CodeConflict, Message: "machine is enabled already"}
	}
	if err := status.Check(); err != nil {
		return "", "", &client.APIError{Status: http.StatusBadRequest, Code: server.CodeInvalid, Message: err.Error()}
	}
	f.machineToken = fmt.Sprintf("machine-token-%d", len(f.checkIns))
	return f.machineToken, f.tier, nil
}

func (f *fakeAPI) CheckIn(ctx context.Context, machineID, machineToken string, status server.Status) (server.Update, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unreachable {
		return server.Update{}, errUnreachable
	}
	if machineToken != f.machineToken {
		return server.Update{}, &client.APIError{Status: http.StatusUnauthorized, Code: server.CodeUnauthorized, Message: "invalid machine token"}
	}
	if err := status.Check(); err != nil {
		return server.Update{}, &client.APIError{Status: http.StatusBadRequest, Code: server.CodeInvalid, Message: err.Error()}
	}
	f.checkIns = append(f.checkIns, status)
	return server.Update{Tier: f.tier, Patch: f.offer, KernelState: f.kernelState, Check: server.CheckAdvice{IntervalMinutes: f.advice}}, nil
}

func (f *fakeAPI) Disable(ctx context.Context, machineID, machineToken string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unreachable {
		return errUnreachable
	}
	if machineToken != f.machineToken {
		return &client.APIError{Status: http.StatusUnauthorized, Code: server.CodeUnauthorized, Message: "invalid machine token"}
	}
	f.machineToken = ""
	f.disabled++
	return nil
}

func (f *fakeAPI) Download(ctx context.Context, rawURL string, opts ...client.TransferOption) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.downloads++
	data, ok := f.files[rawURL]
	if !ok {
		return nil, 0, &client.APIError{Status: http.StatusNotFound, Code: server.CodeNotFound, Message: "no such patch"}
	}
	return io.NopCloser(bytes.NewReader(data)), -1, nil
}

func (f *fakeAPI) lastCheckIn() server.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.checkIns) == 0 {
		return server.Status{}
	}
	return f.checkIns[len(f.checkIns)-1]
}

// makePatch returns a real patch archive and the server's offer of it.
func makePatch(t *testing.T, kernel, flavour, version, arch string) (*server.PatchOffer, []byte) {
	t.Helper()
	meta := patchfile.Metadata(kernel, flavour, version, arch)
	var buf bytes.Buffer
	if err := patchfile.Generate(&buf, meta, 4096); err != nil {
		t.Fatal(err)
	}
	name := server.PatchName{Kernel: kernel, Flavour: flavour, Version: version, Architecture: arch}
	sum := sha256.Sum256(buf.Bytes())
	return &server.PatchOffer{
		Version:  version,
		Filename: name.Filename(),
		URL:      "http://livepatch.test/patches/" + name.Filename(),
		SHA256:   hex.EncodeToString(sum[:]),
		Size:     int64(buf.Len()),
		Module:   meta.Module,
		Fixes:    meta.Fixes,
	}, buf.Bytes()
}

// testEnv is an agent on a fake machine: a root tree with /etc, /proc and /sys, a fake
// kernel, a fake server and a settable clock.
type testEnv struct {
	root, dir string
	kernel    *fakeKernel
	api       *fakeAPI
	agent     *Agent
	now       time.Time
	release   string
	serverURL string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/machine-id": testMachineID + "\n",
		"proc/cpuinfo":   "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n",
		"proc/stat":      "cpu  1 2 3 4\nintr 0\nctxt 42\nbtime 1714550400\nprocesses 7\n",
		"proc/uptime":    "93600.52 180000.10\n",
	}
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := &testEnv{
		root:      root,
		dir:       filepath.Join(t.TempDir(), "state"),
		kernel:    newFakeKernel(t, root),
		api:       newFakeAPI(),
		now:       time.Date(2024, 5, 2, 12, 0, 0, 0, time.UTC),
		release:   "5.15.0-107-generic",
		serverURL: "http://livepatch.test",
	}
	e.agent = New(Options{
		StateDir: e.dir,
		System: System{Root: root, Uname: func() (string, string, error) {
			return e.release, "x86_64", nil
		}},
		Runner: e.kernel.run,
		Now:    func() time.Time { return e.now },
		NewAPI: func(serverURL string, opts ...client.Option) (API, error) {
			if serverURL != e.serverURL {
				return nil, fmt.Errorf("unexpected server %s", serverURL)
			}
			return e.api, nil
		},
	})
	e.configure(t, "remote-server", e.serverURL)
	return e
}

func (e *testEnv) configure(t *testing.T, kv ...string) {
	t.Helper()
	c, err := e.agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(kv); i += 2 {
		if err := c.Set(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.agent.SaveConfig(c); err != nil {
		t.Fatal(err)
	}
}

// offer makes the fake server offer a patch for the machine's kernel.
func (e *testEnv) offer(t *testing.T, version string) (*server.PatchOffer, []byte) {
	t.Helper()
	o, data := makePatch(t, "5.15.0-107.117", "generic", version, "amd64")
	e.api.offer = o
	e.api.files[o.URL] = data
	return o, data
}

func (e *testEnv) enable(t *testing.T) *EnableResult {
	t.Helper()
	res, err := e.agent.Enable(t.Context(), "auth-token")
	if err != nil {
		t.Fatalf("Enable: %v", err)
	}
	return res
}

func (e *testEnv) patchFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dir, patchesDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range entries {
		names = append(names, de.Name())
	}
	return names
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
