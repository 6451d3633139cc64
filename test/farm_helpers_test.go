package test

// The farm fixture: egressd instances behind a real HAProxy in TCP mode,
// configured from deployments/farm/haproxy.cfg.tmpl, inside one network
// namespace with the origins and the DNS server; and a continuous load of
// real clients that know HAProxy's address only. The farm tests and the
// PROXY protocol tests use it.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/test/testenv"
)

// Addresses and timings of the farm. Everything is on the namespace's
// loopback. HAProxy connects to the instances from lbIP, so an instance
// that logs any other client address got it from a PROXY header; clients
// that need an address of their own connect from opsIP.
const (
	farmTLSIP  = "127.0.0.2"  // HTTPS echo origin: allowed.test, new.test, ops.test, web.test
	farmHTTPIP = "127.0.0.3"  // plain HTTP echo origin "plain": plain.test, ops.test, web.test
	farmDNSIP  = "127.0.0.53" // the farm's DNS server
	farmLBIP   = "127.0.2.1"  // HAProxy's frontends (HTTP, SOCKS5, stats)
	lbIP       = "127.0.0.10" // HAProxy's source address towards the instances
	opsIP      = "127.0.0.77" // a client address of its own
	// farmInstances is the default number of egressd instances.
	farmInstances = 3
	// HAProxy health-checks /readyz every farmCheckInter; farmCheckFall
	// failures take an instance out, two successes bring it back.
	farmCheckInter = 200 * time.Millisecond
	farmCheckFall  = 2
	// farmDrainDelay is timeouts.drain_delay: well above inter x fall, so
	// HAProxy has taken a draining instance out before its listeners
	// close, with room for a busy machine.
	farmDrainDelay = 2 * time.Second
	// farmDrain is timeouts.drain.
	farmDrain = 5 * time.Second
)

// The load's bounds: each worker stops after loadMaxPerWorker requests or
// loadMaxDuration, whichever comes first; one request gets at most
// loadRequestTimeout. A worker sends at most one request per loadPace.
const (
	loadWorkers        = 4
	loadMaxPerWorker   = 5000
	loadMaxDuration    = 2 * time.Minute
	loadRequestTimeout = 15 * time.Second
	loadPace           = 10 * time.Millisecond
)

// lbFarmOpts shape a farm; the zero value is three instances behind
// HAProxy without the PROXY protocol, with the load's policy.
type lbFarmOpts struct {
	// instances is the number of egressd instances (0: farmInstances).
	instances int
	// proxyProtocol makes HAProxy send PROXY v2 headers (and v1 on the
	// extra frontend lbHTTPv1), and the instances require them from lbIP.
	proxyProtocol bool
	// configure, when set, changes instance i's config after the farm's
	// own settings.
	configure func(f *lbFarm, i int, c *testenv.Config)
}

// lbFarm is egressd instances behind HAProxy in one namespace.
type lbFarm struct {
	opts              lbFarmOpts
	ns                *testenv.Netns
	ca                *testenv.CA
	caFile            string
	dns               *testenv.DNSServer
	tlsPort, httpPort int
	// inst are the instances; instance i is HAProxy's server
	// "egressd<i+1>" and listens on 127.0.1.<i+1>.
	inst   []*testenv.Proc
	listen []testenv.Listen // per instance: its listen section
	lb     *testenv.HAProxy
	// HAProxy's frontends: what clients use. lbHTTPv1 (send-proxy, PROXY
	// v1) exists with opts.proxyProtocol only.
	lbHTTP, lbHTTPv1, lbSOCKS, lbStats string
}

