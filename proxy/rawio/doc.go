// Package rawio reads, writes and half-closes sockets with raw system
// calls, made inside syscall.RawConn callbacks without the Go scheduler's
// system-call bookkeeping.
//
// Why: a proxy spends most of its time waiting, so its threads sleep
// between bursts. The first ordinary system call after such a sleep (an
// os/net Read or Write goes through syscall.Syscall) wakes the runtime's
// sysmon thread, which then polls every 20 µs until the process is idle
// again; on a proxy pinned to one core each of those wake-ups is a context
// switch away from the work (perf's figures: docs/benchmarks-notes.md). The
// calls here are non-blocking (the sockets are, and
// RawConn waits for readiness on the runtime's poller), so they need no
// bookkeeping: a burst that moves bytes only through rawio and the splice
// relay never wakes sysmon, and a long call is never mistaken for a blocked
// one (sysmon would hand the P to another thread). The deployments also
// keep sysmon out of deep sleep altogether (GODEBUG=schedtrace, README
// "Runtime settings for a farm"); rawio is what still helps without it.
//
// Every function falls back to the conn's own methods when the conn is not
// a socket of this kind, or on systems other than Linux.
package rawio
