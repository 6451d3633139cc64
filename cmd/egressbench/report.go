package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// seriesKey names one row of the report: a proxy driven by one client kind.
type seriesKey struct{ Label, Kind string }

func (s seriesKey) String() string {
	if s.Label == s.Kind || s.Label == kindDirect {
		return s.Label
	}
	return s.Label + " (" + s.Kind + ")"
}

// runKey is one invocation of the run subcommand.
type runKey struct {
	seriesKey
	Run int
}

// runResults are the results of one run, by scenario.
type runResults map[string]*Result

// figure is one number the report tabulates, computed from one run's results.
type figure struct {
	ID    string
	Title string
	Unit  string
	Lower bool // lower is better
	Prec  int  // decimals shown
	// CPU marks CPU-time figures, where a lead under 15% counts as none.
	CPU bool
	// Info marks figures tabulated but not compared: about the load tool,
	// or counts (DNS queries) too small for a ratio to mean anything.
	Info  bool
	value func(runResults) (float64, bool)
}

// field returns a figure reading one value from one scenario's result.
func field(scenario string, get func(*Result) (float64, bool)) func(runResults) (float64, bool) {
	return func(rr runResults) (float64, bool) {
		r, ok := rr[scenario]
		if !ok {
			return 0, false
		}
		return get(r)
	}
}

func opsPerSec(r *Result) (float64, bool) { return r.OpsPerSec, r.Ops > 0 }
func p50(r *Result) (float64, bool)       { return r.P50Ms, r.Ops > 0 }
func p99(r *Result) (float64, bool)       { return r.P99Ms, r.Ops > 0 }
func mibPerSec(r *Result) (float64, bool) { return r.MiBPerSec, r.Bytes > 0 }
func cpuPer1000(r *Result) (float64, bool) {
	if r.ProxyCPUPer1000 == nil {
		return 0, false
	}
	return *r.ProxyCPUPer1000, true
}
func cpuPerGiB(r *Result) (float64, bool) {
	if r.ProxyCPUPerGiB == nil {
		return 0, false
	}
	return *r.ProxyCPUPerGiB, true
}
func dnsPerOp(r *Result) (float64, bool) {
	if r.Ops == 0 {
		return 0, false
	}
	return float64(r.DNSQueries) / float64(r.Ops), true
}
func toolCPUShare(r *Result) (float64, bool) {
	if r.Seconds <= 0 {
		return 0, false
	}
	return 100 * r.ToolCPUSec / r.Seconds, true
}
func idleGet(get func(*IdleResult) float64) func(*Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Idle == nil || r.Idle.Tunnels == 0 {
			return 0, false
		}
		return get(r.Idle), true
	}
}

var bulkScenarios = []string{"bulk_up_1", "bulk_up_8", "bulk_down_1", "bulk_down_8"}

// bulkCPUPerGiB is the proxy's CPU over all four bulk scenarios of a run,
// divided by all the GiB they moved.
func bulkCPUPerGiB(rr runResults) (float64, bool) {
	var cpu, gib float64
	for _, s := range bulkScenarios {
		r, ok := rr[s]
		if !ok || r.ProxyCPUSec == nil {
			return 0, false
		}
		cpu += *r.ProxyCPUSec
		gib += float64(r.Bytes) / (1 << 30)
	}
	if gib == 0 {
		return 0, false
	}
	return cpu / gib, true
}

// Figures by ID. The headline ones carry the issue's targets.
var (
	figBulkCPU = figure{ID: "bulk_cpu_gib", Title: "CPU s per GiB tunneled (all 4 bulk scenarios)", Unit: "s/GiB", Lower: true, Prec: 3, CPU: true, value: bulkCPUPerGiB}
	figTunCPU  = figure{ID: "tunnels_cpu", Title: "CPU s per 1,000 new tunnels", Unit: "s", Lower: true, Prec: 3, CPU: true, value: field("tunnels", cpuPer1000)}
	figTLSCPU  = figure{ID: "tls_cpu", Title: "CPU s per 1,000 new TLS tunnels by name", Unit: "s", Lower: true, Prec: 3, CPU: true, value: field("tls_tunnels", cpuPer1000)}
	figFwdCPU  = figure{ID: "forward_cpu", Title: "CPU s per 1,000 forwarded HTTP requests", Unit: "s", Lower: true, Prec: 4, CPU: true, value: field("forward", cpuPer1000)}
	figIdleKiB = figure{ID: "idle_kib", Title: "KiB of RSS per idle tunnel", Unit: "KiB", Lower: true, Prec: 1, value: field("idle", idleGet(func(i *IdleResult) float64 { return i.KiBPerTunnel }))}
	figIdleFDs = figure{ID: "idle_fds", Title: "fds per idle tunnel", Unit: "fds", Lower: true, Prec: 2, value: field("idle", idleGet(func(i *IdleResult) float64 { return i.FDsPerTunnel }))}
	figBulk8   = figure{ID: "bulk_down_8_mib", Title: "Throughput, 8 streams down", Unit: "MiB/s", Prec: 0, value: field("bulk_down_8", mibPerSec)}
	figTunRate = figure{ID: "tunnels_rate", Title: "New tunnels per second", Unit: "/s", Prec: 0, value: field("tunnels", opsPerSec)}

	figInspSessCPU = figure{ID: "inspect_sessions_cpu", Title: "CPU s per 1,000 new inspected TLS sessions", Unit: "s", Lower: true, Prec: 3, CPU: true, value: field("inspect_sessions", cpuPer1000)}
	figInspReqCPU  = figure{ID: "inspect_requests_cpu", Title: "CPU s per 1,000 inspected requests", Unit: "s", Lower: true, Prec: 4, CPU: true, value: field("inspect_requests", cpuPer1000)}
	figInspGiBCPU  = figure{ID: "inspect_bulk_cpu", Title: "CPU s per GiB inspected", Unit: "s/GiB", Lower: true, Prec: 3, CPU: true, value: field("inspect_bulk", cpuPerGiB)}

	figCacheHitCPU = figure{ID: "cache_hit_cpu", Title: "CPU s per 1,000 cache hits (1 KiB)", Unit: "s", Lower: true, Prec: 4, CPU: true, value: field("cache_hit_1k", cpuPer1000)}
	figCacheGiBCPU = figure{ID: "cache_hit_gib_cpu", Title: "CPU s per GiB served from cache (1 MiB hits)", Unit: "s/GiB", Lower: true, Prec: 3, CPU: true, value: field("cache_hit_1m", cpuPerGiB)}
)

