package scale

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// proc is one process of the run, named for the table.
type proc struct {
	pid  int
	name string
}

// procs lists this process and its descendants (the kube-apiserver
// harness and its children, NATS, the services, the proxies' process),
// named by what they are.
func procs() []proc {
	self := os.Getpid()
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppid(pid); ok {
			parent[pid] = pp
		}
	}
	isOurs := func(pid int) bool {
		for p, n := pid, 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if p == self {
				return true
			}
		}
		return false
	}
	var out []proc
	for pid := range parent {
		if !isOurs(pid) {
			continue
		}
		name := procName(pid)
		if pid == self {
			name = "harness (and its kube clients)"
		}
		if name == "" || strings.HasPrefix(name, "go") {
			continue // the go tool, when the harness runs under go run
		}
		out = append(out, proc{pid: pid, name: name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func ppid(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// procName names a process from its command line: the program, with the
// kubebox subcommand or the edge's pod name.
func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	base := filepath.Base(args[0])
	switch {
	case base == "kubebox" && len(args) > 1 && args[1] == "apiserver":
		return "kube-apiserver"
	case base == "kubebox" && len(args) > 1 && args[1] == "controller-manager":
		return "kube-controller-manager"
	case base == "kubebox":
		return "kubebox (etcd)"
	case base == "xds-edge":
		// The last --pod-name wins, as in the edge's flag parsing.
		name := base
		for i, a := range args {
			if a == "--pod-name" && i+1 < len(args) {
				name = "xds-edge " + args[i+1]
			}
		}
		return name
	case pid != os.Getpid() && hasEnv(pid, EnvFleet):
		return "proxies (simulated)"
	}
	return base
}

// hasEnv reports whether process pid's environment sets name.
func hasEnv(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return err == nil && strings.Contains("\x00"+string(b), "\x00"+name+"=")
}

// cpuOf is the user plus system CPU time of pid so far.
func cpuOf(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / clockTicks, true
}

// peakRSS is pid's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024, err == nil
		}
	}
	return 0, false
}

// cpuSample is every process's CPU time at one moment, by name.
type cpuSample map[string]time.Duration

func sampleCPU(ps []proc) cpuSample {
	s := cpuSample{}
	for _, p := range ps {
		if d, ok := cpuOf(p.pid); ok {
			s[p.name] += d
		}
	}
	return s
}

// since is the CPU each process spent from earlier to s.
func (s cpuSample) since(earlier cpuSample) cpuSample {
	out := cpuSample{}
	for n, d := range s {
		out[n] = d - earlier[n]
	}
	return out
}