// newLBFarm starts the origins, the DNS server, the instances and HAProxy,
// and returns once HAProxy sees every instance UP in both backends.
func newLBFarm(t *testing.T, opts lbFarmOpts) *lbFarm {
	t.Helper()
	if opts.instances == 0 {
		opts.instances = farmInstances
	}
	f := &lbFarm{opts: opts}
	f.ns = testenv.NewNetns(t)
	f.ca = testenv.NewCA(t)
	f.caFile = f.ca.WritePEM(t.TempDir())
	tlsOrigin := testenv.TLSOriginIn(t, f.ns, f.ca, farmTLSIP, "allowed.test", "new.test", "ops.test", "web.test")
	httpOrigin := testenv.HTTPOriginIn(t, f.ns, farmHTTPIP, "plain")
	f.tlsPort, f.httpPort = tlsOrigin.Port(), httpOrigin.Port()
	f.dns = testenv.NewDNSServerIn(t, f.ns, farmDNSIP)
	tlsIP, httpIP := netip.MustParseAddr(farmTLSIP), netip.MustParseAddr(farmHTTPIP)
	f.dns.Set("allowed.test", 60, tlsIP)
	f.dns.Set("new.test", 60, tlsIP)
	f.dns.Set("plain.test", 60, httpIP)
	f.dns.Set("ops.test", 60, tlsIP, httpIP)
	f.dns.Set("web.test", 60, tlsIP, httpIP)

	for i := 0; i < opts.instances; i++ {
		f.listen = append(f.listen, testenv.Listeners(t, f.ns, fmt.Sprintf("127.0.1.%d", i+1)))
		f.inst = append(f.inst, (&testenv.Egressd{Netns: f.ns}).StartConfig(t, f.config(t, i)))
	}
	// Stop the instances together (each drains for its drain_delay)
	// rather than one after the other in testenv's cleanups, which then
	// find them gone. This runs after HAProxy's stop, registered below.
	t.Cleanup(func() { f.stopInstances(t) })

	f.lbHTTP, f.lbSOCKS, f.lbStats = f.ns.FreeAddr(t, farmLBIP), f.ns.FreeAddr(t, farmLBIP), f.ns.FreeAddr(t, farmLBIP)
	if opts.proxyProtocol {
		f.lbHTTPv1 = f.ns.FreeAddr(t, farmLBIP)
	}
	f.lb = testenv.StartHAProxy(t, f.ns, f.haproxyConfig(t))
	waitUntil(t, 15*time.Second, func() bool {
		for i := range f.inst {
			if f.serverStatus(t, i) != "UP" {
				return false
			}
		}
		return true
	}, func() string { return "HAProxy does not see every instance UP:\n" + f.statsSummary(t) })
	return f
}

// config is instance i's config: its listeners, the farm's DNS server and
// drain timings, and the load's policy (rule "load": allowed.test and
// plain.test), then opts.configure's changes.
func (f *lbFarm) config(t *testing.T, i int) *testenv.Config {
	t.Helper()
	c := testenv.NewConfig(t)
	c.Listen = f.listen[i]
	if f.opts.proxyProtocol {
		c.Listen.ProxyProtocol = true
		c.Listen.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(lbIP + "/32")}
	}
	c.DNS.Servers = []string{f.dns.Addr()}
	c.DNS.Timeout = 2 * time.Second
	c.Timeouts.Handshake = 5 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Timeouts.DrainDelay = farmDrainDelay
	c.Timeouts.Drain = farmDrain
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.TLSPorts = []int{f.tlsPort}
	c.Policy.Rules = []testenv.Rule{
		{Name: "load", Hosts: []string{"allowed.test", "plain.test"}, Ports: []int{f.tlsPort, f.httpPort}, AllowRanges: []string{"127.0.0.0/24"}},
	}
	c.Log.Access = true
	c.Log.Level = "info"
	if f.opts.configure != nil {
		f.opts.configure(f, i, c)
	}
	return c
}