// DLP figures: egressd uninspected, with its built-in detectors
// (egressd-dlp), asking c-icap (egressd-icap), and Squid asking the same
// c-icap (squid-icap), on the same POSTs.
func heldKiB(r *Result) (float64, bool) {
	if r.Held == nil || r.Held.Uploads == 0 {
		return 0, false
	}
	return r.Held.KiBPerUpload, true
}

var (
	figPost1KCPU = figure{ID: "post_1k_cpu", Title: "CPU ms per 1 KiB POST", Unit: "ms", Lower: true, Prec: 4, CPU: true, Info: true, value: field("post_1k", cpuPer1000)}
	figPost1MCPU = figure{ID: "post_1m_cpu", Title: "CPU ms per 1 MiB POST", Unit: "ms", Lower: true, Prec: 3, CPU: true, Info: true, value: field("post_1m", cpuPer1000)}
	figHeldKiB   = figure{ID: "dlp_held_kib", Title: "RSS KiB per 1 MiB upload held in flight", Unit: "KiB", Lower: true, Prec: 0, Info: true, value: field("dlp_held", heldKiB)}
)

// dlpLabels name the DLP configurations in the DLP table's order.
const (
	labelDLP       = "egressd-dlp"
	labelICAP      = "egressd-icap"
	labelSquidICAP = "squid-icap"
)

// sysdnsLabel is egressd on its default DNS path: dns.servers empty, the
// name servers of a resolv.conf that names the load tool's DNS server.
const sysdnsLabel = "egressd-sysdns"

const sysdnsNote = sysdnsLabel + " is egressd with `dns.servers` empty (its default), reading a resolv.conf that names the load tool's DNS server, run for the TLS scenarios only."

// isEgressd reports whether a series label is egressd in some
// configuration (never a peer to compare egressd with).
func isEgressd(label string) bool { return label == "egressd" || strings.HasPrefix(label, "egressd-") }

// section is one table of the report.
type section struct {
	Title   string
	Note    string
	Kinds   []string // client kinds whose series appear
	Figures []figure
}

