package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicksPerSec is USER_HZ, the unit of the CPU times in /proc/PID/stat.
// Linux fixes it at 100 on every architecture the benchmark runs on; reading
// sysconf(_SC_CLK_TCK) would need cgo for the same answer.
const clockTicksPerSec = 100

// procStat holds the fields of /proc/PID/stat that the benchmark uses.
type procStat struct {
	PPID   int
	UTime  uint64 // user time, in clock ticks
	STime  uint64 // system time, in clock ticks
	CUTime uint64 // user time of waited-for children, in clock ticks
	CSTime uint64 // system time of waited-for children, in clock ticks
}

// parseStat parses the contents of /proc/PID/stat. The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so the
// remaining fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var st procStat
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return st, errors.New("stat: no command name")
	}
	// Fields after the name, numbered as in proc(5): 3 state, 4 ppid, ...
	// 14 utime, 15 stime, 16 cutime, 17 cstime.
	f := bytes.Fields(b[end+1:])
	if len(f) < 15 {
		return st, fmt.Errorf("stat: %d fields after the command name, want at least 15", len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return st, fmt.Errorf("stat: ppid: %w", err)
	}
	st.PPID = ppid
	for i, dst := range []*uint64{&st.UTime, &st.STime, &st.CUTime, &st.CSTime} {
		// cutime and cstime are signed longs in the kernel; they are never
		// negative in practice, and a parse failure is reported.
		v, err := strconv.ParseUint(string(f[11+i]), 10, 64)
		if err != nil {
			return st, fmt.Errorf("stat: field %d: %w", 14+i, err)
		}
		*dst = v
	}
	return st, nil
}

// parseKiBLine returns the value of a "Key:  N kB" line, such as VmRSS in
// /proc/PID/status or Pss in /proc/PID/smaps_rollup, in KiB. A process
// without an address space (a zombie) has no such line and reports 0.
func parseKiBLine(b []byte, key string) (int64, error) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		rest, ok := bytes.CutPrefix(line, []byte(key))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("malformed %s line %q", key, line)
		}
		return strconv.ParseInt(string(f[0]), 10, 64)
	}
	return 0, nil
}

// procSample is one reading of a process tree (a root PID and all its live
// descendants, such as Squid's kid processes) taken from /proc.
type procSample struct {
	// CPUTicks is utime+stime over the tree, plus the times of children the
	// root has already reaped, in clock ticks.
	CPUTicks uint64
	// RSSKiB is the sum of VmRSS over the tree. Pages shared between the
	// processes of a forking proxy count once per process.
	RSSKiB int64
	// PSSKiB is the sum of Pss (proportional set size) over the tree: shared
	// pages divided among the processes sharing them, so that a forking
	// proxy is not charged several times for one page.
	PSSKiB int64
	// FDs is the number of open file descriptors over the tree.
	FDs int
	// Procs is the number of processes in the tree.
	Procs int
}

// CPUSeconds converts CPUTicks to seconds.
func (s procSample) CPUSeconds() float64 { return float64(s.CPUTicks) / clockTicksPerSec }

// procTree returns root followed by all its live descendants.
func procTree(root int) ([]int, error) {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err != nil {
		return nil, fmt.Errorf("proxy process %d: %w", root, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		children[st.PPID] = append(children[st.PPID], pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}

// sampleProc reads CPU time, RSS and descriptor counts for the tree rooted
// at pid.
func sampleProc(pid int) (procSample, error) {
	var s procSample
	tree, err := procTree(pid)
	if err != nil {
		return s, err
	}
	for i, p := range tree {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			if i == 0 {
				return s, err
			}
			continue
		}
		st, err := parseStat(b)
		if err != nil {
			return s, err
		}
		s.CPUTicks += st.UTime + st.STime
		if i == 0 {
			s.CPUTicks += st.CUTime + st.CSTime
		}
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err == nil {
			rss, err := parseKiBLine(b, "VmRSS:")
			if err != nil {
				return s, err
			}
			s.RSSKiB += rss
		}
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err == nil {
			pss, err := parseKiBLine(b, "Pss:")
			if err != nil {
				return s, err
			}
			s.PSSKiB += pss
		}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p)); err == nil {
			s.FDs += len(fds)
		}
		s.Procs++
	}
	return s, nil
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
