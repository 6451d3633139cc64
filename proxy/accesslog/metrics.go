package accesslog

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp"
)

// Listeners, decisions and reasons known in advance: their series exist from
// start at zero so dashboards and alerts see them before the first event.
var (
	knownListeners = []policy.Listener{policy.ListenerHTTP, policy.ListenerConnect, policy.ListenerSOCKS5, policy.ListenerTransparent}
	knownDecisions = []policy.Verdict{policy.Allow, policy.Deny, policy.Report}
	knownReasons   = append([]policy.Reason{policy.ReasonNone}, append(append([]policy.Reason{}, policy.DenyReasons...),
		policy.ReasonBadRequest, policy.ReasonDNSError, policy.ReasonDialError, policy.ReasonUpstreamProxy, policy.ReasonLimit,
		policy.ReasonDLPUnavailable, policy.ReasonTimeout)...)
	knownLimits  = []string{LimitMaxConnections, LimitMaxConnectionsPerClient}
	knownSockets = []policy.Listener{policy.ListenerHTTP, policy.ListenerSOCKS5, policy.ListenerTransparent}
)

// Limit label values of egressd_limit_rejections_total: the config keys of
// the limits that refuse connections.
const (
	LimitMaxConnections          = "max_connections"
	LimitMaxConnectionsPerClient = "max_connections_per_client"
)

// Metrics are egressd's Prometheus families. Labels are bounded: listener,
// decision, reason, direction, result, source and rule (rule names come from
// config).
type Metrics struct {
	Requests      *prometheus.CounterVec
	ActiveTunnels *prometheus.GaugeVec
	Bytes         *prometheus.CounterVec
	DialDuration  *prometheus.HistogramVec
	// TunnelDuration is observed when a tunnel closes, HTTPDuration when a
	// forwarded HTTP request ends (both from the access record).
	TunnelDuration *prometheus.HistogramVec
	HTTPDuration   prometheus.Histogram
	DNSDuration    *prometheus.HistogramVec
	DNSStale       prometheus.Counter
	Reloads        *prometheus.CounterVec
	ConfigInfo     *prometheus.GaugeVec
	RuleMatches    *prometheus.CounterVec
	LimitRejects   *prometheus.CounterVec
	ClientConns    *prometheus.GaugeVec
	ReloadTime     prometheus.Gauge
	Panics         prometheus.Counter
	AuthChecks     *prometheus.CounterVec
	DLPFindings    *prometheus.CounterVec
	BuildInfo      *prometheus.GaugeVec
	Draining       prometheus.Gauge
	DLPICAP        *prometheus.CounterVec
	Upstream       *prometheus.CounterVec

	// The HTTP cache: requests by how it answered them and bytes it
	// answered (both counted from the access record), and what its store
	// does (through HTTPCache).
	CacheRequests      *prometheus.CounterVec
	CacheServedBytes   prometheus.Counter
	CacheCollapsed     prometheus.Counter
	CacheStoredBytes   prometheus.Gauge
	CacheStoredObjects prometheus.Gauge
	CacheEvictions     prometheus.Counter

	// TLS inspection: leaf certificates issued, and client handshakes by
	// result.
	InspectLeaves     prometheus.Counter
	InspectHandshakes *prometheus.CounterVec

	// Cached children for the hot path: no label hashing per request.
	bytesUp, bytesDown map[policy.Listener]prometheus.Counter
	requests           map[requestKey]prometheus.Counter
	active             map[policy.Listener]prometheus.Gauge
	dns                map[string]prometheus.Observer
	dial               map[string]prometheus.Observer // result
	tunnelDur          map[policy.Listener]prometheus.Observer
	auth               map[[2]string]prometheus.Counter // source, result
	cache              map[string]prometheus.Counter    // result

	rulesMu sync.Mutex
	rules   map[string]bool // rule series that exist (see SetRules)

	upstreamMu  sync.Mutex
	upstream    map[string]bool                                  // parent proxies with series (see SetUpstreamProxies)
	upstreamHot atomic.Pointer[map[[2]string]prometheus.Counter] // their children, by proxy and result
}

type requestKey struct {
	l policy.Listener
	v policy.Verdict
	r policy.Reason
}