// haproxyConfig renders deployments/farm/haproxy.cfg.tmpl, the local
// farm's own config, with one server line per instance in each backend.
// The server lines set this test's faster checks and HAProxy's source
// address. With the PROXY protocol a frontend of the test's own, lbHTTPv1,
// sends v1 headers.
func (f *lbFarm) haproxyConfig(t *testing.T) string {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("..", "deployments", "farm", "haproxy.cfg.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	sendProxy := ""
	if f.opts.proxyProtocol {
		sendProxy = " send-proxy-v2"
	}
	var httpServers, socksServers, v1Servers strings.Builder
	for i, l := range f.listen {
		_, adminPort, _ := net.SplitHostPort(l.Admin)
		opts := fmt.Sprintf("check port %s inter %dms fall %d rise 2 source %s%s",
			adminPort, farmCheckInter.Milliseconds(), farmCheckFall, lbIP, sendProxy)
		fmt.Fprintf(&httpServers, "    server %s %s %s\n", farmServer(i), l.HTTP, opts)
		fmt.Fprintf(&socksServers, "    server %s %s %s\n", farmServer(i), l.SOCKS5, opts)
		fmt.Fprintf(&v1Servers, "    server %s %s send-proxy source %s\n", farmServer(i), l.HTTP, lbIP)
	}
	vars := map[string]string{
		"HTTP_BIND":      f.lbHTTP,
		"SOCKS5_BIND":    f.lbSOCKS,
		"STATS_BIND":     f.lbStats,
		"STATS_SOCKET":   filepath.Join(t.TempDir(), "haproxy.sock"),
		"HTTP_SERVERS":   strings.TrimSuffix(httpServers.String(), "\n"),
		"SOCKS5_SERVERS": strings.TrimSuffix(socksServers.String(), "\n"),
	}
	var unknown []string
	cfg := os.Expand(string(tmpl), func(name string) string {
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, name)
		}
		return v
	})
	if unknown != nil {
		t.Fatalf("haproxy.cfg.tmpl has placeholders the test does not know: %v", unknown)
	}
	if f.opts.proxyProtocol {
		cfg += fmt.Sprintf("\nfrontend egressd_http_v1\n    bind %s\n    default_backend egressd_http_v1\n\nbackend egressd_http_v1\n%s",
			f.lbHTTPv1, v1Servers.String())
	}
	// The kill test finds every failed request in the session log, also
	// one that HAProxy cut before it read a byte from the client: those
	// are "null" sessions, which the template does not log.
	return strings.Replace(cfg, "    option dontlognull\n", "    no option dontlognull\n", 1)
}

// farmServer is instance i's server name in HAProxy.
func farmServer(i int) string { return fmt.Sprintf("egressd%d", i+1) }

// farmBackends are the template's backends, each with every instance.
var farmBackends = []string{"egressd_http", "egressd_socks5"}

