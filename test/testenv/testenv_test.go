package testenv_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/test/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"
)

// fakeEnv makes the test binary act as a stand-in egressd (see fakeEgressd),
// so the process harness is tested without the real binary.
const fakeEnv = "EGRESSD_TESTENV_FAKE"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeEgressd(os.Args[1:]))
	}
	testenv.Main(m)
}

// fakeEgressd serves listen.http from --config: for each connection it
// reads one line, logs {"listener":"http","host":LINE} on stdout and
// answers "ok". SIGTERM ends it with exit 0.
func fakeEgressd(args []string) int {
	var cfgPath string
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			cfgPath = args[i+1]
		}
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var c struct {
		Listen struct {
			HTTP string `yaml:"http"`
		} `yaml:"listen"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", c.Listen.HTTP)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "fake egressd listening on", ln.Addr())
	fmt.Println("not json: startup banner")
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return 0
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if line == "" { // the harness's readiness probe
			conn.Close()
			continue
		}
		fmt.Printf("{\"listener\":\"http\",\"host\":%q,\"port\":443}\n", strings.TrimSpace(line))
		io.WriteString(conn, "ok\n")
		conn.Close()
	}
}

func TestDNSServer(t *testing.T) {
	s := testenv.NewDNSServer(t)
	v4, v6 := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")
	s.Set("Both.Test.", 30, v4, v6)
	s.SetSequence("rebind.test", 0, [][]netip.Addr{{v4}, {netip.MustParseAddr("10.0.0.5")}})
	s.SetCNAME("alias.test", 60, "both.test")
	s.SetRcode("fail.test", dns.RcodeServerFailure)
	s.SetDomain("zone.test", 45, v4)
	s.Set("exact.zone.test", 30, v6)

	type answer struct {
		Rcode string
		RRs   []string
	}
	ask := func(network, name string, qtype uint16) answer {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		c := &dns.Client{Net: network, Timeout: 5 * time.Second}
		resp, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		a := answer{Rcode: dns.RcodeToString[resp.Rcode]}
		for _, rr := range resp.Answer {
			a.RRs = append(a.RRs, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		return a
	}
	tests := []struct {
		name    string
		network string
		qname   string
		qtype   uint16
		want    answer
	}{
		{"A over UDP", "udp", "both.test", dns.TypeA, answer{"NOERROR", []string{"both.test. 30 IN A 127.0.0.2"}}},
		{"AAAA over TCP", "tcp", "BOTH.test", dns.TypeAAAA, answer{"NOERROR", []string{"both.test. 30 IN AAAA ::1"}}},
		{"NODATA", "udp", "both.test", dns.TypeMX, answer{"NOERROR", nil}},
		{"NXDOMAIN", "udp", "missing.test", dns.TypeA, answer{"NXDOMAIN", nil}},
		{"CNAME chain", "udp", "alias.test", dns.TypeA, answer{"NOERROR", []string{"alias.test. 60 IN CNAME both.test.", "both.test. 30 IN A 127.0.0.2"}}},
		{"SERVFAIL", "udp", "fail.test", dns.TypeA, answer{"SERVFAIL", nil}},
		{"sequence step 0", "udp", "rebind.test", dns.TypeA, answer{"NOERROR", []string{"rebind.test. 0 IN A 127.0.0.2"}}},
		{"sequence AAAA does not advance A", "udp", "rebind.test", dns.TypeAAAA, answer{"NOERROR", nil}},
		{"sequence step 1", "tcp", "rebind.test", dns.TypeA, answer{"NOERROR", []string{"rebind.test. 0 IN A 10.0.0.5"}}},
		{"sequence cycles", "udp", "rebind.test", dns.TypeA, answer{"NOERROR", []string{"rebind.test. 0 IN A 127.0.0.2"}}},
		{"domain apex", "udp", "zone.test", dns.TypeA, answer{"NOERROR", []string{"zone.test. 45 IN A 127.0.0.2"}}},
		{"name under a domain", "tcp", "a.b.Zone.test", dns.TypeA, answer{"NOERROR", []string{"a.b.zone.test. 45 IN A 127.0.0.2"}}},
		{"domain NODATA", "udp", "a.zone.test", dns.TypeAAAA, answer{"NOERROR", nil}},
		{"a name set in a domain", "udp", "exact.zone.test", dns.TypeA, answer{"NOERROR", nil}},
		{"domain lookalike", "udp", "notzone.test", dns.TypeA, answer{"NXDOMAIN", nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ask(tt.network, tt.qname, tt.qtype)); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if got := s.Queries("rebind.test"); got != 4 {
		t.Errorf("Queries(rebind.test) = %d, want 4", got)
	}
	if got := s.QueriesOfType("rebind.test", dns.TypeA); got != 3 {
		t.Errorf("QueriesOfType(rebind.test, A) = %d, want 3", got)
	}
	if got := s.Queries("both.test."); got != 3 {
		t.Errorf("Queries(both.test.) = %d, want 3", got)
	}
}

func TestTLSOriginWithCurl(t *testing.T) {
	ca := testenv.NewCA(t)
	o := testenv.TLSOrigin(t, ca, "127.0.0.2", "origin.test", "www.origin.test")
	caFile := ca.WritePEM(t.TempDir())
	url := fmt.Sprintf("https://www.origin.test:%d/some/path?q=1", o.Port())
	stdout, stderr, exit := testenv.Curl(t, "-sS", "--max-time", "10", "--cacert", caFile,
		"--resolve", fmt.Sprintf("www.origin.test:%d:127.0.0.2", o.Port()),
		"-H", "X-Test: hello", url)
	if exit != 0 {
		t.Fatalf("curl exit %d: %s", exit, stderr)
	}
	e, err := testenv.ParseEcho([]byte(stdout))
	if err != nil {
		t.Fatalf("parse %q: %v", stdout, err)
	}
	got := []string{e.Origin, e.Method, e.Host, e.Path, e.Query, e.SNI, e.Header.Get("X-Test")}
	want := []string{"origin.test", "GET", fmt.Sprintf("www.origin.test:%d", o.Port()), "/some/path", "q=1", "www.origin.test", "hello"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("echo (-want +got):\n%s", diff)
	}
	if o.Count() != 1 || o.Conns() != 1 {
		t.Errorf("Count, Conns = %d, %d; want 1, 1", o.Count(), o.Conns())
	}

	// A client without the CA fails verification: the origin is not a
	// publicly trusted server.
	if _, _, exit := testenv.Curl(t, "-sS", "--max-time", "10", "--resolve",
		fmt.Sprintf("www.origin.test:%d:127.0.0.2", o.Port()), url); exit == 0 {
		t.Errorf("curl without --cacert succeeded")
	}

	// Go clients trust CertPool.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), ServerName: "origin.test"}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(o.URL + "/go")
	if err != nil {
		t.Fatalf("go client: %v", err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Origin") != "origin.test" {
		t.Errorf("X-Origin = %q", resp.Header.Get("X-Origin"))
	}
}

func TestHTTPOriginWithCurl(t *testing.T) {
	o := testenv.HTTPOrigin(t, "127.0.0.3", "plain.test")
	stdout, stderr, exit := testenv.Curl(t, "-sS", "--max-time", "10", "-H", "Host: other.test", o.URL+"/x")
	if exit != 0 {
		t.Fatalf("curl exit %d: %s", exit, stderr)
	}
	e, err := testenv.ParseEcho([]byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"plain.test", "other.test", "/x", ""}, []string{e.Origin, e.Host, e.Path, e.SNI}); diff != "" {
		t.Errorf("echo (-want +got):\n%s", diff)
	}
}

func TestCurlEnvironmentHasNoProxy(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")
	o := testenv.HTTPOrigin(t, "127.0.0.1", "direct.test")
	if _, stderr, exit := testenv.Curl(t, "-sS", "--max-time", "10", o.URL); exit != 0 {
		t.Fatalf("curl went through the inherited proxy: exit %d: %s", exit, stderr)
	}
}

func TestNetnsHoneypot(t *testing.T) {
	ns := testenv.NewNetns(t, "10.0.0.5/32", "169.254.169.254", "192.168.1.1/32")
	hp := ns.Honeypot(t, "10.0.0.5:80", "169.254.169.254:80", "192.168.1.1:0")
	addrs := hp.Addrs()

	hp.AssertNone(t)

	// curl inside the namespace reaches the honeypot (which closes at once).
	_, _, exit := ns.Curl(t, "-sS", "--max-time", "10", "http://10.0.0.5:80/")
	if exit == 0 {
		t.Errorf("curl to a honeypot succeeded; want an empty-reply error")
	}
	// An in-process dial from inside the namespace.
	c, err := ns.DialContext(context.Background(), "tcp", "169.254.169.254:80")
	if err != nil {
		t.Fatalf("dial in netns: %v", err)
	}
	c.Close()
	hp.Sync(t)
	got := []int{hp.Count(addrs[0]), hp.Count(addrs[1]), hp.Count(addrs[2]), hp.Total()}
	if diff := cmp.Diff([]int{1, 1, 0, 2}, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}

	// An address not on the namespace's loopback is unreachable.
	if _, _, exit := ns.Curl(t, "-sS", "--max-time", "5", "http://10.0.0.6:80/"); exit == 0 {
		t.Errorf("curl to 10.0.0.6 inside the namespace succeeded")
	}
}

func TestNetnsServices(t *testing.T) {
	ns := testenv.NewNetns(t)
	d := testenv.NewDNSServerIn(t, ns, "127.0.0.1")
	d.Set("svc.test", 5, netip.MustParseAddr("127.0.0.2"))
	ca := testenv.NewCA(t)
	o := testenv.TLSOriginIn(t, ns, ca, "127.0.0.2", "svc.test")

	// DNS from inside the namespace, over a socket made there.
	conn, err := ns.DialContext(context.Background(), "udp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dc := &dns.Conn{Conn: conn}
	m := new(dns.Msg)
	m.SetQuestion("svc.test.", dns.TypeA)
	dc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := dc.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	resp, err := dc.ReadMsg()
	dc.Close()
	if err != nil || len(resp.Answer) != 1 {
		t.Fatalf("dns in netns: %v %v", resp, err)
	}

	caFile := ca.WritePEM(t.TempDir())
	stdout, stderr, exit := ns.Curl(t, "-sS", "--max-time", "10", "--cacert", caFile,
		"--resolve", fmt.Sprintf("svc.test:%d:127.0.0.2", o.Port()), fmt.Sprintf("https://svc.test:%d/in-ns", o.Port()))
	if exit != 0 {
		t.Fatalf("curl in netns: exit %d: %s", exit, stderr)
	}
	if e, err := testenv.ParseEcho([]byte(stdout)); err != nil || e.Path != "/in-ns" {
		t.Errorf("echo = %+v, %v", e, err)
	}
}

func TestProcHarness(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, inNetns := range []bool{false, true} {
		t.Run(fmt.Sprintf("netns=%v", inNetns), func(t *testing.T) {
			var ns *testenv.Netns
			if inNetns {
				ns = testenv.NewNetns(t)
			}
			addr := ns.FreeAddr(t, "127.0.0.1")
			e := &testenv.Egressd{Netns: ns, Binary: self, Env: []string{fakeEnv + "=1"}}
			cfg := testenv.NewConfig(t)
			cfg.Listen.HTTP = addr
			p := e.StartConfig(t, cfg)
			if p.HTTPAddr != addr {
				t.Fatalf("HTTPAddr = %q, want %q", p.HTTPAddr, addr)
			}
			c := p.Dial(t, addr)
			io.WriteString(c, "example.test\n")
			if b, _ := io.ReadAll(c); string(b) != "ok\n" {
				t.Errorf("reply %q", b)
			}
			line := p.WaitForLog(t, testenv.Fields(map[string]any{"host": "example.test", "port": 443}))
			if diff := cmp.Diff(map[string]any{"listener": "http", "host": "example.test", "port": float64(443)}, line); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
			if n := len(p.AccessLines()); n != 1 {
				t.Errorf("AccessLines: %d, want 1 (non-JSON lines are skipped)", n)
			}
			if !strings.Contains(p.Stderr(), "fake egressd listening") {
				t.Errorf("stderr = %q", p.Stderr())
			}
			if code := p.Stop(t, 0); code != 0 {
				t.Errorf("exit code after SIGTERM = %d", code)
			}
		})
	}
}

// TestInline: the client's default route is the gateway; with the
// gateway's forwarding off nothing beyond it is reached, with it on the
// client reaches the internet's origins and honeypots over IPv4 and IPv6,
// routed (the origin sees the client's own address), and the gateway
// reaches them from its WAN address.
func TestInline(t *testing.T) {
	in := testenv.NewInline(t, "203.0.113.10", "2001:db8:1::10")
	o4 := testenv.HTTPOriginIn(t, in.Internet, "203.0.113.10", "v4.test")
	o6 := testenv.HTTPOriginIn(t, in.Internet, "2001:db8:1::10", "v6.test")
	hp := in.Internet.Honeypot(t, in.Metadata.String()+":80", in.Private.String()+":443")

	// Forwarding off: the client's packets stop at the gateway (the dials
	// time out together).
	var wg sync.WaitGroup
	for _, addr := range append([]string{o4.Addr(), o6.Addr()}, hp.Addrs()...) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if c, err := in.Client.DialContext(ctx, "tcp", addr); err == nil {
				c.Close()
				t.Errorf("client reached %s through a gateway that does not forward", addr)
			}
		})
	}
	wg.Wait()
	hp.AssertNone(t)
	if o4.Conns()+o6.Conns() != 0 {
		t.Errorf("the origins accepted %d connections", o4.Conns()+o6.Conns())
	}

	in.Forwarding(t, true)
	for _, tc := range []struct {
		o    *testenv.Origin
		from netip.Addr
	}{{o4, in.ClientAddr4}, {o6, in.ClientAddr6}} {
		stdout, stderr, exit := in.Client.Curl(t, "-sS", "--max-time", "10", tc.o.URL+"/through")
		if exit != 0 {
			t.Fatalf("client curl %s: exit %d: %s", tc.o.URL, exit, stderr)
		}
		e, err := testenv.ParseEcho([]byte(stdout))
		if err != nil {
			t.Fatal(err)
		}
		if remote := netip.MustParseAddrPort(e.Remote).Addr(); remote != tc.from || e.Path != "/through" {
			t.Errorf("origin %s saw %s from %v, want the client %v", tc.o.Name, e.Path, remote, tc.from)
		}
	}
	for _, addr := range hp.Addrs() {
		c, err := in.Client.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("client dial honeypot %s: %v", addr, err)
		}
		c.Close()
		hp.WaitFor(t, addr, 1, 10*time.Second)
	}

	stdout, stderr, exit := in.Gateway.Curl(t, "-sS", "--max-time", "10", o4.URL)
	if exit != 0 {
		t.Fatalf("gateway curl: exit %d: %s", exit, stderr)
	}
	if e, _ := testenv.ParseEcho([]byte(stdout)); netip.MustParseAddrPort(e.Remote).Addr() != in.GatewayWAN4 {
		t.Errorf("the gateway's own request came from %q, want %v", e.Remote, in.GatewayWAN4)
	}
}

// TestConfig: the builder's file is egressd's config, key for key: it
// parses back to what was built, and the starting point has no listener
// and a drain that ends at once.
func TestConfig(t *testing.T) {
	c := testenv.NewConfig(t)
	if l := c.Listen; l.HTTP != "" || l.SOCKS5 != "" || l.Admin != "" {
		t.Errorf("NewConfig listens: %+v", c.Listen)
	}
	if c.Timeouts.DrainDelay != 0 || c.Timeouts.Drain != 2*time.Second {
		t.Errorf("NewConfig drain_delay %v, drain %v; want 0s, 2s", c.Timeouts.DrainDelay, c.Timeouts.Drain)
	}
	c.Listen = testenv.Listeners(t, nil, "127.0.0.1")
	c.Timeouts.Handshake = 3 * time.Second
	c.Policy.Groups = map[string]testenv.Group{"ops": {CIDRs: []string{"127.0.0.77/32"}}}
	c.Policy.Rules = []testenv.Rule{{Name: "origin", Groups: []string{"ops"}, Hosts: []string{"a.test", "*.b.test"},
		Ports: []int{443, 8080}, AllowRanges: []string{"127.0.0.0/24"}}}
	text := testenv.YAML(t, c)
	back, err := config.Parse([]byte(text), "built.yaml")
	if err != nil {
		t.Fatalf("egressd refuses the built config: %v\n%s", err, text)
	}
	if diff := cmp.Diff(c, back, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("parsed back (-built +parsed):\n%s\n%s", diff, text)
	}
}

// TestConnect: the CONNECT helper writes the request line, Host and extra
// header fields; it returns a 200 with the connection at the tunnel's first
// byte, a refusal with its body, and an error for bytes that came with a
// 200.
func TestConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	heads := make(chan string, 3)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		answers := []string{
			"HTTP/1.1 200 Connection established\r\n\r\n",
			"HTTP/1.1 403 Forbidden\r\nX-Egress-Denied: not_allowed\r\nContent-Length: 6\r\n\r\ndenied",
			"HTTP/1.1 200 OK\r\n\r\nearly",
		}
		for i, answer := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err == nil {
				heads <- req.Method + " " + req.RequestURI + " " + req.Host + " " + req.Header.Get("Proxy-Authorization")
			}
			io.WriteString(c, answer)
			if i == 0 {
				// The tunnel: the client speaks first, then the
				// origin's bytes follow.
				if _, err := io.ReadFull(br, make([]byte, 2)); err == nil {
					io.WriteString(c, "tunnel")
				}
			}
			io.Copy(io.Discard, br)
			c.Close()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := dial()
	resp, err := testenv.Connect(c, "a.test:443", http.Header{"Proxy-Authorization": {"Basic eDp5"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("200: %v, %v", resp, err)
	}
	if h := <-heads; h != "CONNECT a.test:443 a.test:443 Basic eDp5" {
		t.Errorf("request head %q", h)
	}
	io.WriteString(c, "go")
	if b, err := io.ReadAll(io.LimitReader(c, 6)); string(b) != "tunnel" {
		t.Errorf("tunnel bytes %q, %v", b, err)
	}
	c.Close()

	c = dial()
	err = testenv.ConnectTunnel(c, "b.test:443", nil)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden (not_allowed)") {
		t.Errorf("refusal: %v", err)
	}
	<-heads
	c.Close()

	c = dial()
	if _, err := testenv.Connect(c, "c.test:443", nil); err == nil || !strings.Contains(err.Error(), "unexpected bytes after the status") {
		t.Errorf("bytes with the 200: %v", err)
	}
	<-heads
	c.Close()
}

// TestHAProxy: StartHAProxy runs the real HAProxy with a config, returns
// once every bind address accepts, and its session log and stats are read
// back.
func TestHAProxy(t *testing.T) {
	ns := testenv.NewNetns(t)
	origin := testenv.HTTPOriginIn(t, ns, "127.0.0.3", "behind")
	front, stats := ns.FreeAddr(t, "127.0.0.1"), ns.FreeAddr(t, "127.0.0.1")
	h := testenv.StartHAProxy(t, ns, fmt.Sprintf(`global
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend front
    bind %s
    default_backend back
backend back
    server origin %s
frontend stats
    mode http
    bind %s
    stats enable
    stats uri /
`, front, origin.Addr(), stats))
	// waitSession polls (bounded) for the session log line of a session
	// that matches: a line comes when its session ends.
	waitSession := func(match func(testenv.HAProxySession) bool) (testenv.HAProxySession, bool) {
		deadline := time.Now().Add(5 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, s := range h.Sessions() {
				if match(s) {
					return s, true
				}
			}
			if time.Now().After(deadline) {
				return testenv.HAProxySession{}, false
			}
			<-tick.C
		}
	}
	// StartHAProxy's readiness probe of front was a session too, and
	// HAProxy may count it after StartHAProxy returns (the probe only
	// waits for the kernel's accept): count from the end of the probe's
	// session, when nothing else is on front.
	probe, ok := waitSession(func(s testenv.HAProxySession) bool { return s.Backend == "back" })
	if !ok {
		t.Fatalf("no session log line of the readiness probe of front\n%s", h.Events())
	}
	if probe.Server != "origin" && probe.Server != "<NOSRV>" {
		t.Fatalf("the readiness probe's session: %s", probe.Line)
	}
	sessionsBefore := 0
	for _, st := range h.Stats(t, stats) {
		if st.Backend == "back" && st.Server == "origin" {
			sessionsBefore = st.Sessions
		}
	}
	var clientPort int
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := ns.DialContext(ctx, network, addr)
			if err == nil {
				clientPort = c.LocalAddr().(*net.TCPAddr).Port
			}
			return c, err
		}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + front + "/through")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if origin.Count() != 1 {
		t.Errorf("origin saw %d requests through HAProxy", origin.Count())
	}
	// Client ports are reused (towards another address, or after
	// TIME_WAIT on loopback): the stats reads and the probe may have had
	// this one.
	if s, ok := waitSession(func(s testenv.HAProxySession) bool {
		return s.ClientPort == clientPort && s.Backend == "back" && s.Line != probe.Line
	}); !ok || s.Server != "origin" {
		t.Errorf("session of client port %d: %+v, %v\n%s", clientPort, s, ok, h.Events())
	}
	var found bool
	for _, st := range h.Stats(t, stats) {
		if st.Backend == "back" && st.Server == "origin" && st.Sessions == sessionsBefore+1 {
			found = true
		}
	}
	if !found {
		t.Errorf("stats lack back/origin with %d sessions: %+v", sessionsBefore+1, h.Stats(t, stats))
	}
}