// NewMetrics creates the families and registers them, with the Go and
// process collectors, on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_requests_total",
			Help: "Requests and tunnels finished, by front end, decision and reason.",
		}, []string{"listener", "decision", "reason"}),
		ActiveTunnels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_active_tunnels",
			Help: "Tunnels currently open, by front end.",
		}, []string{"listener"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_bytes_total",
			Help: "Bytes relayed; direction up is client to origin, down is origin to client.",
		}, []string{"listener", "direction"}),
		DialDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "egressd_dial_duration_seconds",
			Help:    "Time to connect to the origin's pinned addresses (every attempt of one dial), by result: success, refused (an attempt was refused, none timed out), timeout (an attempt ran out of timeouts.connect), error (anything else: unreachable, reset, the client gone).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		TunnelDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "egressd_tunnel_duration_seconds",
			Help:    "How long tunnels lasted (CONNECT, SOCKS5, HTTP upgrades), by front end: observed at close, from the request's arrival, as the access line's duration_ms.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400},
		}, []string{"listener"}),
		HTTPDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "egressd_http_request_duration_seconds",
			Help:    "How long forwarded HTTP requests (absolute-URI, allowed or reported, cache hits included) took, from the request's arrival to the end of the response, as the access line's duration_ms.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		DNSDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "egressd_dns_duration_seconds",
			Help:    "Time to resolve a destination name, by result (hit, negative_hit, miss, not_found, stale, error).",
			Buckets: []float64{.00001, .0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		DNSStale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_dns_stale_answers_total",
			Help: "Expired DNS answers served because their refresh failed (timeout, SERVFAIL), within dns.stale_ttl (RFC 8767).",
		}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_config_reloads_total",
			Help: "Config reloads by result (success, error).",
		}, []string{"result"}),
		ConfigInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_config_info",
			Help: "The config in force: 1 for its sha256.",
		}, []string{"sha256"}),
		RuleMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_rule_matches_total",
			Help: "Requests decided by each rule (rule names come from the config).",
		}, []string{"rule"}),
		LimitRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_limit_rejections_total",
			Help: "Connections refused by a limit, by front end and limit.",
		}, []string{"listener", "limit"}),
		ClientConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_client_connections",
			Help: "Client connections open, by listener socket (http, socks5); compare with limits.max_connections.",
		}, []string{"listener"}),
		ReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "egressd_config_last_reload_success_timestamp_seconds",
			Help: "Unix time at which the config in force was loaded.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_recovered_panics_total",
			Help: "Panics recovered at a connection boundary (each one is a bug).",
		}),
		AuthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_auth_checks_total",
			Help: "Credential checks, by source (cache: a remembered answer; bcrypt: checked now; shared: waited for the same check running) and result (ok, fail, overload: refused after no bcrypt slot freed within timeouts.handshake, see auth.max_concurrent_checks). bcrypt checks cost tens of milliseconds of CPU each.",
		}, []string{"source", "result"}),
		DLPFindings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_dlp_findings_total",
			Help: "DLP findings, by detector (built-in, custom pattern name, or a body verdict such as oversize) and profile mode (enforce, report).",
		}, []string{"detector", "mode"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "egressd_build_info",
			Help: "The egressd build running: 1 for its version and Go version.",
		}, []string{"version", "goversion"}),
		Draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "egressd_draining",
			Help: "1 from SIGTERM until the process exits (/readyz answers 503), else 0.",
		}),
		CacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_cache_requests_total",
			Help: "Forwarded requests through the HTTP cache, by result (hit: answered from storage; miss: the origin answered; revalidated: answered from storage after a 304).",
		}, []string{"result"}),
		CacheServedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_cache_served_bytes_total",
			Help: "Bytes sent to clients from the HTTP cache's storage (hits and revalidations): bytes the origin did not send again.",
		}),
		CacheCollapsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_cache_collapsed_total",
			Help: "Requests answered from a concurrent request's fetch of the same URL instead of a fetch of their own.",
		}),
		CacheStoredBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "egressd_cache_stored_bytes",
			Help: "Bytes the HTTP cache holds (bodies, header fields, per-object overhead and the hit path's prepared header blocks); at most cache.http.max_bytes.",
		}),
		CacheStoredObjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "egressd_cache_stored_objects",
			Help: "Responses the HTTP cache holds.",
		}),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_cache_evictions_total",
			Help: "Responses the HTTP cache dropped, least recently used first, to stay within cache.http.max_bytes.",
		}),
		DLPICAP: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_dlp_icap_requests_total",
			Help: "Requests a DLP profile asked the ICAP service about, by result: allow (204 or unchanged), modify (forwarded as modified), block (the service's response went to the client), error (the service failed or timed out; dlp.icap.failure decided).",
		}, []string{"result"}),
		Upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_upstream_proxy_requests_total",
			Help: "Connections through parent proxies (upstream_proxies), by parent and result: ok (a tunnel, or a connection for forwarded requests), down (one URL did not accept the connection; the next was tried), unavailable (none did), refused (the parent answered with a status that is no success), error (it gave no usable answer).",
		}, []string{"proxy", "result"}),
		InspectLeaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "egressd_inspect_leaves_issued_total",
			Help: "Leaf certificates issued for inspected tunnels (one per name per validity period; the rest come from the cache).",
		}),
		InspectHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "egressd_inspect_handshakes_total",
			Help: "Client TLS handshakes of inspected tunnels, by result (ok, failed: most often a client that does not trust the CA, or pins certificates).",
		}, []string{"result"}),
		rules:     map[string]bool{},
		bytesUp:   map[policy.Listener]prometheus.Counter{},
		bytesDown: map[policy.Listener]prometheus.Counter{},
		requests:  map[requestKey]prometheus.Counter{},
		active:    map[policy.Listener]prometheus.Gauge{},
		dns:       map[string]prometheus.Observer{},
		dial:      map[string]prometheus.Observer{},
		tunnelDur: map[policy.Listener]prometheus.Observer{},
		auth:      map[[2]string]prometheus.Counter{},
		cache:     map[string]prometheus.Counter{},
		upstream:  map[string]bool{},
	}
	reg.MustRegister(m.Requests, m.ActiveTunnels, m.Bytes, m.DialDuration, m.TunnelDuration, m.HTTPDuration, m.DNSDuration, m.DNSStale,
		m.Reloads, m.ConfigInfo, m.RuleMatches, m.LimitRejects, m.ClientConns, m.ReloadTime, m.Panics, m.AuthChecks, m.DLPFindings, m.DLPICAP,
		m.BuildInfo, m.Draining, m.Upstream,
		m.CacheRequests, m.CacheServedBytes, m.CacheCollapsed, m.CacheStoredBytes, m.CacheStoredObjects, m.CacheEvictions,
		m.InspectLeaves, m.InspectHandshakes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, l := range knownSockets {
		m.ClientConns.WithLabelValues(string(l))
	}
	for _, res := range dlp.ICAPResults {
		m.DLPICAP.WithLabelValues(res)
	}
	for _, r := range DialResults {
		m.dial[r] = m.DialDuration.WithLabelValues(r)
	}
	for _, l := range knownListeners {
		m.active[l] = m.ActiveTunnels.WithLabelValues(string(l))
		m.tunnelDur[l] = m.TunnelDuration.WithLabelValues(string(l))
		for _, lim := range knownLimits {
			m.LimitRejects.WithLabelValues(string(l), lim)
		}
		m.bytesUp[l] = m.Bytes.WithLabelValues(string(l), "up")
		m.bytesDown[l] = m.Bytes.WithLabelValues(string(l), "down")
		for _, v := range knownDecisions {
			for _, r := range knownReasons {
				m.requests[requestKey{l, v, r}] = m.Requests.WithLabelValues(string(l), v.String(), string(r))
			}
		}
	}
	for _, r := range []string{"success", "error"} {
		m.Reloads.WithLabelValues(r)
	}
	for _, r := range []string{"hit", "negative_hit", "miss", "not_found", "stale", "error"} {
		m.dns[r] = m.DNSDuration.WithLabelValues(r)
	}
	for _, s := range []string{"cache", "bcrypt", "shared"} {
		for _, r := range []string{"ok", "fail"} {
			m.auth[[2]string{s, r}] = m.AuthChecks.WithLabelValues(s, r)
		}
	}
	for _, s := range []string{"bcrypt", "shared"} {
		m.auth[[2]string{s, "overload"}] = m.AuthChecks.WithLabelValues(s, "overload")
	}
	for _, r := range []string{CacheHit, CacheMiss, CacheRevalidated} {
		m.cache[r] = m.CacheRequests.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.InspectHandshakes.WithLabelValues(r)
	}
	return m
}

