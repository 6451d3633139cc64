package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"
)

var (
	ip1  = netip.MustParseAddr("127.0.0.11")
	ip2  = netip.MustParseAddr("127.0.0.12")
	ip6a = netip.MustParseAddr("::1")
	ip6b = netip.MustParseAddr("fd00::12")
)

// metricLog records the Metrics hook's results.
type metricLog struct {
	mu      sync.Mutex
	results []string
}

func (m *metricLog) hook(result string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.results = append(m.results, result)
}

func (m *metricLog) get() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.results...)
}

// newTestResolver returns a resolver for servers with a fake clock.
func newTestResolver(t *testing.T, cfg ResolverConfig) (*Resolver, *fakeClock, *metricLog) {
	t.Helper()
	ml := &metricLog{}
	if cfg.Metrics == nil {
		cfg.Metrics = ml.hook
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	r, err := NewResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	r.cache.now = clk.now
	return r, clk, ml
}

func lookup(t *testing.T, r *Resolver, host string) ([]netip.Addr, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.LookupNetIP(ctx, host)
}

func mustLookup(t *testing.T, r *Resolver, host string) []netip.Addr {
	t.Helper()
	addrs, err := lookup(t, r, host)
	if err != nil {
		t.Fatalf("LookupNetIP(%q): %v", host, err)
	}
	return addrs
}

func TestResolverHonoursTTL(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.Set("cached.test", 30, ip1, ip6a)
	r, clk, ml := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})

	for range 3 {
		if d := diff([]netip.Addr{ip1, ip6a}, mustLookup(t, r, "cached.test")); d != "" {
			t.Fatalf("addrs (-want +got):\n%s", d)
		}
	}
	if q := srv.Queries("cached.test"); q != 2 {
		t.Errorf("queries = %d after 3 lookups within the TTL, want 2 (A+AAAA once)", q)
	}
	clk.advance(29 * time.Second)
	mustLookup(t, r, "CACHED.test.") // same name in another spelling: still cached
	if q := srv.Queries("cached.test"); q != 2 {
		t.Errorf("queries = %d before the TTL ran out, want 2", q)
	}
	clk.advance(time.Second)
	mustLookup(t, r, "cached.test")
	if q := srv.Queries("cached.test"); q != 4 {
		t.Errorf("queries = %d after the TTL ran out, want 4", q)
	}
	if d := diff([]string{ResultMiss, ResultHit, ResultHit, ResultHit, ResultMiss}, ml.get()); d != "" {
		t.Errorf("metric results (-want +got):\n%s", d)
	}
}

func TestResolverMaxTTLCaps(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.Set("long.test", 86400, ip1)
	r, clk, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}, MaxTTL: time.Minute})
	mustLookup(t, r, "long.test")
	clk.advance(time.Minute)
	mustLookup(t, r, "long.test")
	if q := srv.Queries("long.test"); q != 4 {
		t.Errorf("queries = %d, want 4: MaxTTL must cap the record TTL", q)
	}
}

func TestResolverTTLZeroRequeries(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	// A rebinding name: public-looking answer first, then another address.
	srv.SetSequence("rebind.test", 0, [][]netip.Addr{{ip1}, {ip2}})
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})

	var got [][]netip.Addr
	for range 3 {
		got = append(got, mustLookup(t, r, "rebind.test"))
	}
	if d := diff([][]netip.Addr{{ip1}, {ip2}, {ip1}}, got); d != "" {
		t.Errorf("successive answers (-want +got):\n%s", d)
	}
	if q := srv.QueriesOfType("rebind.test", dns.TypeA); q != 3 {
		t.Errorf("A queries = %d, want 3: TTL 0 must never be cached", q)
	}
}

