package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livepatch-onprem/livepatch/server"
)

// System reads what the client reports about the machine from files under Root ("/" in
// production, a fake tree in tests): /etc/machine-id, /proc/cpuinfo, /proc/stat and
// /proc/uptime. Missing files leave the matching fields empty.
type System struct {
	Root string
	// Uname returns the kernel release and machine hardware name (uname -r, uname -m).
	Uname func() (release, machine string, err error)
}

// HostSystem returns the System of the running machine.
func HostSystem() System {
	return System{Root: "/", Uname: uname}
}

func uname() (release, machine string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", fmt.Errorf("cannot get kernel release: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]), nil
}

func (s System) path(name string) string { return filepath.Join(s.Root, name) }

// MachineID returns the machine id from /etc/machine-id (or /var/lib/dbus/machine-id), ""
// when there is none.
func (s System) MachineID() string {
	for _, name := range []string{"etc/machine-id", "var/lib/dbus/machine-id"} {
		if data, err := os.ReadFile(s.path(name)); err == nil {
			if id := strings.TrimSpace(string(data)); id != "" {
				return id
			}
		}
	}
	return ""
}

// Kernel returns the running kernel's release, as uname -r prints it.
func (s System) Kernel() (string, error) {
	if s.Uname == nil {
		return "", errors.New("cannot get kernel release: no uname")
	}
	release, _, err := s.Uname()
	return release, err
}

// debianArch maps uname machine names and Go architectures to Debian architecture names,
// which patch files use.
var debianArch = map[string]string{
	"x86_64": "amd64", "amd64": "amd64",
	"aarch64": "arm64", "arm64": "arm64", "aarch64_be": "arm64",
	"armv7l": "armhf", "armv8l": "armhf", "armv6l": "armhf", "arm": "armhf",
	"i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386", "386": "i386",
	"ppc64le": "ppc64el", "ppc64el": "ppc64el",
	"s390x":   "s390x",
	"riscv64": "riscv64",
}

// Architecture returns the Debian name of the machine's architecture (amd64, arm64, ...).
func (s System) Architecture() string {
	if s.Uname != nil {
		if _, machine, err := s.Uname(); err == nil && machine != "" {
			if arch, ok := debianArch[machine]; ok {
				return arch
			}
			return strings.ToLower(machine)
		}
	}
	if arch, ok := debianArch[runtime.GOARCH]; ok {
		return arch
	}
	return runtime.GOARCH
}

// CPUModel returns the processor model from /proc/cpuinfo, "" when unknown.
func (s System) CPUModel() string {
	data, err := os.ReadFile(s.path("proc/cpuinfo"))
	if err != nil {
		return ""
	}
	// x86 says "model name"; arm64 "Model" or nothing; POWER "cpu"; s390x "machine".
	found := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if ok && value != "" {
			if _, seen := found[key]; !seen {
				found[key] = value
			}
		}
	}
	for _, key := range []string{"model name", "Model", "cpu model", "cpu", "machine"} {
		if v := found[key]; v != "" {
			if len(v) > 256 {
				v = v[:256]
			}
			return v
		}
	}
	return ""
}

// BootTime returns the boot time from the btime line of /proc/stat, zero when unknown.
func (s System) BootTime() time.Time {
	data, err := os.ReadFile(s.path("proc/stat"))
	if err != nil {
		return time.Time{}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if secs, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64); err == nil && secs > 0 {
				return time.Unix(secs, 0).UTC()
			}
		}
	}
	return time.Time{}
}

// Uptime returns the seconds since boot from /proc/uptime, 0 when unknown.
func (s System) Uptime() int64 {
	data, err := os.ReadFile(s.path("proc/uptime"))
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	secs, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || secs < 0 {
		return 0
	}
	return int64(secs)
}

// status returns the machine's part of a check-in report; kernel is the release to report,
// and the hostname is reported only with hostname.
func (s System) status(kernel string, hostname bool) server.Status {
	st := server.Status{
		Kernel:        kernel,
		Architecture:  s.Architecture(),
		CPUModel:      s.CPUModel(),
		BootTime:      s.BootTime(),
		Uptime:        s.Uptime(),
		ClientVersion: Version,
		Cloud:         s.Cloud(),
	}
	if hostname {
		st.Hostname = s.Hostname()
	}
	return st
}

// Hostname returns the machine's hostname from /proc/sys/kernel/hostname, "" when unknown
// or not a name the server takes.
func (s System) Hostname() string {
	data, err := os.ReadFile(s.path("proc/sys/kernel/hostname"))
	if err != nil {
		return ""
	}
	name := strings.TrimSpace(string(data))
	if (server.Status{Hostname: name}).CheckIdentity() != nil {
		return ""
	}
	return name
}

// Cloud returns where the machine runs as cloud-init recorded it in
// /run/cloud-init/instance-data.json (v1 cloud_name, region, availability_zone), as the
// real client reports it; empty off the cloud, or where cloud-init did not say. A value
// the server would refuse is left out.
func (s System) Cloud() server.Cloud {
	f, err := os.Open(s.path("run/cloud-init/instance-data.json"))
	if err != nil {
		return server.Cloud{}
	}
	defer f.Close()
	var data struct {
		V1 struct {
			CloudName        string `json:"cloud_name"`
			Region           string `json:"region"`
			AvailabilityZone string `json:"availability_zone"`
		} `json:"v1"`
	}
	// The file holds the instance's metadata: bound what is read of it.
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&data); err != nil {
		return server.Cloud{}
	}
	c := server.Cloud{Name: data.V1.CloudName, Region: data.V1.Region, Zone: data.V1.AvailabilityZone}
	if c.Name == "none" || (server.Status{Cloud: c}).CheckIdentity() != nil {
		return server.Cloud{}
	}
	return c
}