// SetBuild records the version of the running binary (main.version) and
// the Go version it was built with in egressd_build_info.
func (m *Metrics) SetBuild(version string) {
	if m == nil {
		return
	}
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
}

// SetDraining sets egressd_draining.
func (m *Metrics) SetDraining(on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.Draining.Set(v)
}

// HTTPCache returns the observer the HTTP cache reports its store to.
func (m *Metrics) HTTPCache() *CacheObserver { return &CacheObserver{m: m} }

// CacheObserver updates the HTTP cache's store metrics; it satisfies
// httpcache.Observer. A nil *Metrics makes it a no-op.
type CacheObserver struct{ m *Metrics }

// Collapsed counts a request answered from another request's fetch.
func (o *CacheObserver) Collapsed() {
	if o.m != nil {
		o.m.CacheCollapsed.Inc()
	}
}

// Stored sets what the store holds.
func (o *CacheObserver) Stored(bytes int64, objects int) {
	if o.m != nil {
		o.m.CacheStoredBytes.Set(float64(bytes))
		o.m.CacheStoredObjects.Set(float64(objects))
	}
}

// Evicted counts responses dropped to make room.
func (o *CacheObserver) Evicted(objects int) {
	if o.m != nil {
		o.m.CacheEvictions.Add(float64(objects))
	}
}