func TestResolverNegativeCaching(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.Set("nodata.test", 30) // exists, no addresses
	r, clk, ml := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}, NegativeTTL: 10 * time.Second})

	for _, name := range []string{"missing.test", "nodata.test"} {
		t.Run(name, func(t *testing.T) {
			for range 2 {
				addrs, err := lookup(t, r, name)
				if !errors.Is(err, ErrNotFound) || addrs != nil {
					t.Fatalf("LookupNetIP(%q) = %v, %v; want ErrNotFound", name, addrs, err)
				}
			}
			if q := srv.Queries(name); q != 2 {
				t.Errorf("queries = %d after 2 lookups, want 2 (negative answer cached)", q)
			}
		})
	}
	clk.advance(10 * time.Second)
	srv.Set("missing.test", 30, ip1) // the name appears
	if d := diff([]netip.Addr{ip1}, mustLookup(t, r, "missing.test")); d != "" {
		t.Errorf("after NegativeTTL (-want +got):\n%s", d)
	}
	want := []string{ResultNotFound, ResultNegativeHit, ResultNotFound, ResultNegativeHit, ResultMiss}
	if d := diff(want, ml.get()); d != "" {
		t.Errorf("metric results (-want +got):\n%s", d)
	}
}

func TestResolverNegativeCachingDisabled(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}, NegativeTTL: -1})
	for range 2 {
		if _, err := lookup(t, r, "missing.test"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	}
	if q := srv.Queries("missing.test"); q != 4 {
		t.Errorf("queries = %d, want 4", q)
	}
}

func TestResolverCNAMEChain(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.SetCNAME("www.alias.test", 60, "edge.alias.test")
	srv.SetCNAME("edge.alias.test", 20, "origin.alias.test")
	srv.Set("origin.alias.test", 300, ip2, ip6b)
	srv.SetCNAME("dangling.test", 60, "nowhere.test")
	r, clk, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})

	if d := diff([]netip.Addr{ip2, ip6b}, mustLookup(t, r, "www.alias.test")); d != "" {
		t.Errorf("addrs (-want +got):\n%s", d)
	}
	// The chain's smallest TTL (20s) bounds the entry.
	clk.advance(20 * time.Second)
	mustLookup(t, r, "www.alias.test")
	if q := srv.Queries("www.alias.test"); q != 4 {
		t.Errorf("queries = %d, want 4: the entry must expire with the chain's smallest TTL", q)
	}
	if _, err := lookup(t, r, "dangling.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dangling CNAME: err = %v, want ErrNotFound", err)
	}
}

func TestResolverOrderAndUnmap(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	mapped := netip.MustParseAddr("::ffff:127.0.0.13")
	// AAAA first in the zone, a mapped address, and a duplicate of an A.
	srv.Set("mixed.test", 30, ip6b, mapped, ip2, ip1, netip.MustParseAddr("::ffff:127.0.0.12"))
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
	want := []netip.Addr{ip2, ip1, ip6b, netip.MustParseAddr("127.0.0.13")}
	for range 2 { // from upstream, then from the cache
		if d := diff(want, mustLookup(t, r, "mixed.test")); d != "" {
			t.Errorf("addrs (-want +got):\n%s", d)
		}
	}
}

func TestResolverReturnsCopies(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.Set("copy.test", 30, ip1)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
	mustLookup(t, r, "copy.test")[0] = ip2
	if d := diff([]netip.Addr{ip1}, mustLookup(t, r, "copy.test")); d != "" {
		t.Errorf("a caller's change reached the cache (-want +got):\n%s", d)
	}
}

func TestResolverIPLiterals(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
	tests := []struct {
		host string
		want netip.Addr
	}{
		{"127.0.0.1", netip.MustParseAddr("127.0.0.1")},
		{"[::1]", netip.MustParseAddr("::1")},
		{"::ffff:169.254.169.254", netip.MustParseAddr("169.254.169.254")},
		{"fe80::1%eth0", netip.MustParseAddr("fe80::1")},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if d := diff([]netip.Addr{tt.want}, mustLookup(t, r, tt.host)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	for _, bad := range []string{"", ".", "a..b", "bad name.test"} {
		if _, err := lookup(t, r, bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("LookupNetIP(%q) err = %v, want an invalid-name error", bad, err)
		}
	}
}

func TestResolverTCPFallbackOnTruncation(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	var many []netip.Addr
	for i := range 120 { // 120 A records do not fit a 1232-byte UDP answer
		many = append(many, netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(i%250 + 1)}))
	}
	srv.Set("big.test", 30, many...)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
	if d := diff(many, mustLookup(t, r, "big.test")); d != "" {
		t.Errorf("addrs (-want +got):\n%s", d)
	}
	// UDP A (truncated) + TCP A + UDP AAAA (NODATA fits).
	if q := srv.QueriesOfType("big.test", dns.TypeA); q != 2 {
		t.Errorf("A queries = %d, want 2 (UDP then TCP)", q)
	}
}