// stopInstances SIGTERMs every instance still running and waits for them,
// bounded.
func (f *lbFarm) stopInstances(t *testing.T) {
	for _, p := range f.inst {
		if _, done := p.ExitCode(); !done {
			p.Signal(syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(farmDrainDelay + farmDrain + 10*time.Second)
	defer timer.Stop()
	for _, p := range f.inst {
		select {
		case <-p.Done():
		case <-timer.C:
			t.Errorf("egressd (pid %d) did not stop after SIGTERM; testenv kills it", p.PID())
			return
		}
	}
}

// sessionFor returns the session log of request r: the session HAProxy
// accepted from r's client port on r's frontend while r ran, waiting
// (bounded) for its line, which comes when the session ends. Client ports
// are reused, so the port alone does not identify it.
func (f *lbFarm) sessionFor(t *testing.T, r loadResult) (testenv.HAProxySession, bool) {
	t.Helper()
	backend := "egressd_http"
	if r.kind == loadSOCKS {
		backend = "egressd_socks5"
	}
	// The accept date has millisecond precision.
	from, to := r.start.Add(-5*time.Millisecond), r.end.Add(5*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, s := range f.lb.Sessions() {
			if s.ClientPort == r.port && s.Backend == backend && !s.Accepted.Before(from) && !s.Accepted.After(to) {
				return s, true
			}
		}
		if time.Now().After(deadline) {
			return testenv.HAProxySession{}, false
		}
		<-tick.C
	}
}

// stats reads HAProxy's stats of the template's backends.
func (f *lbFarm) stats(t *testing.T) []testenv.HAProxyStat {
	t.Helper()
	var out []testenv.HAProxyStat
	for _, s := range f.lb.Stats(t, f.lbStats) {
		if slices.Contains(farmBackends, s.Backend) {
			out = append(out, s)
		}
	}
	return out
}

// serverStatus is instance i's status in HAProxy: the common status of
// its rows in both backends, or "mixed: ..." when they differ.
func (f *lbFarm) serverStatus(t *testing.T, i int) string {
	t.Helper()
	var st []string
	for _, s := range f.stats(t) {
		if s.Server == farmServer(i) {
			st = append(st, s.Status)
		}
	}
	if len(st) != len(farmBackends) {
		return fmt.Sprintf("in %d backends", len(st))
	}
	if st[0] != st[1] {
		return "mixed: " + strings.Join(st, ", ")
	}
	return st[0]
}

// sessionCounts is the sessions HAProxy sent to each instance, both
// backends together.
func (f *lbFarm) sessionCounts(t *testing.T) []int {
	t.Helper()
	n := make([]int, len(f.inst))
	for _, s := range f.stats(t) {
		for i := range n {
			if s.Server == farmServer(i) {
				n[i] += s.Sessions
			}
		}
	}
	return n
}

func (f *lbFarm) statsSummary(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, s := range f.stats(t) {
		fmt.Fprintf(&b, "%s/%s %s check=%s sessions=%d\n", s.Backend, s.Server, s.Status, s.Check, s.Sessions)
	}
	return b.String()
}

// waitServerDown waits until HAProxy has taken instance i out of both
// backends and returns when it saw that (within a poll of 20ms).
func (f *lbFarm) waitServerDown(t *testing.T, i int, timeout time.Duration) time.Time {
	t.Helper()
	waitUntil(t, timeout, func() bool { return f.serverStatus(t, i) == "DOWN" },
		func() string { return "HAProxy did not take " + farmServer(i) + " out:\n" + f.statsSummary(t) })
	return time.Now()
}

// downEvent waits (bounded) for HAProxy's event line that took instance i
// out of backend, which gives the reason, and returns it.
func (f *lbFarm) downEvent(t *testing.T, backend string, i int) string {
	t.Helper()
	prefix := fmt.Sprintf("Server %s/%s is DOWN", backend, farmServer(i))
	var line string
	waitUntil(t, 10*time.Second, func() bool {
		for _, l := range strings.Split(f.lb.Events(), "\n") {
			if _, ev, ok := strings.Cut(l, prefix); ok {
				line = prefix + ev
				return true
			}
		}
		return false
	}, func() string { return "HAProxy logged no event " + prefix + ":\n" + f.lb.Events() })
	return line
}

// waitServed waits until every instance has logged at least n allowed
// requests: the load reaches all of them.
func (f *lbFarm) waitServed(t *testing.T, n int) {
	t.Helper()
	waitUntil(t, 30*time.Second, func() bool {
		for _, p := range f.inst {
			if accessCount(p, map[string]any{"decision": "allow"}) < n {
				return false
			}
		}
		return true
	}, func() string {
		var c []int
		for _, p := range f.inst {
			c = append(c, accessCount(p, map[string]any{"decision": "allow"}))
		}
		return fmt.Sprintf("allowed requests per instance %v, want %d each\n%s", c, n, f.statsSummary(t))
	})
}

// admin sends one GET to instance i's admin listener and returns the
// body.
func (f *lbFarm) admin(t *testing.T, i int, path string) string {
	t.Helper()
	tr := &http.Transport{DialContext: f.ns.DialContext, Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + f.listen[i].Admin + path)
	if err != nil {
		t.Fatalf("%s %s: %v", farmServer(i), path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", farmServer(i), path, err)
	}
	return string(body)
}

// openWork sums instance i's egressd_active_tunnels and
// egressd_client_connections over their listeners.
func (f *lbFarm) openWork(t *testing.T, i int) float64 {
	t.Helper()
	var sum float64
	for _, l := range strings.Split(f.admin(t, i, "/metrics"), "\n") {
		if !strings.HasPrefix(l, "egressd_active_tunnels{") && !strings.HasPrefix(l, "egressd_client_connections{") {
			continue
		}
		fs := strings.Fields(l)
		v, err := strconv.ParseFloat(fs[len(fs)-1], 64)
		if err != nil {
			t.Fatalf("%s /metrics: %q: %v", farmServer(i), l, err)
		}
		sum += v
	}
	return sum
}

// metricValue returns the value of series (name and labels as exposed)
// in a /metrics text, 0 when absent.
func metricValue(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// waitIdle waits until every instance still running has no tunnel and no
// client connection left: once the load has stopped and HAProxy has passed
// on the clients' closes, nothing may outlive them.
func (f *lbFarm) waitIdle(t *testing.T) {
	t.Helper()
	var busy []string
	waitUntil(t, 10*time.Second, func() bool {
		busy = busy[:0]
		for i, p := range f.inst {
			if _, exited := p.ExitCode(); exited {
				continue
			}
			if n := f.openWork(t, i); n != 0 {
				busy = append(busy, fmt.Sprintf("%s: %v tunnels and client connections", farmServer(i), n))
			}
		}
		return len(busy) == 0
	}, func() string { return "connections outlive the stopped load: " + strings.Join(busy, "; ") })
}

// --- clients ---

// portSlotKey is the context key of the slot where the load's dialer
// stores the local port of the connection it opened to HAProxy, so a
// failed request can be found in HAProxy's session log.
type portSlotKey struct{}

// recordPort wraps dial: the local port of each connection goes into the
// context's port slot, if any.
func recordPort(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			if slot, ok := ctx.Value(portSlotKey{}).(*atomic.Int64); ok {
				if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
					slot.Store(int64(a.Port))
				}
			}
		}
		return c, err
	}
}

// ctxDialer adapts a dial function to golang.org/x/net/proxy's forward
// dialer.
type ctxDialer func(context.Context, string, string) (net.Conn, error)

func (d ctxDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), loadRequestTimeout)
	defer cancel()
	return d(ctx, network, addr)
}