func sections() []section {
	var bulk []figure
	for _, s := range bulkScenarios {
		bulk = append(bulk, figure{ID: s + "_mib", Title: s + " MiB/s", Prec: 0, value: field(s, mibPerSec)})
	}
	for _, s := range bulkScenarios {
		bulk = append(bulk, figure{ID: s + "_cpu", Title: s + " CPU s/GiB", Lower: true, Prec: 3, CPU: true, value: field(s, cpuPerGiB)})
	}
	bulk = append(bulk, figBulkCPU)
	tunnelKinds := []string{kindDirect, kindConnect, kindSOCKS5}
	return []section{
		{Title: "Bulk tunnel throughput", Kinds: tunnelKinds, Figures: bulk,
			Note: "Fixed payload per scenario split over 1 or 8 tunnels, up (client→origin) or down; bounded in time. CPU is the proxy's utime+stime over the scenario."},
		{Title: "New tunnels (one small HTTP request each with Connection: close)", Kinds: tunnelKinds, Figures: []figure{
			figTunRate,
			{ID: "tunnels_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("tunnels", p50)},
			{ID: "tunnels_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("tunnels", p99)},
			figTunCPU,
			{ID: "tunnels_tool", Title: "load tool CPU %", Info: true, Prec: 0, value: field("tunnels", toolCPUShare)},
		}, Note: "Tunnels to the HTTP origin by IP literal; concurrency from -conc. A load tool CPU share near 100% means the rate is bounded by the tool's core, not the proxy's."},
		{Title: "New TLS tunnels by host name (DNS through the load tool, full TLS 1.3 handshake, SNI = name, one HTTPS request)", Kinds: tunnelKinds, Figures: []figure{
			{ID: "tls_rate", Title: "TLS tunnels per second", Prec: 0, value: field("tls_tunnels", opsPerSec)},
			{ID: "tls_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("tls_tunnels", p50)},
			{ID: "tls_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("tls_tunnels", p99)},
			figTLSCPU,
			{ID: "tls_dns", Title: "DNS queries per tunnel", Info: true, Prec: 4, value: field("tls_tunnels", dnsPerOp)},
			{ID: "tls_tool", Title: "load tool CPU %", Info: true, Prec: 0, value: field("tls_tunnels", toolCPUShare)},
		}, Note: "Both TLS ends run in the load tool, so the rate and the latencies are bounded by the tool's core (its speed on this VM drifts from round to round); the proxy's CPU per 1,000 is the comparable figure here, and the fixed-rate table below compares the latencies at equal load. DNS queries per tunnel: questions the load tool's DNS server answered (TTL 300 s, A and AAAA count as two) per tunnel; " + sysdnsNote},
		{Title: "New tunnels at a fixed rate (open loop)", Kinds: tunnelKinds, Figures: []figure{
			{ID: "tunp_rate", Title: "tunnels per second (the rate asked for)", Info: true, Prec: 0, value: field("tunnels_paced", opsPerSec)},
			{ID: "tunp_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("tunnels_paced", p50)},
			{ID: "tunp_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("tunnels_paced", p99)},
			{ID: "tunp_cpu", Title: "CPU s per 1,000 new tunnels", Lower: true, Prec: 3, CPU: true, value: field("tunnels_paced", cpuPer1000)},
		}, Note: "The same tunnels started at a fixed rate (-paced-tunnels-rate, 2,000/s in make bench) whatever the proxy's speed, so every proxy carries the same load, well below its capacity: the latencies compare like for like, as a farm runs. The closed-loop table above measures at saturation, where a faster proxy is given more work and its queue sets the tail."},
		{Title: "New TLS tunnels by host name at a fixed rate (open loop)", Kinds: tunnelKinds, Figures: []figure{
			{ID: "tlsp_rate", Title: "TLS tunnels per second (the rate asked for)", Info: true, Prec: 0, value: field("tls_tunnels_paced", opsPerSec)},
			{ID: "tlsp_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("tls_tunnels_paced", p50)},
			{ID: "tlsp_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("tls_tunnels_paced", p99)},
			{ID: "tlsp_cpu", Title: "CPU s per 1,000 new TLS tunnels by name", Lower: true, Prec: 3, CPU: true, value: field("tls_tunnels_paced", cpuPer1000)},
			{ID: "tlsp_dns", Title: "DNS queries per tunnel", Info: true, Prec: 4, value: field("tls_tunnels_paced", dnsPerOp)},
			{ID: "tlsp_tool", Title: "load tool CPU %", Info: true, Prec: 0, value: field("tls_tunnels_paced", toolCPUShare)},
		}, Note: "The TLS tunnels at a fixed rate (-paced-tls-rate, 400/s in make bench), below the load tool's own capacity for TLS handshakes: in the closed-loop table above the tool's core sets the rate and the tail, here every proxy carries the same load and the latencies are the proxy's."},
		{Title: "Keep-alive requests through one tunnel (one at a time)", Kinds: tunnelKinds, Figures: []figure{
			{ID: "ka_rate", Title: "requests per second", Prec: 0, value: field("keepalive", opsPerSec)},
			{ID: "ka_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("keepalive", p50)},
			{ID: "ka_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("keepalive", p99)},
			{ID: "ka_cpu", Title: "CPU s per 1,000 requests", Lower: true, Prec: 4, CPU: true, value: field("keepalive", cpuPer1000)},
		}},
		{Title: "Absolute-URI HTTP forwarding (keep-alive clients)", Kinds: []string{kindDirect, kindHTTP}, Figures: []figure{
			{ID: "fwd_rate", Title: "requests per second", Prec: 0, value: field("forward", opsPerSec)},
			{ID: "fwd_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("forward", p50)},
			{ID: "fwd_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("forward", p99)},
			figFwdCPU,
			{ID: "fwd_tool", Title: "load tool CPU %", Info: true, Prec: 0, value: field("forward", toolCPUShare)},
		}, Note: "direct sends origin-form requests straight to the origin."},
		{Title: "Absolute-URI HTTP forwarding at a fixed rate (open loop)", Kinds: []string{kindDirect, kindHTTP}, Figures: []figure{
			{ID: "fwdp_rate", Title: "requests per second (the rate asked for)", Info: true, Prec: 0, value: field("forward_paced", opsPerSec)},
			{ID: "fwdp_p50", Title: "p50 ms", Lower: true, Prec: 3, value: field("forward_paced", p50)},
			{ID: "fwdp_p99", Title: "p99 ms", Lower: true, Prec: 3, value: field("forward_paced", p99)},
			{ID: "fwdp_cpu", Title: "CPU s per 1,000 forwarded HTTP requests", Lower: true, Prec: 4, CPU: true, value: field("forward_paced", cpuPer1000)},
		}, Note: "The forwarding scenario at a fixed rate (-paced-fwd-rate, 5,000/s in make bench) over 32 keep-alive clients."},
		{Title: "HTTP cache (32 keep-alive clients, absolute-URI requests; the proxies' memory caches on)", Kinds: []string{kindCache}, Figures: []figure{
			{ID: "cache_hit_rate", Title: "1 KiB hits per second", Prec: 0, value: field("cache_hit_1k", opsPerSec)},
			{ID: "cache_hit_p50", Title: "1 KiB hits p50 ms", Lower: true, Prec: 3, value: field("cache_hit_1k", p50)},
			{ID: "cache_hit_p99", Title: "1 KiB hits p99 ms", Lower: true, Prec: 3, value: field("cache_hit_1k", p99)},
			figCacheHitCPU,
			{ID: "cache_hit_mib", Title: "1 MiB hits MiB/s", Prec: 0, value: field("cache_hit_1m", mibPerSec)},
			figCacheGiBCPU,
			{ID: "cache_miss_rate", Title: "1 KiB misses per second", Prec: 0, value: field("cache_miss_1k", opsPerSec)},
			{ID: "cache_miss_cpu", Title: "CPU s per 1,000 misses (1 KiB)", Lower: true, Prec: 4, CPU: true, value: field("cache_miss_1k", cpuPer1000)},
			{ID: "cache_miss_mib", Title: "1 MiB misses MiB/s", Prec: 0, value: field("cache_miss_1m", mibPerSec)},
			{ID: "cache_miss_gib_cpu", Title: "CPU s per GiB of 1 MiB misses", Lower: true, Prec: 3, CPU: true, value: field("cache_miss_1m", cpuPerGiB)},
		}, Note: "Each proxy runs with its memory cache on (egressd `cache.http.max_bytes: 512MiB`, Squid `cache_mem 512 MB` with `maximum_object_size_in_memory 8 MB`); the origin answers `Cache-Control: public, max-age=3600`. Hits: every request asks for one URL, stored during the warm-up. Misses: every request asks for a URL never asked before, which the proxy fetches, stores and, once full, evicts for. CPU per GiB counts the response bodies the clients read."},
		{Title: "DLP: forwarded POSTs, uninspected and inspected", Kinds: []string{kindHTTP}, Figures: []figure{
			{ID: "post_1k_rate", Title: "1 KiB POSTs per second", Info: true, Prec: 0, value: field("post_1k", opsPerSec)},
			{ID: "post_1k_p50", Title: "1 KiB p50 ms", Info: true, Lower: true, Prec: 3, value: field("post_1k", p50)},
			figPost1KCPU,
			{ID: "post_1m_rate", Title: "1 MiB POSTs per second", Info: true, Prec: 0, value: field("post_1m", opsPerSec)},
			{ID: "post_1m_p50", Title: "1 MiB p50 ms", Info: true, Lower: true, Prec: 2, value: field("post_1m", p50)},
			figPost1MCPU,
			figHeldKiB,
		}, Note: "POSTs of a generated JSON body (API records: ids, timestamps, amounts, e-mail addresses, phone numbers, prose, base64 fields; no secret) through keep-alive clients (-conc), read whole by the origin. egressd is uninspected; egressd-dlp runs every built-in detector on the rule (dlp.max_scan_bytes 1 MiB, the body held and scanned before it goes upstream); egressd-icap asks c-icap's srv_content_filtering (Debian's c-icap, REQMOD, a pattern that never matches) and nothing else; squid-icap is Squid with the same c-icap service (icap_service reqmod_precache, adaptation_access). c-icap runs on the load tool's CPU, so its own work is not in the proxies' CPU. Held: 1 MiB uploads with all but their last byte sent, held open; RSS growth per upload after a settle (egressd-dlp and egressd-icap hold each body for its verdict: max_scan_bytes plus a constant)."},
		{Title: "TLS inspection (CONNECT; the proxy terminates TLS with the inspection CA and reads the requests inside)", Kinds: []string{kindInspect}, Figures: []figure{
			{ID: "inspect_sessions_rate", Title: "new inspected TLS sessions per second", Prec: 0, value: field("inspect_sessions", opsPerSec)},
			{ID: "inspect_sessions_p50", Title: "sessions p50 ms", Lower: true, Prec: 3, value: field("inspect_sessions", p50)},
			figInspSessCPU,
			{ID: "inspect_sessions_tool", Title: "load tool CPU % (sessions)", Info: true, Prec: 0, value: field("inspect_sessions", toolCPUShare)},
			{ID: "inspect_requests_rate", Title: "inspected requests per second", Prec: 0, value: field("inspect_requests", opsPerSec)},
			figInspReqCPU,
			{ID: "inspect_bulk_mib", Title: "inspected download MiB/s (one session)", Prec: 0, value: field("inspect_bulk", mibPerSec)},
			figInspGiBCPU,
		}, Note: "Both proxies with the same inspection CA (an intermediate with its chain), for origin.bench.test on the TLS origin's port: egressd with a rule `inspect: true` (its default access log, SNI guard and per-request policy, DLP off), Squid with `ssl_bump peek` at step 1 then `bump`, certificates generated by `security_file_certgen` and kept in its memory cache; both verify the origin against the origin CA. Sessions: each opens a CONNECT tunnel, completes a full TLS handshake with the proxy (no resumption) and sends one request with Connection: close (the proxy handshakes with the origin as it needs: Squid once per session, egressd from its pool of origin connections). Requests: -conc kept-alive inspected sessions, one small request at a time. Download: 64 MiB responses through one kept-alive inspected session."},
		{Title: "Idle tunnels: proxy footprint", Kinds: []string{kindConnect, kindSOCKS5}, Figures: []figure{
			{ID: "idle_rss0", Title: "RSS at 0, MiB", Lower: true, Prec: 1, value: field("idle", idleGet(func(i *IdleResult) float64 { return float64(i.RSS0KiB) / 1024 }))},
			{ID: "idle_rss1", Title: "RSS with idle tunnels, MiB", Lower: true, Prec: 1, value: field("idle", idleGet(func(i *IdleResult) float64 { return float64(i.RSS1KiB) / 1024 }))},
			figIdleKiB,
			{ID: "idle_pss", Title: "KiB of PSS per idle tunnel", Lower: true, Prec: 1, value: field("idle", idleGet(func(i *IdleResult) float64 { return i.PSSKiBPerTunnel }))},
			{ID: "idle_fds0", Title: "fds at 0", Lower: true, Prec: 0, value: field("idle", idleGet(func(i *IdleResult) float64 { return float64(i.FDs0) }))},
			figIdleFDs,
		}, Note: "3,000 tunnels to an echo origin, each proven with one byte each way, then held idle; RSS (VmRSS), PSS (smaps_rollup) and /proc/PID/fd read after a one-second settle, summed over the proxy's processes. For a proxy that forks (Dante), RSS counts shared pages once per process; PSS is the fair memory figure there."},
	}
}

// goal is one row of the issue's target table.
type goal struct {
	Figure   figure
	Kind     string  // egressd's series kind for this row
	Limit    float64 // met when egressd's median is at most this
	Issue    string  // the issue's best-peer text
	Headline bool    // shown in the chart
	// Relative, when set, makes the target relative to the best peer of
	// the same run: met when egressd's median is at most Relative times
	// the peer's (Limit is then unused).
	Relative float64
}

func goals() []goal {
	return []goal{
		{Figure: figBulkCPU, Kind: kindConnect, Limit: 0.45, Issue: "smokescreen ~0.8, Squid ~1.1", Headline: true},
		{Figure: figTunCPU, Kind: kindConnect, Limit: 0.15, Issue: "Squid ~0.21, smokescreen ~0.29", Headline: true},
		{Figure: figTLSCPU, Kind: kindConnect, Limit: 0.30, Issue: "Squid ~0.44, smokescreen ~0.65", Headline: true},
		{Figure: figFwdCPU, Kind: kindHTTP, Limit: 0.085, Issue: "Squid ~0.095, smokescreen ~0.14", Headline: true},
		{Figure: figIdleKiB, Kind: kindConnect, Limit: 12, Issue: "smokescreen ~25, Squid ~31", Headline: true},
		{Figure: figIdleFDs, Kind: kindConnect, Limit: 2, Issue: "naive splice relay 6", Headline: true},
		{Figure: figBulkCPU, Kind: kindSOCKS5, Limit: 0.45, Issue: "Dante ~1.0"},
		{Figure: figTunCPU, Kind: kindSOCKS5, Limit: 0.15, Issue: "Dante ~0.4"},
		{Figure: figTLSCPU, Kind: kindSOCKS5, Limit: 0.30, Issue: "(SOCKS5 remote DNS)"},
		{Figure: figCacheHitCPU, Kind: kindCache, Relative: 0.5, Issue: "Squid's memory cache"},
		{Figure: figInspSessCPU, Kind: kindInspect, Relative: 1, Issue: "Squid ssl-bump"},
		{Figure: figInspGiBCPU, Kind: kindInspect, Relative: 1, Issue: "Squid ssl-bump"},
	}
}

// dataset holds every result, grouped for the report.
type dataset struct {
	runs map[runKey]runResults
}

func newDataset(results []*Result) *dataset {
	d := &dataset{runs: map[runKey]runResults{}}
	for _, r := range results {
		k := runKey{seriesKey{r.Label, r.Kind}, r.Run}
		if d.runs[k] == nil {
			d.runs[k] = runResults{}
		}
		d.runs[k][r.Scenario] = r
	}
	return d
}

// series returns the series with the given kinds, in report order: direct
// first, then egressd, then the peers by name.
func (d *dataset) series(kinds []string) []seriesKey {
	seen := map[seriesKey]bool{}
	var out []seriesKey
	for k := range d.runs {
		if slices.Contains(kinds, k.Kind) && !seen[k.seriesKey] {
			seen[k.seriesKey] = true
			out = append(out, k.seriesKey)
		}
	}
	rank := func(s seriesKey) int {
		switch {
		case s.Label == kindDirect:
			return 0
		case s.Label == "egressd":
			return 1
		case isEgressd(s.Label):
			return 2
		}
		return 3
	}
	slices.SortFunc(out, func(a, b seriesKey) int {
		if c := rank(a) - rank(b); c != 0 {
			return c
		}
		if c := strings.Compare(a.Label, b.Label); c != 0 {
			return c
		}
		return strings.Compare(a.Kind, b.Kind)
	})
	return out
}

// values returns a figure's value for each run of a series, in run order.
func (d *dataset) values(s seriesKey, f figure) []float64 {
	var runs []int
	for k := range d.runs {
		if k.seriesKey == s {
			runs = append(runs, k.Run)
		}
	}
	slices.Sort(runs)
	var vs []float64
	for _, n := range runs {
		if v, ok := f.value(d.runs[runKey{s, n}]); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	return vs
}

// pairedRatio is the median, over the rounds both series ran, of a's value
// divided by b's in the same round. The proxies run alternately within a
// round, so noise that drifts between rounds (other tenants of the host)
// touches both values of a pair alike, and the paired ratio resists it
// better than the ratio of the two medians.
func (d *dataset) pairedRatio(a, b seriesKey, f figure) (float64, bool) {
	var ratios []float64
	for k, ra := range d.runs {
		if k.seriesKey != a {
			continue
		}
		rb, ok := d.runs[runKey{b, k.Run}]
		if !ok {
			continue
		}
		va, oka := f.value(ra)
		vb, okb := f.value(rb)
		if !oka || !okb || vb == 0 || math.IsNaN(va) || math.IsNaN(vb) || math.IsInf(va, 0) || math.IsInf(vb, 0) {
			continue
		}
		ratios = append(ratios, va/vb)
	}
	return median(ratios)
}

// best returns the best median of a figure among the peers (every label but
// egressd and direct) of the given kinds.
func (d *dataset) best(f figure, kinds []string) (seriesKey, float64, bool) {
	var (
		bk    seriesKey
		bv    float64
		found bool
	)
	for _, s := range d.series(kinds) {
		if isEgressd(s.Label) || s.Label == kindDirect {
			continue
		}
		m, ok := median(d.values(s, f))
		if !ok {
			continue
		}
		if !found || (f.Lower && m < bv) || (!f.Lower && m > bv) {
			bk, bv, found = s, m, true
		}
	}
	return bk, bv, found
}

// peerKinds are the kinds whose peers compete with an egressd series: a
// CONNECT figure against other CONNECT proxies, SOCKS5 against SOCKS5.
func peerKinds(kind string) []string { return []string{kind} }

// comparison says how egressd's median compares with the best peer's. The
// ratio is egressd / peer; the verdict accounts for the figure's direction
// and, for CPU figures, counts a lead under 15% as none.
func comparison(f figure, egressd, peer float64) (ratio float64, verdict string) {
	if peer == 0 || egressd == 0 {
		return math.NaN(), "n/a"
	}
	ratio = egressd / peer
	adv := ratio // > 1: egressd is better
	if f.Lower {
		adv = 1 / ratio
	}
	margin := 1.05
	if f.CPU {
		margin = 1.15
	}
	switch {
	case adv >= margin:
		return ratio, "lead"
	case adv <= 1/margin:
		return ratio, "behind"
	case f.CPU:
		return ratio, "no lead (<15%)"
	default:
		return ratio, "even (<5%)"
	}
}

// format renders v with the figure's precision.
func (f figure) format(v float64) string { return strconv.FormatFloat(v, 'f', f.Prec, 64) }

// cell renders a series' runs as "median (r1, r2, ...)".
func (f figure) cell(vs []float64) string {
	m, ok := median(vs)
	if !ok {
		return "–"
	}
	if len(vs) == 1 {
		return f.format(m)
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = f.format(v)
	}
	return "**" + f.format(m) + "** (" + strings.Join(parts, ", ") + ")"
}

// reportMeta is the free text the bench script hands the report.
type reportMeta struct {
	Lines    []string // "key: value" lines shown under Machine and run
	Commands string   // shown verbatim in a code block
	GoBench  string   // `go test -bench` output of the policy package
	PProf    string   // `go tool pprof -top` output for egressd under the benchmark
	Inline   string   // `go test -bench BenchmarkInlineTunnel` output (test/), every run's
	Notes    string   // hand-written analysis, included verbatim
}

// writeMarkdown writes the whole benchmark document.
func writeMarkdown(w io.Writer, d *dataset, meta reportMeta, svgName string) error {
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p("# egressd benchmarks\n\n")
	p("Generated by `egressbench report` from the JSON results of `make bench` (scripts/bench.sh). ")
	p("Each cell is the **median** over runs followed by every run's value in run order; the proxies ran alternately ")
	p("(direct, egressd, Squid, smokescreen, Dante, then again), the proxy pinned to CPU 0 and the load tool to CPU 1. ")
	p("CPU figures are the proxy process's utime+stime from /proc (10 ms resolution) per unit of work; ")
	p("on this noisy shared machine a lead under 15%% on a CPU figure counts as none.\n\n")

	p("## How to run it\n\n")
	p("- `make bench` (scripts/bench.sh, as root): installs Squid and Dante (Debian packages) and smokescreen (`go install` into a scratch directory), ")
	p("builds egressd and `cmd/egressbench`, runs everything on loopback (but the in-line gateway's Go benchmark, in network namespaces), and rewrites this file and benchmarks.svg; about 18-20 minutes for 3 alternating runs (the cache and DLP sessions included). ")
	p("`BENCH_QUICK=1 make bench` takes about 5-6 minutes with smaller counts. Raw JSON results go to `results/bench/`.\n")
	p("- One proxy by hand: `egressbench run -kind connect|http|socks5|cache|inspect|direct -proxy 127.0.0.1:PORT -proxy-pid PID -label NAME -json out.json`; ")
	p("`egressbench run -h` lists the counts and time bounds. The origins' ports and the DNS address are flags, so a proxy config can name them before the tool starts.\n")
	p("- Report from any set of results: `egressbench report -in 'results/bench/*.json' -out docs/benchmarks.md -svg docs/benchmarks.svg`.\n\n")

	p("## Machine and run\n\n")
	for _, l := range machineLines() {
		p("- %s\n", l)
	}
	for _, l := range meta.Lines {
		p("- %s\n", l)
	}
	p("\n")

	p("## egressd against the issue's targets\n\n")
	if svgName != "" {
		p("![headline figures](%s)\n\n", svgName)
	}
	p("| figure | best peer (issue) | best peer (this run) | egressd | egressd / best peer | target | met? |\n")
	p("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, t := range goals() {
		name := t.Figure.Title
		switch {
		case t.Kind == kindSOCKS5:
			name = "SOCKS5: " + name
		case t.Kind == kindConnect && t.Figure.CPU:
			name += " (CONNECT)"
		case t.Kind == kindInspect:
			name = "TLS inspection: " + name
		case t.Kind == kindCache:
			name = "HTTP cache: " + name
		}
		peer := "–"
		bk, bv, okPeer := d.best(t.Figure, peerKinds(t.Kind))
		if okPeer {
			peer = fmt.Sprintf("%s %s", bk.Label, t.Figure.format(bv))
		}
		eg, okEg := median(d.values(seriesKey{"egressd", t.Kind}, t.Figure))
		egs, ratio, met := "not measured", "–", "not measured"
		limit, target := t.Limit, "≤ "+strconv.FormatFloat(t.Limit, 'f', -1, 64)
		if t.Relative > 0 {
			target = "≤ " + strconv.FormatFloat(t.Relative, 'f', -1, 64) + " × best peer"
			if okPeer {
				limit = t.Relative * bv
				target += " = " + t.Figure.format(limit)
			}
		}
		if okEg && (t.Relative == 0 || okPeer) {
			egs = t.Figure.format(eg)
			// Judged on the value as shown, so that 2.0003 fds (one stray
			// descriptor over 3,000 tunnels) reads as 2.00 and meets ≤ 2.
			met = "missed"
			if shown, _ := strconv.ParseFloat(t.Figure.format(eg), 64); shown <= limit {
				met = "met"
			}
			if okPeer {
				r, v := comparison(t.Figure, eg, bv)
				ratio = fmt.Sprintf("%.2f (%s)", r, v)
			}
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", name, t.Issue, peer, egs, ratio, target, met)
	}
	gb, gbMet := goBenchCell(meta.GoBench)
	p("| policy decision, 100,000-host policy (`go test -bench`) | – | – | %s | – | ≤ 1 µs, 0 allocs | %s |\n\n", gb, gbMet)
	d.chainTable(p)
	writeInlineTable(p, meta.Inline)

	writeDLPTargets(p, d)

	p("## egressd's ratio to the best peer, every figure\n\n")
	p("Ratio = egressd's median / the best peer's median of the same client kind (lower is better for CPU, latency and memory; higher for rates); the verdict is the ratio's. Paired = the median over rounds of egressd's value / the same peer's value in the same round, which resists noise that drifts between rounds.\n\n")
	p("| section | figure | kind | egressd | best peer | ratio | paired | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, sec := range sections() {
		for _, f := range sec.Figures {
			if f.Info {
				continue
			}
			for _, k := range sec.Kinds {
				if k == kindDirect {
					continue
				}
				eg, ok := median(d.values(seriesKey{"egressd", k}, f))
				if !ok {
					continue
				}
				bk, bv, ok := d.best(f, peerKinds(k))
				if !ok {
					p("| %s | %s | %s | %s | – | – | – | no peer |\n", shortTitle(sec.Title), f.Title, k, f.format(eg))
					continue
				}
				r, v := comparison(f, eg, bv)
				paired := "–"
				if pr, ok := d.pairedRatio(seriesKey{"egressd", k}, bk, f); ok {
					paired = fmt.Sprintf("%.2f", pr)
				}
				p("| %s | %s | %s | %s | %s %s | %.2f | %s | %s |\n", shortTitle(sec.Title), f.Title, k, f.format(eg), bk.Label, f.format(bv), r, paired, v)
			}
		}
	}
	p("\n")

	for _, sec := range sections() {
		// A series run for some scenarios only (egressd-sysdns) shows in
		// the tables it has figures for.
		rows := slices.DeleteFunc(d.series(sec.Kinds), func(s seriesKey) bool {
			return !slices.ContainsFunc(sec.Figures, func(f figure) bool { return len(d.values(s, f)) > 0 })
		})
		if len(rows) == 0 {
			continue
		}
		p("## %s\n\n", sec.Title)
		if sec.Note != "" {
			p("%s\n\n", sec.Note)
		}
		p("| proxy |")
		for _, f := range sec.Figures {
			p(" %s |", f.Title)
		}
		p("\n| --- |%s\n", strings.Repeat(" --- |", len(sec.Figures)))
		for _, s := range rows {
			p("| %s |", s)
			for _, f := range sec.Figures {
				p(" %s |", f.cell(d.values(s, f)))
			}
			p("\n")
		}
		p("\n")
	}

	if probs := d.problems(); len(probs) > 0 {
		p("## Errors and time bounds\n\n")
		for _, l := range probs {
			p("- %s\n", l)
		}
		p("\n")
	}
	if meta.GoBench != "" {
		p("## Policy matching (`go test -bench` in policy/)\n\n```\n%s\n```\n\n", strings.TrimSpace(meta.GoBench))
	}
	if meta.Notes != "" {
		p("%s\n\n", strings.TrimSpace(meta.Notes))
	}
	if meta.PProf != "" {
		p("## Where egressd spends CPU (pprof under the benchmark)\n\n")
		p("CPU profiles taken from egressd's admin listener (`admin.pprof: true`) in separate sessions after the measured runs, ")
		p("so the profiler's own cost is not in the tables above.\n\n```\n%s\n```\n\n", strings.TrimSpace(meta.PProf))
	}
	if meta.Commands != "" {
		p("## Commands and configs\n\n```sh\n%s\n```\n", strings.TrimSpace(meta.Commands))
	}
	return bw.Flush()
}

// chainLabel is egressd with every allowed tunnel handed to a parent proxy
// (policy.default_via), the parent a minimal CONNECT proxy (egressbench
// parent) on the load tool's CPU.
const chainLabel = "egressd-chain"

// chainLimit is issue 22's target: egressd's CPU per new tunnel through a
// parent within 10% of its direct tunnels.
const chainLimit = 1.10

// chainFigures are the figures compared between egressd's direct tunnels
// and its tunnels through a parent.
func chainFigures() []figure {
	return []figure{
		figTunCPU,
		{ID: "tunp_cpu", Title: "CPU s per 1,000 new tunnels at a fixed rate", Lower: true, Prec: 3, CPU: true, value: field("tunnels_paced", cpuPer1000)},
		figTLSCPU,
		{ID: "tlsp_cpu", Title: "CPU s per 1,000 new TLS tunnels by name at a fixed rate", Lower: true, Prec: 3, CPU: true, value: field("tls_tunnels_paced", cpuPer1000)},
	}
}

// chainTable writes the comparison of egressd's tunnels through a parent
// proxy with its direct ones, when the results have both.
func (d *dataset) chainTable(p func(string, ...any)) {
	direct, chain := seriesKey{"egressd", kindConnect}, seriesKey{chainLabel, kindConnect}
	var rows []string
	for _, f := range chainFigures() {
		dv, ok1 := median(d.values(direct, f))
		cv, ok2 := median(d.values(chain, f))
		if !ok1 || !ok2 || dv <= 0 {
			continue
		}
		ratio := cv / dv
		paired := "–"
		if pr, ok := d.pairedRatio(chain, direct, f); ok {
			paired = fmt.Sprintf("%.2f", pr)
		}
		met := "missed"
		if ratio <= chainLimit {
			met = "met"
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %.2f | %s | ≤ %.2f | %s |\n", f.Title, f.format(dv), f.format(cv), ratio, paired, chainLimit, met))
	}
	if len(rows) == 0 {
		return
	}
	p("## Tunnels through a parent proxy (upstream_proxies)\n\n")
	p("%s is egressd with `policy.default_via` naming a parent, so every CONNECT tunnel goes through it: ", chainLabel)
	p("egressd decides, sends `CONNECT host:port` to the parent, reads its answer, runs the guard and relays. ")
	p("The parent is a minimal CONNECT proxy (`egressbench parent`), a process of its own pinned to the load tool's CPU: ")
	p("the CPU figures are egressd's own, the parent's excluded. In the closed-loop rows that core, shared with the parent, sets the rate: ")
	p("through the parent it is lower and egressd, given less work, idles (and wakes) more between tunnels; the fixed-rate rows compare at equal load. ")
	p("Target (issue 22): within 10%% of egressd's direct tunnels.\n\n")
	p("| figure | egressd, direct | %s | ratio | paired | target | met? |\n| --- | --- | --- | --- | --- | --- | --- |\n", chainLabel)
	for _, r := range rows {
		p("%s", r)
	}
	p("\n")
	d.floorTable(p, direct, chain)
}

// floorTable writes, when the results have the floor's phases (egressbench
// floor), what a tunnel through the parent costs egressd over a direct one
// at the fixed rate, beside the least any process pays on this machine for
// one request and its answer with another process: the wait for the
// parent's answer that a parent cannot do without.
func (d *dataset) floorTable(p func(string, ...any), direct, chain seriesKey) {
	fk := seriesKey{floorLabel, floorKind}
	us := func(s seriesKey, scenario string, run int) (float64, bool) {
		rr, ok := d.runs[runKey{s, run}]
		if !ok {
			return 0, false
		}
		v, ok := field(scenario, cpuPer1000)(rr)
		return v * 1000, ok // CPU s per 1,000 = ms per op
	}
	var dir, chn, extra, floor, loop, beyond []float64
	for k := range d.runs {
		if k.seriesKey != fk {
			continue
		}
		pv, ok1 := us(fk, floorPaced, k.Run)
		tv, ok2 := us(fk, floorTick, k.Run)
		lv, ok3 := us(fk, floorLoop, k.Run)
		dv, ok4 := us(direct, "tunnels_paced", k.Run)
		cv, ok5 := us(chain, "tunnels_paced", k.Run)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || dv <= 0 {
			continue
		}
		dir, chn, extra = append(dir, dv), append(chn, cv), append(extra, cv-dv)
		floor, loop = append(floor, pv-tv), append(loop, lv)
		beyond = append(beyond, (cv-dv-(pv-tv))/dv)
	}
	if len(dir) == 0 {
		return
	}
	med := func(v []float64) float64 { m, _ := median(v); return m }
	p("What a parent cannot avoid, measured in the same rounds (`egressbench floor`, a process of its own on egressd's CPU with egressd's environment, ")
	p("against one on the parent's CPU that answers each read with a CONNECT success line): the CPU one process pays for writing a CONNECT head ")
	p("and reading the answer of another process on a kept connection, woken at the fixed rate (minus the same wake-ups without the exchange), ")
	p("and back to back on several connections, the process never idle. At a fixed rate the process sleeps while the other answers, and waking it costs ")
	p("more than the system calls; egressd through a parent has that wait on every tunnel. Medians over %d rounds, CPU µs per tunnel or exchange:\n\n", len(dir))
	p("| at the fixed rate (tunnels_paced) | µs |\n| --- | --- |\n")
	p("| egressd, direct tunnel | %.1f |\n", med(dir))
	p("| %s, tunnel through the parent | %.1f |\n", chainLabel, med(chn))
	p("| extra per tunnel through the parent | %.1f |\n", med(extra))
	p("| the floor: one CONNECT and its answer with another process, at the same rate | %.1f |\n", med(floor))
	p("| the floor with the process never idle (exchange_loop) | %.1f |\n", med(loop))
	p("| egressd's extra beyond the floor, share of a direct tunnel (paired) | %.1f%% |\n\n", 100*med(beyond))
}

func shortTitle(t string) string {
	if i := strings.IndexAny(t, "(:"); i > 0 {
		return strings.TrimSpace(t[:i])
	}
	return t
}

// problems lists the scenarios that had errors or stopped at their time
// bound, so a reader can discount them.
func (d *dataset) problems() []string {
	var out []string
	keys := make([]runKey, 0, len(d.runs))
	for k := range d.runs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b runKey) int {
		return strings.Compare(fmt.Sprint(a.seriesKey, a.Run), fmt.Sprint(b.seriesKey, b.Run))
	})
	for _, k := range keys {
		rr := d.runs[k]
		for _, s := range allScenarios {
			r, ok := rr[s]
			if !ok {
				continue
			}
			if r.Errors > 0 {
				out = append(out, fmt.Sprintf("%s run %d %s: %d errors (first: %s)", k.seriesKey, k.Run, s, r.Errors, r.FirstError))
			}
			if r.TimeBound {
				out = append(out, fmt.Sprintf("%s run %d %s: stopped at its time bound after %.1fs", k.seriesKey, k.Run, s, r.Seconds))
			}
		}
	}
	return out
}

// machineLines describes the machine the report is generated on (the one
// the benchmark ran on, when make bench runs both).
func machineLines() []string {
	lines := []string{fmt.Sprintf("report generated: %s", time.Now().UTC().Format(time.RFC3339))}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n, model := 0, ""
		for l := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				n++
			case "model name":
				model = strings.TrimSpace(v)
			}
		}
		lines = append(lines, fmt.Sprintf("CPU: %d × %s (/proc/cpuinfo); nproc %d", n, model, runtime.NumCPU()))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			lines = append(lines, "memory: "+strings.Join(strings.Fields(l)[1:], " "))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		lines = append(lines, "kernel: "+strings.TrimSpace(string(b)))
	}
	lines = append(lines, "report built with "+runtime.Version())
	return lines
}

var goBenchLine = regexp.MustCompile(`^(Benchmark\S*100[kK]\S*)\s+\d+\s+([\d.]+) ns/op(?:\s+[\d.]+ B/op\s+(\d+) allocs/op)?`)

// goBenchCell finds the 100,000-host benchmark in `go test -bench` output
// and states its time and allocations per operation.
func goBenchCell(out string) (value, met string) {
	for l := range strings.SplitSeq(out, "\n") {
		m := goBenchLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		allocs := m[3]
		if allocs == "" {
			return fmt.Sprintf("%s: %.0f ns/op (allocs not reported)", m[1], ns), "not measured"
		}
		met = "missed"
		if a, _ := strconv.Atoi(allocs); ns <= 1000 && a == 0 {
			met = "met"
		}
		return fmt.Sprintf("%s: %.0f ns/op, %s allocs/op", m[1], ns, allocs), met
	}
	return "not measured", "not measured"
}

// readResults reads JSON-lines result files.
func readResults(paths []string) ([]*Result, error) {
	var out []*Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		for i, l := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			var r Result
			if err := json.Unmarshal(l, &r); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", p, i+1, err)
			}
			out = append(out, &r)
		}
	}
	return out, nil
}

// reportMain is the report subcommand.
func reportMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "results/*.json", "comma-separated globs of JSON-lines result files")
	out := fs.String("out", "docs/benchmarks.md", "Markdown output ('-' for stdout)")
	svg := fs.String("svg", "docs/benchmarks.svg", "SVG chart output ('' for none)")
	metaFile := fs.String("meta", "", "file of 'key: value' lines describing the run")
	cmdFile := fs.String("commands", "", "file with the commands the run used")
	goBench := fs.String("gobench", "", "file with `go test -bench` output of the policy package")
	pprofFile := fs.String("pprof", "", "file with `go tool pprof -top` output for egressd")
	inlineFile := fs.String("inline", "", "file with `go test -bench BenchmarkInlineTunnel` output (test/), the in-line gateway's figure")
	notesFile := fs.String("notes", "", "Markdown file of hand-written analysis to include")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var paths []string
	for g := range strings.SplitSeq(*in, ",") {
		m, err := filepath.Glob(g)
		if err != nil {
			return err
		}
		paths = append(paths, m...)
	}
	results, err := readResults(paths)
	if err != nil {
		return err
	}
	var meta reportMeta
	readOpt := func(name string) (string, error) {
		if name == "" {
			return "", nil
		}
		b, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return string(b), err
	}
	m, err := readOpt(*metaFile)
	if err != nil {
		return err
	}
	for l := range strings.SplitSeq(m, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			meta.Lines = append(meta.Lines, l)
		}
	}
	if meta.Commands, err = readOpt(*cmdFile); err != nil {
		return err
	}
	if meta.GoBench, err = readOpt(*goBench); err != nil {
		return err
	}
	if meta.PProf, err = readOpt(*pprofFile); err != nil {
		return err
	}
	if meta.Notes, err = readOpt(*notesFile); err != nil {
		return err
	}
	if meta.Inline, err = readOpt(*inlineFile); err != nil {
		return err
	}
	// A run of the in-line benchmark alone (BENCH_KINDS=inline) has no
	// egressbench results.
	if len(paths) == 0 && strings.TrimSpace(meta.Inline) == "" {
		return fmt.Errorf("no result files match %q", *in)
	}
	d := newDataset(results)
	if *svg != "" {
		var buf bytes.Buffer
		if err := writeSVG(&buf, d); err != nil {
			return err
		}
		if err := os.WriteFile(*svg, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	rel := ""
	if *svg != "" {
		rel = filepath.Base(*svg)
	}
	if err := writeMarkdown(&buf, d, meta, rel); err != nil {
		return err
	}
	if *out == "-" {
		_, err = stdout.Write(buf.Bytes())
		return err
	}
	return os.WriteFile(*out, buf.Bytes(), 0o644)
}

// writeDLPTargets writes the DLP issue's targets: the built-in detectors
// against uninspected forwarding, egressd's ICAP path against Squid's with
// the same c-icap service, and the memory an inspected upload holds.
func writeDLPTargets(p func(string, ...any), d *dataset) {
	eg := seriesKey{"egressd", kindHTTP}
	dlp := seriesKey{labelDLP, kindHTTP}
	icap := seriesKey{labelICAP, kindHTTP}
	squid := seriesKey{labelSquidICAP, kindHTTP}
	if len(d.values(dlp, figPost1MCPU)) == 0 && len(d.values(icap, figPost1MCPU)) == 0 {
		return
	}
	p("## DLP targets (issue 17)\n\n")
	p("| target | measured (median; paired ratio) | limit | met? |\n| --- | --- | --- | --- |\n")
	ratioRow := func(name string, a, b seriesKey, f figure, limit float64, strict bool) {
		va, oka := median(d.values(a, f))
		vb, okb := median(d.values(b, f))
		if !oka || !okb || vb == 0 {
			p("| %s | not measured | | not measured |\n", name)
			return
		}
		r := va / vb
		paired := "–"
		if pr, ok := d.pairedRatio(a, b, f); ok {
			paired = fmt.Sprintf("%.2f", pr)
			r = pr
		}
		met, lim := "missed", "≤ "+strconv.FormatFloat(limit, 'f', -1, 64)
		if r <= limit && (!strict || r < limit) {
			met = "met"
		}
		if strict {
			lim = "< " + strconv.FormatFloat(limit, 'f', -1, 64)
		}
		if math.IsInf(limit, 1) {
			met, lim = "–", "–"
		}
		p("| %s | %s %s / %s %s = %.2f (paired %s) | %s | %s |\n", name, a.Label, f.format(va), b.Label, f.format(vb), va/vb, paired, lim, met)
	}
	ratioRow("built-in detectors: CPU per 1 MiB POST, inspected / uninspected", dlp, eg, figPost1MCPU, 1.5, false)
	ratioRow("built-in detectors: CPU per 1 KiB POST, inspected / uninspected (context)", dlp, eg, figPost1KCPU, math.Inf(1), false)
	ratioRow("ICAP path: CPU per 1 MiB POST, egressd / Squid, same c-icap", icap, squid, figPost1MCPU, 1, true)
	ratioRow("ICAP path: CPU per 1 KiB POST, egressd / Squid, same c-icap", icap, squid, figPost1KCPU, 1, true)
	if v, ok := median(d.values(dlp, figHeldKiB)); ok {
		p("| memory per in-flight inspected 1 MiB upload (max_scan_bytes 1 MiB = 1024 KiB) | %s KiB = 1024 + %s KiB | max_scan_bytes + a constant (≤ 256 KiB) | %s |\n",
			figHeldKiB.format(v), figHeldKiB.format(v-1024), map[bool]string{true: "met", false: "missed"}[v <= 1024+256])
	}
	p("\n")
}