// ObserveAuth counts one credential check (see egressd_auth_checks_total).
func (m *Metrics) ObserveAuth(source, result string) {
	if m == nil {
		return
	}
	c, ok := m.auth[[2]string{source, result}]
	if !ok {
		c = m.AuthChecks.WithLabelValues(source, result)
	}
	c.Inc()
}

// ObserveDNS records one resolution.
func (m *Metrics) ObserveDNS(result string, d time.Duration) {
	if m == nil {
		return
	}
	o, ok := m.dns[result]
	if !ok {
		o = m.DNSDuration.WithLabelValues(result)
	}
	o.Observe(d.Seconds())
	if result == "stale" {
		m.DNSStale.Inc()
	}
}

// Result label values of egressd_dial_duration_seconds.
const (
	DialSuccess = "success"
	DialRefused = "refused"
	DialTimeout = "timeout"
	DialError   = "error"
)

// DialResults are the result label's values, in that order.
var DialResults = []string{DialSuccess, DialRefused, DialTimeout, DialError}

// ObserveDial records one dial (all of its attempts) and its error, nil on
// success.
func (m *Metrics) ObserveDial(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.dial[DialResult(err)].Observe(d.Seconds())
}

// DialResult is the result label of a dial that returned err: DialTimeout
// when an attempt timed out, else DialRefused when one was refused, else
// DialError; DialSuccess for nil.
func DialResult(err error) string {
	switch {
	case err == nil:
		return DialSuccess
	case timedOut(err):
		return DialTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return DialRefused
	}
	return DialError
}

// timedOut is apart from DialResult so that a success does not pay for the
// heap-allocated target of errors.As.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TunnelOpened and TunnelClosed track egressd_active_tunnels.
func (m *Metrics) TunnelOpened(l policy.Listener) {
	if m != nil {
		m.activeGauge(l).Inc()
	}
}

// TunnelClosed is the counterpart of TunnelOpened.
func (m *Metrics) TunnelClosed(l policy.Listener) {
	if m != nil {
		m.activeGauge(l).Dec()
	}
}

// activeGauge is the cached child for the known listeners (no label hashing
// per tunnel).
func (m *Metrics) activeGauge(l policy.Listener) prometheus.Gauge {
	if g, ok := m.active[l]; ok {
		return g
	}
	return m.ActiveTunnels.WithLabelValues(string(l))
}

// CountPanic counts a panic recovered at a connection boundary.
func (m *Metrics) CountPanic() {
	if m != nil {
		m.Panics.Inc()
	}
}

// SetConfig records the sha256 of the config now in force and the time it
// was loaded.
func (m *Metrics) SetConfig(sha string) {
	if m == nil {
		return
	}
	m.ConfigInfo.Reset()
	m.ConfigInfo.WithLabelValues(sha).Set(1)
	m.ReloadTime.SetToCurrentTime()
}

// SetRules makes egressd_rule_matches_total carry one series per rule of
// the config in force, at zero until the rule decides a request, and drops
// the series of rules a reload removed. Rule names come from the config, so
// the label stays bounded.
func (m *Metrics) SetRules(names []string) {
	if m == nil {
		return
	}
	m.rulesMu.Lock()
	defer m.rulesMu.Unlock()
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
		if !m.rules[n] {
			m.RuleMatches.WithLabelValues(n)
		}
	}
	for n := range m.rules {
		if !keep[n] {
			m.RuleMatches.DeleteLabelValues(n)
		}
	}
	m.rules = keep
}

// UpstreamResults are the result label values of
// egressd_upstream_proxy_requests_total (upstream.Results).
var UpstreamResults = []string{"ok", "down", "unavailable", "refused", "error"}