func (d ctxDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d(ctx, network, addr)
}

// farmClients are real clients of the farm: Go's http.Transport with
// HAProxy's HTTP frontend as its proxy (CONNECT for https, absolute URIs
// for http), and one whose connections go through HAProxy's SOCKS5
// frontend. Neither keeps connections alive: every request is a new
// connection for HAProxy to balance.
type farmClients struct {
	proxied *http.Transport
	socks   *http.Transport
}

func (f *lbFarm) clients(t *testing.T) *farmClients {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: f.ca.CertPool()}
	dial := recordPort(f.ns.DialContext)
	proxied := &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: f.lbHTTP}),
		DialContext:       dial,
		TLSClientConfig:   tlsConf,
		DisableKeepAlives: true,
	}
	sd, err := proxy.SOCKS5("tcp", f.lbSOCKS, nil, ctxDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	socks := &http.Transport{
		Proxy:             nil,
		DialContext:       sd.(proxy.ContextDialer).DialContext,
		TLSClientConfig:   tlsConf,
		DisableKeepAlives: true,
	}
	c := &farmClients{proxied: proxied, socks: socks}
	t.Cleanup(c.close)
	return c
}

func (c *farmClients) close() {
	c.proxied.CloseIdleConnections()
	c.socks.CloseIdleConnections()
}

// Load request kinds.
const (
	loadConnect = "connect" // https through CONNECT on HAProxy's HTTP frontend
	loadHTTP    = "http"    // absolute-URI http on HAProxy's HTTP frontend
	loadSOCKS   = "socks5"  // https through HAProxy's SOCKS5 frontend
)

var loadKinds = []string{loadConnect, loadHTTP, loadSOCKS}

// loadResult is one request of the load.
type loadResult struct {
	worker     int
	kind       string
	url        string
	start, end time.Time
	port       int // local port of the connection to HAProxy; 0 if none was opened
	err        error
}

func (r loadResult) String() string {
	return fmt.Sprintf("worker %d %s %s [%s..%s] port %d: %v", r.worker, r.kind, r.url,
		r.start.Format("15:04:05.000"), r.end.Format("15:04:05.000"), r.port, r.err)
}

// get sends one GET of kind for host and path and checks that the origin
// answered it: status 200 and its echo of the path.
func (f *lbFarm) get(c *farmClients, kind, host, path string) loadResult {
	r := loadResult{kind: kind, start: time.Now()}
	// The HTTPS origin serves every https name and calls itself
	// allowed.test; the plain one is "plain".
	tr, scheme, port, origin := c.proxied, "https", f.tlsPort, "allowed.test"
	switch kind {
	case loadHTTP:
		scheme, port, origin = "http", f.httpPort, "plain"
	case loadSOCKS:
		tr = c.socks
	}
	r.url = fmt.Sprintf("%s://%s:%d%s", scheme, host, port, path)
	slot := new(atomic.Int64)
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), portSlotKey{}, slot), loadRequestTimeout)
	defer cancel()
	r.err = fetchEcho(ctx, tr, r.url, origin, path)
	r.end = time.Now()
	r.port = int(slot.Load())
	return r
}

