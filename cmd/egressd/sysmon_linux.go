package main

import (
	"os"
	"syscall"
)

// keepSysmonAwake re-executes egressd serve with schedtrace set in GODEBUG,
// unless GODEBUG already sets it.
//
// Why: the Go runtime's sysmon thread goes into a deep sleep whenever every
// P is idle, and the first blocking-style system call afterwards wakes it
// (a futex wake, then 20 µs polls until the process is idle again). A proxy
// is idle between almost every burst, so each new connection paid for that
// round trip: perf put sysmon at 14% of egressd's CPU on new TLS tunnels,
// and `make bench` measured 15-20% less CPU per new TLS tunnel and about 10%
// per new plain tunnel without the deep sleep (docs/benchmarks.md). A
// positive schedtrace is the runtime's only switch that keeps sysmon out of
// deep sleep (runtime/proc.go, sysmon); its polling then backs off to 10 ms,
// about a hundred cheap wake-ups a second on an idle proxy. The side effects
// are the trace's: a plain-text "SCHED ..." line on stderr (among the JSON
// diagnostics) once per ~24.9 days of host uptime, and a fatal crash report
// that also lists the scheduler's state, one line per goroutine.
//
// GODEBUG's schedtrace is read only at process start, hence the exec (same
// PID, same arguments, before anything is opened). GODEBUG=schedtrace=0
// turns this off. If the exec fails, egressd runs on without it.
func keepSysmonAwake() {
	env, changed := withSysmonGODEBUG(os.Environ())
	if !changed {
		return
	}
	// The binary's own path, not /proc/self/exe: the process name (ps,
	// pgrep, systemd) comes from the path executed.
	exe, err := os.Executable()
	if err != nil {
		return
	}
	syscall.Exec(exe, os.Args, env)
}
