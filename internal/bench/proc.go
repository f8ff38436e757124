package bench

// What `herald bench` reads about processes and the machine: CPU time and
// memory from /proc (Linux), the open-file limit, and the machine's
// description for the report.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// benchClockTick is the unit of utime and stime in /proc/PID/stat
// (USER_HZ), 100 per second on every Linux architecture Go runs on.
const benchClockTick = 10 * time.Millisecond

// benchProcStat is one reading of a process.
type benchProcStat struct {
	CPU time.Duration // user + system time so far
	// RSS and HWM (peak RSS) in KiB, from /proc/PID/status.
	RSSKiB int64
	HWMKiB int64
	// CPUs is the Cpus_allowed_list (where it may run).
	CPUs string
	// IO is /proc/PID/io: read and write system calls and their bytes
	// (sockets included), zero where the file cannot be read.
	IO benchIO
}

// benchIO is the part of /proc/PID/io the report uses.
type benchIO struct {
	ReadCalls, WriteCalls int64
	ReadBytes, WriteBytes int64
}

// benchReadProc reads /proc/PID/stat and /proc/PID/status; pid 0 is this
// process.
func benchReadProc(pid int) (benchProcStat, error) {
	if runtime.GOOS != "linux" {
		return benchProcStat{}, fmt.Errorf("reading a process's CPU time and memory needs Linux's /proc; this is %s", runtime.GOOS)
	}
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return benchProcStat{}, fmt.Errorf("read CPU time: %w", err)
	}
	cpu, err := benchParseStat(stat)
	if err != nil {
		return benchProcStat{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return benchProcStat{}, fmt.Errorf("read memory: %w", err)
	}
	s := benchParseStatus(status)
	s.CPU = cpu
	if b, err := os.ReadFile(filepath.Join(dir, "io")); err == nil {
		s.IO = benchParseIO(b)
	}
	return s, nil
}

// benchParseStat returns utime + stime of a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func benchParseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	// After ") ": field 3 (state) onwards; utime and stime are fields 14
	// and 15, i.e. the 12th and 13th here.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("utime/stime: %w", err)
	}
	return time.Duration(ut+st) * benchClockTick, nil
}

// benchParseStatus takes VmRSS, VmHWM (kB) and Cpus_allowed_list from
// /proc/PID/status.
func benchParseStatus(b []byte) benchProcStat {
	var s benchProcStat
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS":
			s.RSSKiB = benchKB(v)
		case "VmHWM":
			s.HWMKiB = benchKB(v)
		case "Cpus_allowed_list":
			s.CPUs = v
		}
	}
	return s
}

// benchParseIO reads syscr, syscw, rchar and wchar of /proc/PID/io.
func benchParseIO(b []byte) benchIO {
	var io benchIO
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			io.ReadCalls = n
		case "syscw":
			io.WriteCalls = n
		case "rchar":
			io.ReadBytes = n
		case "wchar":
			io.WriteBytes = n
		}
	}
	return io
}

func benchKB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
	return n
}

// benchMaxOpenFiles reads "Max open files" (soft limit) of /proc/PID/limits.
func benchMaxOpenFiles(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, err := strconv.ParseUint(f[0], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// benchMachine describes where a run happened.
type benchMachine struct {
	CPUModel string `json:"cpu_model"`
	// CPUs is the machine's online logical CPUs; ToolCPUs how many this
	// process may use (its affinity), GOMAXPROCS what Go uses of them.
	CPUs       int    `json:"cpus"`
	ToolCPUs   int    `json:"tool_cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	ToolCPUSet string `json:"tool_cpu_set,omitempty"`
	MemoryKiB  int64  `json:"memory_kib,omitempty"`
	Kernel     string `json:"kernel,omitempty"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
}

func benchDescribeMachine() benchMachine {
	m := benchMachine{
		ToolCPUs:   runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				m.CPUs++
			case "model name":
				if m.CPUModel == "" {
					m.CPUModel = strings.TrimSpace(v)
				}
			}
		}
	}
	if m.CPUs == 0 {
		m.CPUs = runtime.NumCPU()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.MemoryKiB = benchKB(strings.TrimSpace(v))
			}
		}
	}
	if s, err := benchReadProc(0); err == nil {
		m.ToolCPUSet = s.CPUs
	}
	return m
}