func TestResolverServersInOrder(t *testing.T) {
	failing := testenv.NewDNSServer(t)
	failing.SetRcode("fallback.test", dns.RcodeServerFailure)
	good := testenv.NewDNSServer(t)
	good.Set("fallback.test", 30, ip1)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{failing.Addr(), good.Addr()}})
	if d := diff([]netip.Addr{ip1}, mustLookup(t, r, "fallback.test")); d != "" {
		t.Errorf("addrs (-want +got):\n%s", d)
	}
	if q := failing.Queries("fallback.test"); q != 2 {
		t.Errorf("first server queries = %d, want 2", q)
	}

	// NXDOMAIN from the first server is an answer: the second is not asked.
	good.Set("gone.test", 30, ip1)
	if _, err := lookup(t, r, "gone.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound from the first server", err)
	}
	if q := good.Queries("gone.test"); q != 0 {
		t.Errorf("second server asked %d times after an NXDOMAIN", q)
	}
}

func TestResolverAllServersFail(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.SetRcode("broken.test", dns.RcodeServerFailure)
	r, _, ml := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
	for range 2 {
		_, err := lookup(t, r, "broken.test")
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want a non-not-found error", err)
		}
	}
	if q := srv.Queries("broken.test"); q != 4 {
		t.Errorf("queries = %d, want 4: failures are not cached", q)
	}
	if d := diff([]string{ResultError, ResultError}, ml.get()); d != "" {
		t.Errorf("metric results (-want +got):\n%s", d)
	}
}

// silentUDP is a UDP socket that reads queries and never answers.
func silentUDP(t *testing.T) (addr string, queries func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestResolverTimeout(t *testing.T) {
	addr, queries := silentUDP(t)
	r, _, ml := newTestResolver(t, ResolverConfig{Servers: []string{addr}, Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := lookup(t, r, "slow.test")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want a timeout error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("lookup took %v with a 100ms timeout", d)
	}
	if q := queries(); q < 2 {
		t.Errorf("silent server saw %d queries, want A and AAAA", q)
	}
	if d := diff([]string{ResultError}, ml.get()); d != "" {
		t.Errorf("metric results (-want +got):\n%s", d)
	}

	// A silent first server falls through to a working second one.
	good := testenv.NewDNSServer(t)
	good.Set("slow.test", 30, ip1)
	r2, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{addr, good.Addr()}, Timeout: 100 * time.Millisecond})
	if d := diff([]netip.Addr{ip1}, mustLookup(t, r2, "slow.test")); d != "" {
		t.Errorf("addrs (-want +got):\n%s", d)
	}
}

func TestResolverCallerContext(t *testing.T) {
	addr, _ := silentUDP(t)
	r, _, _ := newTestResolver(t, ResolverConfig{Servers: []string{addr}, Timeout: 300 * time.Millisecond})
	var waiting sync.WaitGroup
	waiting.Add(2)
	r.waitHook = waiting.Done

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.LookupNetIP(ctx, "slow.test")
		errc <- err
	}()
	// A second caller with no deadline shares the lookup.
	sharedErr := make(chan error, 1)
	go func() {
		_, err := r.LookupNetIP(context.Background(), "slow.test")
		sharedErr <- err
	}()
	waiting.Wait()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: err = %v, want context.Canceled", err)
	}
	// The shared lookup is not canceled with the first caller: the second
	// caller gets the lookup's own (timeout) error, once the lookup ended.
	if err := <-sharedErr; err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("sharing caller: err = %v, want the lookup's timeout error", err)
	}
}

