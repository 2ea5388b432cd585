package agent

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livepatch-onprem/livepatch/server"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSystem(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"etc/machine-id":           "  0123456789abcdef0123456789abcdef\n",
		"proc/cpuinfo":             "processor\t: 0\nBogoMIPS\t: 50.00\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
		"proc/stat":                "cpu  1 2 3\nbtime 1714550400\n",
		"proc/uptime":              "12.97 40.01\n",
		"proc/sys/kernel/hostname": "pi-7\n",
		// As cloud-init writes it (abridged).
		"run/cloud-init/instance-data.json": `{"base64_encoded_keys": [], "v1": {"cloud_name": "aws",
			"availability_zone": "eu-west-1b", "region": "eu-west-1", "instance_id": "i-0123"}}`,
	})
	s := System{Root: root, Uname: func() (string, string, error) { return "6.8.0-1004-raspi", "aarch64", nil }}
	if got := s.Hostname(); got != "pi-7" {
		t.Errorf("Hostname = %q, want pi-7", got)
	}
	if got, want := s.Cloud(), (server.Cloud{Name: "aws", Region: "eu-west-1", Zone: "eu-west-1b"}); got != want {
		t.Errorf("Cloud = %+v, want %+v", got, want)
	}
	if st := s.status("6.8.0-1004-raspi", false); st.Hostname != "" || st.Cloud.Name != "aws" {
		t.Errorf("status without the hostname = %+v; want no hostname, the cloud", st)
	}
	if st := s.status("6.8.0-1004-raspi", true); st.Hostname != "pi-7" {
		t.Errorf("status with the hostname = %+v", st)
	}
	if got := s.MachineID(); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("MachineID = %q", got)
	}
	if got := s.Architecture(); got != "arm64" {
		t.Errorf("Architecture = %q, want arm64", got)
	}
	if got := s.CPUModel(); got != "Raspberry Pi 4 Model B Rev 1.4" {
		t.Errorf("CPUModel = %q", got)
	}
	if got, want := s.BootTime(), time.Unix(1714550400, 0).UTC(); !got.Equal(want) {
		t.Errorf("BootTime = %v, want %v", got, want)
	}
	if got := s.Uptime(); got != 12 {
		t.Errorf("Uptime = %d, want 12", got)
	}
	if got, err := s.Kernel(); got != "6.8.0-1004-raspi" || err != nil {
		t.Errorf("Kernel = %q, %v", got, err)
	}
}

func TestSystemMissingFiles(t *testing.T) {
	// A container without /proc or /etc/machine-id: everything is empty, nothing fails.
	s := System{Root: t.TempDir(), Uname: func() (string, string, error) { return "", "", errors.New("no uname") }}
	if got := s.MachineID(); got != "" {
		t.Errorf("MachineID = %q", got)
	}
	if got := s.CPUModel(); got != "" {
		t.Errorf("CPUModel = %q", got)
	}
	if got := s.BootTime(); !got.IsZero() {
		t.Errorf("BootTime = %v", got)
	}
	if got := s.Uptime(); got != 0 {
		t.Errorf("Uptime = %d", got)
	}
	if got := s.Hostname(); got != "" {
		t.Errorf("Hostname = %q", got)
	}
	if got := s.Cloud(); got != (server.Cloud{}) {
		t.Errorf("Cloud = %+v", got)
	}
	if got := s.Architecture(); got == "" {
		t.Error("Architecture is empty: want the Go architecture as a fallback")
	}
	if _, err := s.Kernel(); err == nil {
		t.Error("Kernel: no error")
	}
}

func TestArchitectures(t *testing.T) {
	for machine, want := range map[string]string{
		"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
		"ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64", "LoongArch64": "loongarch64",
	} {
		s := System{Root: t.TempDir(), Uname: func() (string, string, error) { return "", machine, nil }}
		if got := s.Architecture(); got != want {
			t.Errorf("Architecture of %s = %q, want %q", machine, got, want)
		}
	}
}

func TestCPUModelOtherArchitectures(t *testing.T) {
	for cpuinfo, want := range map[string]string{
		"processor\t: 0\ncpu\t\t: POWER9 (architected), altivec supported\nclock\t\t: 2200.000000MHz\n": "POWER9 (architected), altivec supported",
		"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n":                                     "",
	} {
		root := t.TempDir()
		writeTree(t, root, map[string]string{"proc/cpuinfo": cpuinfo})
		if got := (System{Root: root}).CPUModel(); got != want {
			t.Errorf("CPUModel = %q, want %q", got, want)
		}
	}
}

func TestProxy(t *testing.T) {
	c := &Config{HTTPProxy: "http://squid:3128", HTTPSProxy: "http://secure-squid:3128", NoProxy: "internal.example,.corp,10.0.0.0/8,mirror:8080"}
	hc, err := httpClient(c, c.Timeouts())
	if err != nil {
		t.Fatal(err)
	}
	proxy := hc.Transport.(*http.Transport).Proxy
	for target, want := range map[string]string{
		"http://livepatch.example.com/x":  "http://squid:3128",
		"https://livepatch.example.com/x": "http://secure-squid:3128",
		"http://internal.example/":        "",
		"http://a.internal.example/":      "",
		"http://host.corp/":               "",
		"http://10.1.2.3/":                "",
		"http://11.1.2.3/":                "http://squid:3128",
		"http://mirror:8080/":             "",
		"http://mirror/":                  "http://squid:3128",
		"http://127.0.0.1:8080/":          "",
		"http://localhost/":               "",
	} {
		req := mustRequest(t, target)
		u, err := proxy(req)
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != want {
			t.Errorf("proxy for %s = %q, %v; want %q", target, got, err, want)
		}
	}
}