// SetUpstreamProxies makes egressd_upstream_proxy_requests_total carry a
// series at zero for each result of each parent of the config in force,
// and drops the series of parents a reload removed. Names come from the
// config, so the label stays bounded.
func (m *Metrics) SetUpstreamProxies(names []string) {
	if m == nil {
		return
	}
	m.upstreamMu.Lock()
	defer m.upstreamMu.Unlock()
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
		for _, r := range UpstreamResults {
			m.Upstream.WithLabelValues(n, r)
		}
	}
	for n := range m.upstream {
		if !keep[n] {
			for _, r := range UpstreamResults {
				m.Upstream.DeleteLabelValues(n, r)
			}
		}
	}
	m.upstream = keep
	hot := make(map[[2]string]prometheus.Counter, len(names)*len(UpstreamResults))
	for n := range keep {
		for _, r := range UpstreamResults {
			hot[[2]string{n, r}] = m.Upstream.WithLabelValues(n, r)
		}
	}
	m.upstreamHot.Store(&hot)
}

// ObserveUpstream counts one outcome of a connection through parent proxy.
func (m *Metrics) ObserveUpstream(proxy, result string) {
	if m == nil {
		return
	}
	if hot := m.upstreamHot.Load(); hot != nil {
		if c, ok := (*hot)[[2]string{proxy, result}]; ok {
			c.Inc()
			return
		}
	}
	m.Upstream.WithLabelValues(proxy, result).Inc()
}

// LimitRejected counts one connection refused by limit (LimitMaxConnections
// or LimitMaxConnectionsPerClient) on front end l.
func (m *Metrics) LimitRejected(l policy.Listener, limit string) {
	if m != nil {
		m.LimitRejects.WithLabelValues(string(l), limit).Inc()
	}
}

// ClientConnsAdd moves egressd_client_connections for listener socket l
// (ListenerHTTP or ListenerSOCKS5) by delta.
func (m *Metrics) ClientConnsAdd(l policy.Listener, delta int) {
	if m != nil {
		m.ClientConns.WithLabelValues(string(l)).Add(float64(delta))
	}
}

func (m *Metrics) observe(r *Record) {
	k := requestKey{r.Listener, r.Verdict(), r.FinalReason()}
	c, ok := m.requests[k]
	if !ok {
		c = m.Requests.WithLabelValues(string(k.l), k.v.String(), string(k.r))
	}
	c.Inc()
	switch {
	case r.opened:
		if o, ok := m.tunnelDur[r.Listener]; ok {
			o.Observe(time.Since(r.Start).Seconds())
		}
	case r.Listener == policy.ListenerHTTP && r.Verdict().Passes():
		m.HTTPDuration.Observe(time.Since(r.Start).Seconds())
	}
	// A request inside an inspected tunnel: its bytes are counted with
	// the tunnel's line (the TLS bytes), not twice.
	if !r.Inspected {
		m.countBytes(r)
	}
	if r.Decision.Rule != "" {
		m.RuleMatches.WithLabelValues(r.Decision.Rule).Inc()
	}
	if r.DLPICAP != "" {
		m.DLPICAP.WithLabelValues(r.DLPICAP).Inc()
	}
	if len(r.Findings) > 0 {
		mode := "enforce"
		if r.DLPReport {
			mode = "report"
		}
		for _, f := range r.Findings {
			m.DLPFindings.WithLabelValues(f.Detector, mode).Inc()
		}
	}
	if r.Cache != "" {
		if c, ok := m.cache[r.Cache]; ok {
			c.Inc()
		}
		if down := r.Down.Load(); down > 0 && (r.Cache == CacheHit || r.Cache == CacheRevalidated) {
			m.CacheServedBytes.Add(float64(down))
		}
	}
}

func (m *Metrics) countBytes(r *Record) {
	if up := r.Up.Load(); up > 0 {
		if c, ok := m.bytesUp[r.Listener]; ok {
			c.Add(float64(up))
		}
	}
	if down := r.Down.Load(); down > 0 {
		if c, ok := m.bytesDown[r.Listener]; ok {
			c.Add(float64(down))
		}
	}
}

// SetDLPDetectors makes egressd_dlp_findings_total carry a series at zero
// for each detector name a finding can have (both modes). Names come from
// the config, so the label stays bounded.
func (m *Metrics) SetDLPDetectors(names []string) {
	if m == nil {
		return
	}
	for _, n := range names {
		m.DLPFindings.WithLabelValues(n, "enforce")
		m.DLPFindings.WithLabelValues(n, "report")
	}
}

// InspectLeafIssued counts a leaf certificate issued.
func (m *Metrics) InspectLeafIssued() {
	if m != nil {
		m.InspectLeaves.Inc()
	}
}

// InspectHandshake counts a client handshake of an inspected tunnel by
// result (ok, failed).
func (m *Metrics) InspectHandshake(result string) {
	if m != nil {
		m.InspectHandshakes.WithLabelValues(result).Inc()
	}
}
