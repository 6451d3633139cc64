package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// testProxy is a minimal proxy for the tool's own tests: HTTP CONNECT,
// absolute-URI forwarding and SOCKS5 CONNECT on one port, sniffed by the first
// byte. Names under bench.test go to ip; everything else is refused. With
// auth set it requires those credentials (Basic, RFC 1929) as egressd does
// with auth.required, and refuses others.
type testProxy struct {
	l    net.Listener
	ip   netip.Addr
	auth proxyAuth
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
}

func startTestProxy(t *testing.T, ip netip.Addr, auth proxyAuth) *testProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{l: l, ip: ip, auth: auth, cs: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer p.untrack(c)
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for c := range p.cs {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *testProxy) track(c net.Conn) {
	p.mu.Lock()
	p.cs[c] = struct{}{}
	p.mu.Unlock()
}

func (p *testProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.cs, c)
	p.mu.Unlock()
	c.Close()
}

func (p *testProxy) dial(hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(host, ".bench.test") {
		host = p.ip.String()
	}
	if err := loopbackOnly(net.JoinHostPort(host, port)); err != nil {
		return nil, err
	}
	c, err := net.Dial("tcp", net.JoinHostPort(host, port))
	if err == nil {
		p.track(c)
	}
	return c, err
}

func (p *testProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	if first[0] == 5 {
		p.serveSOCKS(c, br)
		return
	}
	var up net.Conn
	var upr *bufio.Reader
	defer func() {
		if up != nil {
			p.untrack(up)
		}
	}()
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if p.auth.set() {
			u, pw, ok := parseBasic(req.Header.Get("Proxy-Authorization"))
			if !ok || u != p.auth.User || pw != p.auth.Password {
				io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n")
				return
			}
		}
		if req.Method == http.MethodConnect {
			o, err := p.dial(req.Host)
			if err != nil {
				io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			p.splice(c, br, o)
			return
		}
		if up == nil {
			if up, err = p.dial(req.URL.Host); err != nil {
				return
			}
			upr = bufio.NewReader(up)
		}
		req.RequestURI = ""
		if err := req.Write(up); err != nil {
			return
		}
		resp, err := http.ReadResponse(upr, req)
		if err != nil {
			return
		}
		err = resp.Write(c)
		resp.Body.Close()
		if err != nil {
			return
		}
	}
}