// gatedDNS answers A queries for any name with ip1 (TTL 30) and AAAA with
// NODATA, but only once the gate is opened; it counts queries.
type gatedDNS struct {
	addr    string
	gate    chan struct{}
	open    func()
	mu      sync.Mutex
	queries int
}

func startGatedDNS(t *testing.T) *gatedDNS {
	t.Helper()
	g := &gatedDNS{gate: make(chan struct{})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		g.mu.Lock()
		g.queries++
		g.mu.Unlock()
		<-g.gate
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A:   net.IP(ip1.AsSlice()),
			})
		}
		w.WriteMsg(m)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() { close(g.gate) })
		srv.Shutdown()
		<-done
	})
	g.open = func() { once.Do(func() { close(g.gate) }) }
	return g
}

func TestResolverSingleflight(t *testing.T) {
	g := startGatedDNS(t)
	r, _, ml := newTestResolver(t, ResolverConfig{Servers: []string{g.addr}})
	const callers = 20
	var waiting sync.WaitGroup
	waiting.Add(callers)
	r.waitHook = waiting.Done

	type res struct {
		addrs []netip.Addr
		err   error
	}
	results := make(chan res, callers)
	for range callers {
		go func() {
			addrs, err := r.LookupNetIP(context.Background(), "popular.test")
			results <- res{addrs, err}
		}()
	}
	waiting.Wait() // every caller has joined the one shared lookup
	g.open()
	for range callers {
		got := <-results
		if got.err != nil {
			t.Fatalf("lookup: %v", got.err)
		}
		if d := diff([]netip.Addr{ip1}, got.addrs); d != "" {
			t.Errorf("addrs (-want +got):\n%s", d)
		}
	}
	g.mu.Lock()
	q := g.queries
	g.mu.Unlock()
	if q != 2 {
		t.Errorf("server saw %d queries for %d concurrent lookups, want 2 (A+AAAA once)", q, callers)
	}
	if n := len(ml.get()); n != callers {
		t.Errorf("metrics hook called %d times, want %d", n, callers)
	}
}

func TestNewResolverRejectsBadServer(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "dns.test", ""} {
		if _, err := NewResolver(ResolverConfig{Servers: []string{s}}); err == nil {
			t.Errorf("NewResolver accepted server %q", s)
		}
	}
}

func ExampleResolver() {
	r, err := NewResolver(ResolverConfig{Servers: []string{"127.0.0.1:5353"}, Timeout: time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	addrs, err := r.LookupNetIP(context.Background(), "192.0.2.1") // IP literals need no query
	fmt.Println(addrs, err)
	// Output: [192.0.2.1] <nil>
}

// diff is cmp.Diff with netip.Addr compared by value.
func diff(want, got any) string {
	return cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}))
}

func TestResolverMinTTL(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	srv.Set("zero.test", 0, ip1)
	srv.Set("short.test", 1, ip1)
	srv.Set("long.test", 30, ip1)
	r, clk, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}, MinTTL: 5 * time.Second})
	for _, n := range []string{"zero.test", "short.test", "long.test"} {
		mustLookup(t, r, n)
	}
	clk.advance(4 * time.Second)
	for _, n := range []string{"zero.test", "short.test", "long.test"} {
		mustLookup(t, r, n)
		if q := srv.Queries(n); q != 2 {
			t.Errorf("%s: %d queries within MinTTL, want 2", n, q)
		}
	}
	clk.advance(time.Second)
	for n, want := range map[string]int{"zero.test": 4, "short.test": 4, "long.test": 2} {
		mustLookup(t, r, n)
		if q := srv.Queries(n); q != want {
			t.Errorf("%s: %d queries after MinTTL, want %d", n, q, want)
		}
	}
}