func fetchEcho(ctx context.Context, tr *http.Transport, target, origin, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s (X-Egress-Denied: %q)", resp.Status, resp.Header.Get("X-Egress-Denied"))
	}
	e, err := testenv.ParseEcho(body)
	if err != nil {
		return fmt.Errorf("not an echo: %w: %q", err, body)
	}
	if e.Origin != origin || e.Path != path {
		return fmt.Errorf("answered by %q for %q, want %q for %q", e.Origin, e.Path, origin, path)
	}
	return nil
}

// farmLoad is continuous load on the farm: workers in a loop, each
// sending one request at a time on a new connection, rotating through
// CONNECT, absolute-URI http and SOCKS5.
type farmLoad struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	clients  *farmClients

	mu      sync.Mutex
	results []loadResult
}

// startLoad starts workers; the load runs until Stop (also on cleanup),
// bounded by loadMaxPerWorker requests per worker and loadMaxDuration.
func (f *lbFarm) startLoad(t *testing.T, workers int) *farmLoad {
	t.Helper()
	l := &farmLoad{stop: make(chan struct{}), clients: f.clients(t)}
	deadline := time.Now().Add(loadMaxDuration)
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			pace := time.NewTicker(loadPace)
			defer pace.Stop()
			for n := 0; n < loadMaxPerWorker && time.Now().Before(deadline); n++ {
				select {
				case <-l.stop:
					return
				case <-pace.C:
				}
				kind, host := loadKinds[(w+n)%len(loadKinds)], "allowed.test"
				if kind == loadHTTP {
					host = "plain.test"
				}
				r := f.get(l.clients, kind, host, fmt.Sprintf("/load/w%d/%d", w, n))
				r.worker = w
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { l.Stop() })
	return l
}

// Stop ends the load, waits for the workers and returns every result.
func (l *farmLoad) Stop() []loadResult {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.clients.close()
	return l.snapshot()
}

func (l *farmLoad) snapshot() []loadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loadResult(nil), l.results...)
}

// waitEachWorker waits until every one of workers has completed n
// successful requests that started after since. Workers send one request
// at a time, so every request started before since has ended by then.
func (l *farmLoad) waitEachWorker(t *testing.T, workers, n int, since time.Time) {
	t.Helper()
	count := func() []int {
		c := make([]int, workers)
		for _, r := range l.snapshot() {
			if r.err == nil && r.start.After(since) {
				c[r.worker]++
			}
		}
		return c
	}
	waitUntil(t, 45*time.Second, func() bool {
		for _, c := range count() {
			if c < n {
				return false
			}
		}
		return true
	}, func() string {
		return fmt.Sprintf("successful requests per worker since %s: %v, want %d each; failures:\n%s",
			since.Format("15:04:05.000"), count(), n, failureList(l.snapshot(), 20))
	})
}

// failedResults returns the failed results.
func failedResults(rs []loadResult) []loadResult {
	var out []loadResult
	for _, r := range rs {
		if r.err != nil {
			out = append(out, r)
		}
	}
	return out
}

// failureList lists up to limit failures of rs.
func failureList(rs []loadResult, limit int) string {
	var b strings.Builder
	fs := failedResults(rs)
	for i, r := range fs {
		if i == limit {
			fmt.Fprintf(&b, "... and %d more\n", len(fs)-limit)
			break
		}
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}

// loadSummary counts results by kind.
func loadSummary(rs []loadResult) string {
	ok, failed := map[string]int{}, map[string]int{}
	for _, r := range rs {
		if r.err == nil {
			ok[r.kind]++
		} else {
			failed[r.kind]++
		}
	}
	var parts []string
	for _, k := range loadKinds {
		parts = append(parts, fmt.Sprintf("%s %d ok/%d failed", k, ok[k], failed[k]))
	}
	return fmt.Sprintf("%d requests (%s)", len(rs), strings.Join(parts, ", "))
}
