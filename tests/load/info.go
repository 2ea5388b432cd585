package load

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// MachineInfo describes the machine a run measured.
type MachineInfo struct {
	CPUs     int
	CPUModel string
	MemTotal string // "23.4 GiB"
	Kernel   string
	LoadAvg  string // 1, 5, 15 minutes, at the start of the run
}

// ReadMachineInfo reads /proc.
func ReadMachineInfo() MachineInfo {
	m := MachineInfo{CPUs: runtime.NumCPU(), CPUModel: "unknown", MemTotal: "unknown", Kernel: "unknown", LoadAvg: LoadAvg()}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPUModel = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.MemTotal = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// procField returns the value of the first "key : value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ProcessMemory returns the resident (VmRSS) and peak resident (VmHWM) memory of a process
// in bytes.
func ProcessMemory(pid int) (rss, hwm int64, err error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	if _, err := os.Stat(path); err != nil {
		return 0, 0, fmt.Errorf("cannot read memory of process %d: %w", pid, err)
	}
	kb := func(key string) int64 {
		v := strings.TrimSuffix(procField(path, key), " kB")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n << 10
	}
	return kb("VmRSS"), kb("VmHWM"), nil
}

// CommandVersion runs a version command and returns the first line it prints (stdout or
// stderr: nginx -v writes to stderr), or "not found".
func CommandVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil && line == "" {
		return "not found"
	}
	return line
}

// TreeCPU returns the CPU time, in clock ticks, used so far by the live process pid and
// all its descendants (nginx or haproxy workers, PostgreSQL backends: they leave the
// process group, so a group would miss them).
func TreeCPU(pid int) int64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type proc struct {
		ppid  int
		ticks int64
	}
	procs := map[int]proc{}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(p)
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		procs[p] = proc{ppid, utime + stime}
		children[ppid] = append(children[ppid], p)
	}
	var total int64
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		total += procs[p].ticks
		queue = append(queue, children[p]...)
	}
	return total
}

// statFields returns the fields of /proc/<pid>/stat after the command name: state, ppid,
// pgrp, ... (field 3 onwards of proc(5)).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// ProcessCPU returns the CPU time, in clock ticks, used so far by one process.
func ProcessCPU(pid int) int64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// ClockTicks is the unit of ProcessCPU and GroupCPU (USER_HZ, 100 on Linux).
const ClockTicks = 100