func (p *testProxy) serveSOCKS(c net.Conn, br *bufio.Reader) {
	var b [262]byte
	if _, err := io.ReadFull(br, b[:2]); err != nil {
		return
	}
	methods := make([]byte, b[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	want := byte(0)
	if p.auth.set() {
		want = 2
	}
	if !bytes.Contains(methods, []byte{want}) {
		c.Write([]byte{5, 0xff})
		return
	}
	c.Write([]byte{5, want})
	if want == 2 {
		// RFC 1929: VER ULEN UNAME PLEN PASSWD.
		field := func() string {
			if _, err := io.ReadFull(br, b[:1]); err != nil {
				return ""
			}
			n := int(b[0])
			io.ReadFull(br, b[:n])
			return string(b[:n])
		}
		if _, err := io.ReadFull(br, b[:1]); err != nil || b[0] != 1 {
			return
		}
		u, pw := field(), field()
		if u != p.auth.User || pw != p.auth.Password {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	if _, err := io.ReadFull(br, b[:4]); err != nil {
		return
	}
	var host string
	switch b[3] {
	case 1:
		io.ReadFull(br, b[:4])
		host = netip.AddrFrom4([4]byte(b[:4])).String()
	case 3:
		io.ReadFull(br, b[:1])
		n := int(b[0])
		io.ReadFull(br, b[:n])
		host = string(b[:n])
	default:
		return
	}
	if _, err := io.ReadFull(br, b[:2]); err != nil {
		return
	}
	port := int(b[0])<<8 | int(b[1])
	o, err := p.dial(net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	p.splice(c, br, o)
}

// splice copies both ways until either side ends, then closes both.
func (p *testProxy) splice(c net.Conn, br *bufio.Reader, o net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(c, o)
		c.Close()
		close(done)
	}()
	io.Copy(o, br)
	o.Close()
	<-done
	p.untrack(o)
}

func TestOriginsDNS(t *testing.T) {
	ip := netip.MustParseAddr("127.0.0.1")
	o, err := startOrigins(originConfig{IP: ip, Name: "origin.bench.test", copyBuf: 4096, dnsTTL: 60, handshake: 5e9})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var cl dns.Client
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string
	}{
		{name: "A in zone", qname: "origin.bench.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: []string{"127.0.0.1"}},
		{name: "mixed case", qname: "Origin.BENCH.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: []string{"127.0.0.1"}},
		{name: "AAAA is empty for an IPv4 origin", qname: "origin.bench.test.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess},
		{name: "outside the zone", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "suffix lookalike", qname: "notbench.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, tc.qtype)
			r, _, err := cl.Exchange(m, o.DNSAddr())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					got = append(got, a.A.String())
				}
			}
			if r.Rcode != tc.rcode {
				t.Errorf("rcode = %d, want %d", r.Rcode, tc.rcode)
			}
			if diff := cmp.Diff(tc.answer, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewTargetSOCKSRequest(t *testing.T) {
	t.Parallel()
	ip := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name string
		host string
		want []byte
	}{
		{name: "ipv4", host: "127.0.0.2", want: []byte{5, 1, 0, 1, 127, 0, 0, 2, 0x01, 0xbb}},
		{name: "ipv6", host: "::1", want: append(append([]byte{5, 1, 0, 4}, netip.IPv6Loopback().AsSlice()...), 0x01, 0xbb)},
		{name: "name", host: "a.bench.test", want: append(append([]byte{5, 1, 0, 3, 12}, "a.bench.test"...), 0x01, 0xbb)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg, err := newTarget(tc.host, 443, ip, proxyAuth{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, tg.socksReq); diff != "" {
				t.Errorf("socks request (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := newTarget(strings.Repeat("a", 256), 1, ip, proxyAuth{}); err == nil {
		t.Error("newTarget accepted a 256-byte name")
	}
}

func TestConnectStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "squid", in: "HTTP/1.1 200 Connection established", ok: true},
		{name: "http/1.0", in: "HTTP/1.0 200 OK\r\nProxy-Agent: x", ok: true},
		{name: "denied", in: "HTTP/1.1 403 Forbidden\r\nX-Egress-Denied: not_allowed", ok: false},
		{name: "garbage", in: "SSH-2.0-OpenSSH", ok: false},
		{name: "short code", in: "HTTP/1.1 20 OK", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := connectStatus([]byte(tc.in)); (err == nil) != tc.ok {
				t.Errorf("connectStatus(%q) = %v, want ok %v", tc.in, err, tc.ok)
			}
		})
	}
}

// TestRunAllKinds runs every scenario with tiny counts through the test
// proxy (and direct), reading this process's own /proc entries as the
// proxy's, and checks that every scenario completes without errors. The
// proxy kinds run again against a proxy that requires credentials, with
// -proxy-auth (the handshakes' scenarios must then succeed) and with wrong
// credentials (every operation must fail).
func TestRunAllKinds(t *testing.T) {
	open := startTestProxy(t, netip.MustParseAddr("127.0.0.1"), proxyAuth{})
	locked := startTestProxy(t, netip.MustParseAddr("127.0.0.1"), proxyAuth{User: "bench", Password: "s3cret:x"})
	dir := t.TempDir()
	small := []string{
		"-conc", "2", "-bulk-bytes", "1048576", "-tunnels", "20", "-tls-tunnels", "6",
		"-ka-requests", "30", "-fwd-requests", "40", "-idle-tunnels", "10", "-settle", "1ms",
		"-proxy-pid", strconv.Itoa(os.Getpid()),
		"-paced-time", "200ms", "-paced-tunnels-rate", "100", "-paced-tls-rate", "40", "-paced-fwd-rate", "150", "-paced-conc", "4",
		"-cache-requests", "12", "-cache-conc", "3",
	}
	type run struct {
		name, kind string
		proxy      *testProxy
		extra      []string // more flags
		scenarios  []string // expected; nil: defaultScenarios(kind)
		refused    string   // the run must fail, saying this
	}
	var runs []run
	for _, kind := range []string{kindDirect, kindConnect, kindSOCKS5, kindHTTP, kindCache} {
		runs = append(runs, run{name: kind, kind: kind, proxy: open})
	}
	authed := map[string][]string{
		kindConnect: {"tunnels", "tls_tunnels"},
		kindSOCKS5:  {"tunnels", "tls_tunnels"},
		kindHTTP:    {"forward"},
	}
	refusals := map[string]string{
		kindConnect: `connect: proxy answered "HTTP/1.1 407 Proxy Authentication Required"`,
		kindSOCKS5:  "socks5: username/password refused (version 1, status 1)",
		kindHTTP:    `http: status "407 Proxy Authentication Required"`,
	}
	for _, kind := range []string{kindConnect, kindSOCKS5, kindHTTP} {
		sc := authed[kind]
		runs = append(runs,
			run{name: kind + "-auth", kind: kind, proxy: locked, scenarios: sc,
				extra: []string{"-proxy-auth", "bench:s3cret:x", "-scenarios", strings.Join(sc, ",")}},
			run{name: kind + "-wrong-auth", kind: kind, proxy: locked, refused: refusals[kind],
				extra: []string{"-proxy-auth", "bench:nope", "-scenarios", strings.Join(sc, ",")}},
		)
	}
	for _, tr := range runs {
		t.Run(tr.name, func(t *testing.T) {
			out := filepath.Join(dir, tr.name+".json")
			args := append([]string{"-kind", tr.kind, "-proxy", tr.proxy.l.Addr().String(), "-json", out, "-label", "test"}, small...)
			args = append(append(args, tr.extra...), "-max-errors", "1")
			var stdout, stderr bytes.Buffer
			err := runMain(args, &stdout, &stderr)
			if tr.refused != "" {
				// Wrong credentials: the warm-up fails and says why.
				if err == nil || !strings.Contains(err.Error(), tr.refused) {
					t.Fatalf("run with wrong credentials: %v, want an error with %q", err, tr.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
			}
			rs, err := readResults([]string{out})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.Scenario)
				if r.Auth != (len(tr.extra) > 0) {
					t.Errorf("%s: proxy_auth %v in the result", r.Scenario, r.Auth)
				}
				if r.Errors != 0 {
					t.Errorf("%s: %d errors, first %q", r.Scenario, r.Errors, r.FirstError)
				}
				if strings.HasPrefix(r.Scenario, "bulk_") && r.Bytes != 1<<20 {
					t.Errorf("%s: moved %d bytes, want %d", r.Scenario, r.Bytes, 1<<20)
				}
				if want, ok := map[string]float64{"tunnels_paced": 100, "tls_tunnels_paced": 40, "forward_paced": 150}[r.Scenario]; ok {
					// Paced: rate x time operations, started no faster
					// than the rate (the n-th at (n-1)/rate at the earliest).
					if r.TargetRate != want || r.Ops != int64(want*0.2) {
						t.Errorf("%s: %d ops at target %v, want %v at %v", r.Scenario, r.Ops, r.TargetRate, int64(want*0.2), want)
					}
					if min := float64(r.Ops-1) / want; r.Seconds < min {
						t.Errorf("%s: %d ops in %.3fs, faster than %v/s allows (%.3fs)", r.Scenario, r.Ops, r.Seconds, want, min)
					}
				}
				if size, ok := map[string]int64{"cache_hit_1k": cacheSmall, "cache_miss_1k": cacheSmall,
					"cache_hit_1m": cacheLarge, "cache_miss_1m": cacheLarge}[r.Scenario]; ok {
					if r.Ops != 12 || r.Bytes != 12*size || r.ProxyCPUPerGiB == nil {
						t.Errorf("%s: %d ops, %d bytes (CPU/GiB %v), want 12 of %d bytes", r.Scenario, r.Ops, r.Bytes, r.ProxyCPUPerGiB, size)
					}
				}
				if r.Scenario == "idle" && (r.Idle == nil || r.Idle.Tunnels != 10) {
					t.Errorf("idle: %+v, want 10 tunnels", r.Idle)
				}
				if r.ProxyCPUSec == nil {
					t.Errorf("%s: no proxy CPU reading", r.Scenario)
				}
			}
			want := tr.scenarios
			if want == nil {
				want = defaultScenarios(tr.kind)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("scenarios (-want +got):\n%s", diff)
			}
			if !slices.ContainsFunc(strings.Split(stdout.String(), "\n"), func(l string) bool { return strings.HasPrefix(l, "test") }) {
				t.Errorf("no summary lines on stdout: %q", stdout.String())
			}
		})
	}
}

// parseBasic reads a Basic Proxy-Authorization value, as net/http reads
// Authorization.
func parseBasic(v string) (user, password string, ok bool) {
	r := &http.Request{Header: http.Header{"Authorization": {v}}}
	return r.BasicAuth()
}

func TestRunFlagsRefuseNonLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{name: "proxy", args: []string{"-kind", "connect", "-proxy", "192.0.2.1:3128"}},
		{name: "proxy name", args: []string{"-kind", "connect", "-proxy", "localhost:3128"}},
		{name: "origin ip", args: []string{"-kind", "direct", "-origin-ip", "192.0.2.1"}},
		{name: "name outside the zone", args: []string{"-kind", "direct", "-name", "example.com"}},
		{name: "too many idle tunnels", args: []string{"-kind", "direct", "-idle-tunnels", "9000"}},
		{name: "unknown scenario", args: []string{"-kind", "direct", "-scenarios", "nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := parseRunFlags(tc.args, io.Discard); err == nil {
				t.Errorf("parseRunFlags(%q) succeeded", tc.args)
			}
		})
	}
}

func TestQuickKeepsExplicitFlags(t *testing.T) {
	t.Parallel()
	c, err := parseRunFlags([]string{"-kind", "direct", "-quick", "-tunnels", "77"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Tunnels != 77 || c.TLSTunnels >= 3000 {
		t.Errorf("quick: tunnels %d (want 77, explicit), tls-tunnels %d (want the quick default)", c.Tunnels, c.TLSTunnels)
	}
}

// TestParentProxy: the parent of the egressd-chain runs tunnels a CONNECT
// by bench name or loopback IP, keeps what the client sent with its
// request, and refuses anything outside the bench.
func TestParentProxy(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	p, err := startParent("127.0.0.1:0", netip.MustParseAddr("127.0.0.1"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, port, _ := net.SplitHostPort(echo.Addr().String())
	for target, ok := range map[string]bool{
		"origin.bench.test:" + port: true,
		"127.0.0.1:" + port:         true,
		"example.com:" + port:       false,
		"10.0.0.5:" + port:          false,
	} {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nearly")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if got := resp.StatusCode == http.StatusOK; got != ok {
			t.Errorf("%s: status %d", target, resp.StatusCode)
		}
		if ok {
			got := make([]byte, 5)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "early" {
				t.Errorf("%s: echo %q, %v", target, got, err)
			}
		}
		c.Close()
	}
}

// TestFloor: the floor's three phases run against its answering process,
// paced at the rate asked for, and the process and its connections stop
// with the context.
func TestFloor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); serveFloor(ctx, ln) }()
	defer func() { cancel(); <-served }()

	c := floorConfig{To: ln.Addr().String(), Rate: 2000, Ops: 40, LoopOps: 60, Conc: 3, Run: 2, MaxTime: 20 * time.Second}
	rs, err := measureFloor(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		scenario string
		ops      int64
		rate     float64
	}{{floorTick, 40, 2000}, {floorPaced, 40, 2000}, {floorLoop, 60, 0}}
	if len(rs) != len(want) {
		t.Fatalf("%d results, want %d", len(rs), len(want))
	}
	for i, w := range want {
		r := rs[i]
		if r.Label != floorLabel || r.Kind != floorKind || r.Run != 2 || r.Scenario != w.scenario || r.Ops != w.ops || r.TargetRate != w.rate || r.TimeBound {
			t.Errorf("result %d: %+v, want %s with %d ops at %v/s", i, r, w.scenario, w.ops, w.rate)
		}
		if r.ProxyCPUPer1000 == nil || r.ProxyCPUSec == nil || *r.ProxyCPUSec != r.ToolCPUSec {
			t.Errorf("%s: no own CPU figure: %+v", r.Scenario, r)
		}
		// Paced phases start the n-th wake-up no earlier than n/rate.
		if w.rate > 0 && r.Seconds < float64(w.ops-1)/w.rate {
			t.Errorf("%s: %d ops in %.4fs, faster than %v/s", r.Scenario, r.Ops, r.Seconds, w.rate)
		}
	}
	if !strings.Contains(rs[1].summary(), "us per op") {
		t.Errorf("summary %q", rs[1].summary())
	}

	// An answering process that is gone fails the measurement.
	cancel()
	<-served
	if _, err := measureFloor(c); err == nil {
		t.Error("measured against a closed server")
	}
}

func TestFloorFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-serve", "127.0.0.1:1", "-to", "127.0.0.1:2"},
		{"-to", "10.0.0.1:3128"},
		{"-serve", "0.0.0.0:3128"},
		{"-to", "127.0.0.1:3128", "-rate", "0"},
	} {
		if err := floorMain(args, io.Discard, io.Discard); err == nil {
			t.Errorf("floor %q: no error", args)
		}
	}
}
