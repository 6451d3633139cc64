package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Result is one scenario's measurement: one JSON object per line in the
// -json file, and the unit the report works on. Fields that a scenario does
// not measure are omitted.
type Result struct {
	Label    string    `json:"label"`                // the proxy under test, e.g. "egressd" or "direct"
	Kind     string    `json:"kind"`                 // client kind: direct, connect, socks5, http
	Auth     bool      `json:"proxy_auth,omitempty"` // the client presented -proxy-auth credentials
	Run      int       `json:"run"`                  // repetition number, from -run
	Scenario string    `json:"scenario"`             // e.g. bulk_up_8, tunnels, tls_tunnels
	Time     time.Time `json:"time"`                 // start of the scenario

	Seconds     float64 `json:"seconds"`               // wall time of the measured part
	Concurrency int     `json:"concurrency,omitempty"` // streams or workers
	TargetRate  float64 `json:"target_rate,omitempty"` // paced scenarios: the operations per second asked for
	Ops         int64   `json:"ops,omitempty"`         // tunnels or requests that completed
	Errors      int64   `json:"errors"`                // operations that failed
	FirstError  string  `json:"first_error,omitempty"` // the first failure, for diagnosis
	TimeBound   bool    `json:"time_bound,omitempty"`  // stopped by the time limit before the count
	Bytes       int64   `json:"bytes,omitempty"`       // payload bytes moved (bulk)
	OpsPerSec   float64 `json:"ops_per_sec,omitempty"`
	MiBPerSec   float64 `json:"mib_per_sec,omitempty"`
	P50Ms       float64 `json:"p50_ms,omitempty"`
	P99Ms       float64 `json:"p99_ms,omitempty"`
	Reconnects  int64   `json:"reconnects,omitempty"`  // forward: connections reopened after the proxy closed one
	DNSQueries  int64   `json:"dns_queries,omitempty"` // questions the in-process DNS server answered
	ToolCPUSec  float64 `json:"tool_cpu_s"`            // this process's CPU time during the scenario

	// Proxy figures, present when -proxy-pid was given.
	ProxyCPUSec     *float64 `json:"proxy_cpu_s,omitempty"`
	ProxyCPUPerGiB  *float64 `json:"proxy_cpu_s_per_gib,omitempty"`
	ProxyCPUPer1000 *float64 `json:"proxy_cpu_s_per_1000,omitempty"`
	ProxyRSSKiB     int64    `json:"proxy_rss_kib,omitempty"` // at the end of the scenario
	ProxyFDs        int      `json:"proxy_fds,omitempty"`     // at the end of the scenario

	Idle *IdleResult `json:"idle,omitempty"`
	Held *HeldResult `json:"held,omitempty"`
}

// IdleResult is the proxy's footprint before and while it holds idle tunnels.
type IdleResult struct {
	Tunnels      int     `json:"tunnels"`
	RSS0KiB      int64   `json:"rss0_kib"`
	RSS1KiB      int64   `json:"rss1_kib"`
	FDs0         int     `json:"fds0"`
	FDs1         int     `json:"fds1"`
	KiBPerTunnel float64 `json:"kib_per_tunnel"`
	FDsPerTunnel float64 `json:"fds_per_tunnel"`
	// PSS (proportional set size) figures: the fair memory figure for a
	// proxy that forks, whose shared pages RSS counts once per process.
	PSS0KiB         int64   `json:"pss0_kib"`
	PSS1KiB         int64   `json:"pss1_kib"`
	PSSKiBPerTunnel float64 `json:"pss_kib_per_tunnel"`
	Procs0          int     `json:"procs0"`
	Procs1          int     `json:"procs1"`
}

// perGiB sets the proxy's CPU seconds per GiB of payload.
func (r *Result) perGiB() {
	if r.ProxyCPUSec != nil && r.Bytes > 0 {
		v := *r.ProxyCPUSec / (float64(r.Bytes) / (1 << 30))
		r.ProxyCPUPerGiB = &v
	}
}

// per1000 sets the proxy's CPU seconds per 1,000 operations.
func (r *Result) per1000() {
	if r.ProxyCPUSec != nil && r.Ops > 0 {
		v := *r.ProxyCPUSec / float64(r.Ops) * 1000
		r.ProxyCPUPer1000 = &v
	}
}

// writeJSON writes r as one line of JSON.
func (r *Result) writeJSON(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// summary is the one-line human form of r.
func (r *Result) summary() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-12s %-7s %-12s", r.Label, r.Kind, r.Scenario)
	switch {
	case r.Idle != nil:
		i := r.Idle
		fmt.Fprintf(&sb, " %d idle tunnels: rss %d→%d KiB (%.1f KiB/tunnel, pss %.1f), fds %d→%d (%.2f/tunnel)",
			i.Tunnels, i.RSS0KiB, i.RSS1KiB, i.KiBPerTunnel, i.PSSKiBPerTunnel, i.FDs0, i.FDs1, i.FDsPerTunnel)
		if i.Procs1 > 1 {
			fmt.Fprintf(&sb, ", processes %d→%d", i.Procs0, i.Procs1)
		}
	case r.Held != nil:
		h := r.Held
		fmt.Fprintf(&sb, " %d uploads of %d bytes held: rss %d→%d KiB (%.1f KiB/upload)", h.Uploads, h.BodyBytes, h.RSS0KiB, h.RSS1KiB, h.KiBPerUpload)
	case r.Kind == floorKind:
		fmt.Fprintf(&sb, " %6d ops in %5.2fs = %7.0f/s  own cpu %.2fs (%.1f us per op)", r.Ops, r.Seconds, r.OpsPerSec, r.ToolCPUSec, r.ToolCPUSec/float64(max(r.Ops, 1))*1e6)
		return sb.String()
	case r.Bytes > 0:
		fmt.Fprintf(&sb, " %7.1f MiB in %5.2fs = %7.1f MiB/s", float64(r.Bytes)/(1<<20), r.Seconds, r.MiBPerSec)
	default:
		fmt.Fprintf(&sb, " %6d ops in %5.2fs = %7.0f/s  p50 %.3f ms  p99 %.3f ms", r.Ops, r.Seconds, r.OpsPerSec, r.P50Ms, r.P99Ms)
	}
	if r.ProxyCPUSec != nil {
		fmt.Fprintf(&sb, "  proxy cpu %.2fs", *r.ProxyCPUSec)
	}
	if r.ProxyCPUPerGiB != nil {
		fmt.Fprintf(&sb, " (%.3f s/GiB)", *r.ProxyCPUPerGiB)
	}
	if r.ProxyCPUPer1000 != nil {
		fmt.Fprintf(&sb, " (%.3f s/1000)", *r.ProxyCPUPer1000)
	}
	fmt.Fprintf(&sb, "  tool cpu %.2fs", r.ToolCPUSec)
	if r.Errors > 0 {
		fmt.Fprintf(&sb, "  ERRORS %d (first: %s)", r.Errors, r.FirstError)
	}
	if r.TimeBound {
		sb.WriteString("  [time bound]")
	}
	return sb.String()
}