// TestResolverServeStale: an expired answer whose refresh fails (SERVFAIL
// or a timeout) is served for up to StaleTTL past its expiry (RFC 8767),
// and asked again only every staleRetry; a not-found refresh is an answer,
// never hidden by a stale one; without StaleTTL the failure shows.
func TestResolverServeStale(t *testing.T) {
	srv := testenv.NewDNSServer(t)
	r, clk, ml := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}, StaleTTL: time.Minute})
	// Queries that must time out do so after 200 ms; those that must be
	// answered get the default 5 s, however loaded the machine.
	shortTimeout := func(t *testing.T) {
		up := r.upstream.Load()
		short := *up
		short.timeout = 200 * time.Millisecond
		r.upstream.Store(&short)
		t.Cleanup(func() { r.upstream.Store(up) })
	}

	for _, fail := range []string{"servfail", "timeout", "servfail-a-only"} {
		t.Run(fail, func(t *testing.T) {
			name := fail + ".test"
			srv.Set(name, 10, ip1)
			mustLookup(t, r, name)
			clk.advance(10 * time.Second)
			switch fail {
			case "servfail":
				srv.SetRcode(name, dns.RcodeServerFailure)
			case "timeout":
				shortTimeout(t)
				srv.SetSilent(name)
			case "servfail-a-only":
				// An IPv4-only name whose A refresh fails while AAAA
				// still answers NODATA: a failure, not a not-found.
				srv.SetRcode(name, dns.RcodeServerFailure, dns.TypeA)
			}
			before := len(ml.get())
			if d := diff([]netip.Addr{ip1}, mustLookup(t, r, name)); d != "" {
				t.Fatalf("stale answer (-want +got):\n%s", d)
			}
			q := srv.Queries(name)
			if q != 4 {
				t.Errorf("%d queries, want 4: the refresh must be tried", q)
			}
			clk.advance(staleRetry - time.Second)
			mustLookup(t, r, name)
			if got := srv.Queries(name); got != q {
				t.Errorf("asked again %d times within staleRetry of a failed refresh", got-q)
			}
			clk.advance(time.Second)
			mustLookup(t, r, name)
			if got := srv.Queries(name); got != q+2 {
				t.Errorf("%d queries after staleRetry, want %d", got, q+2)
			}
			if d := diff([]string{ResultStale, ResultStale, ResultStale}, ml.get()[before:]); d != "" {
				t.Errorf("metric results (-want +got):\n%s", d)
			}
			// 10s TTL + 60s stale: over.
			clk.advance(time.Minute - staleRetry)
			if _, err := lookup(t, r, name); err == nil {
				t.Error("served past StaleTTL")
			}
		})
	}

	t.Run("recovers", func(t *testing.T) {
		srv.Set("back.test", 10, ip1)
		mustLookup(t, r, "back.test")
		clk.advance(10 * time.Second)
		srv.SetRcode("back.test", dns.RcodeServerFailure)
		mustLookup(t, r, "back.test")
		srv.Set("back.test", 10, ip2)
		clk.advance(staleRetry)
		if d := diff([]netip.Addr{ip2}, mustLookup(t, r, "back.test")); d != "" {
			t.Errorf("after recovery (-want +got):\n%s", d)
		}
	})
	t.Run("not found is an answer", func(t *testing.T) {
		srv.Set("gone.test", 10, ip1)
		mustLookup(t, r, "gone.test")
		clk.advance(10 * time.Second)
		srv.Delete("gone.test")
		if _, err := lookup(t, r, "gone.test"); !errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound, not a stale answer", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		r, clk, _ := newTestResolver(t, ResolverConfig{Servers: []string{srv.Addr()}})
		srv.Set("nostale.test", 10, ip1)
		mustLookup(t, r, "nostale.test")
		clk.advance(10 * time.Second)
		srv.SetRcode("nostale.test", dns.RcodeServerFailure)
		if _, err := lookup(t, r, "nostale.test"); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v, want the SERVFAIL error without StaleTTL", err)
		}
	})
}
