package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/inspect/inspecttest"
	"github.com/egressd/egressd/test/testenv"
)

// The in-line gateway (issue 21), end to end: a client namespace whose
// default route is a gateway namespace running egressd's transparent
// listener behind the shipped nftables rules (deployments/nftables, loaded
// by their own loader), and an internet namespace with origins, a DNS
// server and honeypots. The client has no proxy settings at all.

// The internet's addresses. allowed.test resolves to inlineWeb only.
var (
	inlineWeb    = netip.MustParseAddr("203.0.113.10")   // allowed.test: HTTPS :443, HTTP :80
	inlineOther  = netip.MustParseAddr("203.0.113.11")   // other.test: HTTP :80
	inlineDenied = netip.MustParseAddr("203.0.113.20")   // denied.test: honeypots only
	inlineRaw    = netip.MustParseAddr("203.0.113.30")   // a TCP service on :2222 that a cidrs rule allows
	inlineWeb6   = netip.MustParseAddr("2001:db8:1::10") // a client's own choice of address: honeypots only
	inlineDNS    = netip.MustParseAddr("198.51.100.53")
	inlineParent = netip.MustParseAddr("10.1.2.3") // the corporate parent proxy (rule partner's via): private, which is fine for a parent
)

// The parent's credentials (upstream_proxies.corp).
const inlineParentUser, inlineParentPassword = "gw", "in-line-parent-pw-3f9a"

const inlineRawPort = 2222

type inlineEnv struct {
	in      *testenv.Inline
	p       *testenv.Proc
	caFile  string
	roots   *x509.CertPool
	inspect *inspecttest.CA // tls_inspection's
	web     *testenv.Origin // allowed.test:443 (and inspected.test)
	webHTTP *testenv.Origin // allowed.test:80
	other   *testenv.Origin // other.test:80
	hp      *testenv.Honeypot
	parent  *testenv.Parent // upstream_proxies.corp: partner.test's only way out
	port    uint16          // listen.transparent's port
}

// newInlineEnv builds the topology, starts egressd in the gateway with
// listen.transparent and loads the shipped rules with the loader, ipv4 and
// ipv6 the loader's modes (redirect or tproxy); tune, if any, changes the
// config before egressd starts.
func newInlineEnv(t *testing.T, ipv4, ipv6 string, tune ...func(*testenv.Config)) *inlineEnv {
	t.Helper()
	e := &inlineEnv{}
	in := testenv.NewInline(t, inlineWeb.String(), inlineOther.String(), inlineDenied.String(), inlineRaw.String(),
		inlineWeb6.String(), inlineDNS.String(), inlineParent.String())
	e.in = in
	dns, err := testenv.StartDNSServerAt(t, in.Internet, netip.AddrPortFrom(inlineDNS, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	dns.Set("allowed.test", 60, inlineWeb)
	dns.Set("other.test", 60, inlineOther)
	dns.Set("denied.test", 60, inlineDenied)
	dns.Set("meta.test", 60, in.Metadata)
	dns.Set("private.test", 60, in.Private)
	dns.Set("inspected.test", 60, inlineWeb)

	ca := testenv.NewCA(t)
	e.caFile = ca.WritePEM(t.TempDir())
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(ca.PEM())
	e.web = testenv.TLSOriginAt(t, in.Internet, ca, netip.AddrPortFrom(inlineWeb, 443).String(), "allowed.test", "inspected.test", "partner.test")
	e.webHTTP = testenv.HTTPOriginAt(t, in.Internet, netip.AddrPortFrom(inlineWeb, 80).String(), "allowed.test")
	e.other = testenv.HTTPOriginAt(t, in.Internet, netip.AddrPortFrom(inlineOther, 80).String(), "other.test")
	e.hp = in.Internet.Honeypot(t,
		netip.AddrPortFrom(inlineDenied, 80).String(), netip.AddrPortFrom(inlineDenied, 443).String(),
		netip.AddrPortFrom(inlineDenied, inlineRawPort).String(),
		netip.AddrPortFrom(inlineWeb6, 80).String(), netip.AddrPortFrom(inlineWeb6, 443).String(),
		netip.AddrPortFrom(in.Metadata, 80).String(), netip.AddrPortFrom(in.Metadata, 443).String(),
		netip.AddrPortFrom(in.Private, 80).String(), netip.AddrPortFrom(in.Private, 443).String())
	e.startRaw(t)
	// partner.test is a name only the parent resolves (egressd's DNS does
	// not know it).
	e.parent = testenv.NewParentIn(t, in.Internet, inlineParent.String(), testenv.ParentOptions{
		Hosts:       map[string]string{"partner.test": inlineWeb.String()},
		Credentials: inlineParentUser + ":" + inlineParentPassword,
	})
	pwFile := filepath.Join(t.TempDir(), "corp.pass")
	if err := os.WriteFile(pwFile, []byte(inlineParentPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := testenv.NewConfig(t)
	cfg.Listen.Admin = in.Gateway.FreeAddr(t, "127.0.0.1")
	cfg.Listen.Transparent = in.Gateway.FreeAddr(t, "::")
	_, port, _ := net.SplitHostPort(cfg.Listen.Transparent)
	fmt.Sscan(port, &e.port)
	cfg.DNS.Servers = []string{netip.AddrPortFrom(inlineDNS, 53).String()}
	cfg.DLP.Profiles = map[string]config.DLPProfile{"keys": {Mode: "enforce", Detectors: []string{"aws_access_key"}}}
	if e.inspect, err = inspecttest.WriteCA(t.TempDir(), "inspect"); err != nil {
		t.Fatal(err)
	}
	cfg.TLSInspection = config.TLSInspection{CACert: e.inspect.CertFile, CAKey: e.inspect.KeyFile, UpstreamCAFile: e.caFile}
	cfg.Policy.Rules = []testenv.Rule{
		// 203.0.113.0/24 is in the default deny ranges (TEST-NET-3).
		{Name: "web", Hosts: []string{"allowed.test", "other.test"}, Ports: []int{80, 443}, AllowRanges: []string{"203.0.113.0/28"}, DLP: "keys"},
		// Allowed names whose addresses are the metadata service and a
		// private range: the ranges still deny them.
		{Name: "traps", Hosts: []string{"meta.test", "private.test"}, Ports: []int{80, 443}},
		{Name: "raw", CIDRs: []string{inlineRaw.String() + "/32"}, Ports: []int{inlineRawPort}},
		{Name: "inspected", Hosts: []string{"inspected.test"}, Ports: []int{443}, AllowRanges: []string{"203.0.113.0/28"},
			Inspect: true, Paths: []string{"/ok/*"}},
		{Name: "partner", Hosts: []string{"partner.test"}, Ports: []int{80, 443}, Via: "corp"},
	}
	cfg.UpstreamProxies = map[string]config.UpstreamProxy{"corp": {URLs: []string{e.parent.URL()}, Username: inlineParentUser, PasswordFile: pwFile, ConnectTimeout: 5 * time.Second}}
	for _, f := range tune {
		f(cfg)
	}
	e.p = (&testenv.Egressd{Netns: in.Gateway}).StartConfig(t, cfg)

	ruleset, _ := filepath.Abs("../deployments/nftables/egressd-transparent.nft")
	loader, _ := filepath.Abs("../deployments/nftables/egressd-transparent.sh")
	out, errOut, exit := in.Gateway.Run(t, "env", "EGRESSD_TRANSPARENT_RULESET="+ruleset,
		"EGRESSD_CLIENT_CIDRS="+in.ClientPrefix4.String()+","+in.ClientPrefix6.String(),
		fmt.Sprintf("EGRESSD_TRANSPARENT_PORT=%d", e.port),
		fmt.Sprintf("EGRESSD_REDIRECT_PORTS=80 443 %d", inlineRawPort),
		"EGRESSD_IPV4_MODE="+ipv4, "EGRESSD_IPV6_MODE="+ipv6,
		// With a resolver to route to, the gateway forwards (DNS only), and
		// its forward chain refuses QUIC with an ICMP error.
		"EGRESSD_DNS_RESOLVERS="+inlineDNS.String(),
		"sh", loader, "start")
	if exit != 0 {
		t.Fatalf("transparent-rules start: exit %d\n%s%s", exit, out, errOut)
	}
	return e
}

// startRaw serves inlineRaw:2222: a greeting, then an echo of one line.
func (e *inlineEnv) startRaw(t *testing.T) {
	ln, err := e.in.Internet.Listen("tcp", netip.AddrPortFrom(inlineRaw, inlineRawPort).String())
	if err != nil {
		t.Fatal(err)
	}
	testenv.ServeConns(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "raw service\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "echo "+line)
	})
}

// curl runs curl in the client namespace: no proxy settings, the test CA,
// names pinned to the addresses the client dials with --resolve.
func (e *inlineEnv) curl(t *testing.T, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	return e.in.Client.Curl(t, append([]string{"-sS", "--max-time", "10", "--cacert", e.caFile, "--noproxy", "*"}, args...)...)
}

// client is a Go client in the client namespace with no proxy: every
// name is dialed at addrs[name].
func (e *inlineEnv) client(addrs map[string]netip.Addr) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			if a, ok := addrs[host]; ok {
				addr = net.JoinHostPort(a.String(), port)
			}
			return e.in.Client.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: e.roots},
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// line waits for the access line of the transparent listener with orig_dst
// dst and the other fields in kv.
func (e *inlineEnv) line(t *testing.T, dst netip.AddrPort, kv map[string]any) map[string]any {
	t.Helper()
	want := map[string]any{"listener": "transparent", "orig_dst": dst.String()}
	for k, v := range kv {
		want[k] = v
	}
	return e.p.WaitForLog(t, testenv.Fields(want))
}

func echoOf(t *testing.T, body string) testenv.Echo {
	t.Helper()
	ec, err := testenv.ParseEcho([]byte(body))
	if err != nil {
		t.Fatalf("not an origin's echo: %q: %v", body, err)
	}
	return ec
}

// TestInline drives the in-line gateway with clients that have no proxy
// settings, in both interception modes for each family.
func TestInline(t *testing.T) {
	for _, modes := range []struct{ ipv4, ipv6 string }{{"redirect", "redirect"}, {"tproxy", "tproxy"}} {
		t.Run("ipv4 "+modes.ipv4+", ipv6 "+modes.ipv6, func(t *testing.T) {
			t.Parallel()
			e := newInlineEnv(t, modes.ipv4, modes.ipv6)
			t.Run("https allowed", e.testHTTPSAllowed)
			t.Run("http allowed", e.testHTTPAllowed)
			t.Run("go client", e.testGoClient)
			t.Run("denied names", e.testDenied)
			t.Run("sni to another address", e.testSNIElsewhere)
			t.Run("keep-alive host switch", e.testKeepAlive)
			t.Run("dlp", e.testDLP)
			t.Run("inspected", e.testInspected)
			t.Run("via parent", e.testViaParent)
			t.Run("no sni", e.testNoSNI)
			t.Run("metadata and private", e.testTraps)
			t.Run("other ports", e.testOtherPorts)
			t.Run("quic", e.testQUIC)
			t.Run("loop", e.testLoop)
			e.hp.AssertNone(t)
		})
	}
}

// testHTTPSAllowed: curl reaches an allowed HTTPS host by IPv4 and, having
// chosen an IPv6 address of its own, still reaches the host the SNI names
// at the address egressd resolved; the access lines carry orig_dst.
func (e *inlineEnv) testHTTPSAllowed(t *testing.T) {
	for _, dial := range []netip.Addr{inlineWeb, inlineWeb6} {
		before := e.web.Count()
		stdout, stderr, exit := e.curl(t, "--resolve", "allowed.test:443:"+dial.String(), "https://allowed.test/https")
		if exit != 0 {
			t.Fatalf("curl https://allowed.test/ at %v: exit %d: %s", dial, exit, stderr)
		}
		if ec := echoOf(t, stdout); ec.SNI != "allowed.test" || ec.Path != "/https" {
			t.Errorf("origin saw SNI %q path %q", ec.SNI, ec.Path)
		}
		if e.web.Count() != before+1 {
			t.Errorf("origin requests %d, want %d", e.web.Count(), before+1)
		}
		l := e.line(t, netip.AddrPortFrom(dial, 443), map[string]any{"decision": "allow", "host": "allowed.test",
			"sni": "allowed.test", "port": 443, "rule": "web", "ip": inlineWeb.String(), "event": "close"})
		if ap, err := netip.ParseAddrPort(fmt.Sprint(l["egress_addr"])); err != nil || ap.Addr() != e.in.GatewayWAN4 {
			t.Errorf("egress_addr %v, want the gateway's WAN address", l["egress_addr"])
		}
		if l["tls_version"] == "" || l["client_port"] == 0.0 {
			t.Errorf("tls_version %v, client_port %v", l["tls_version"], l["client_port"])
		}
	}
}

// testHTTPAllowed: plain HTTP to an allowed host, decided by its Host.
func (e *inlineEnv) testHTTPAllowed(t *testing.T) {
	stdout, stderr, exit := e.curl(t, "--resolve", "allowed.test:80:"+inlineWeb.String(), "http://allowed.test/plain?q=1")
	if exit != 0 {
		t.Fatalf("curl http://allowed.test/: exit %d: %s", exit, stderr)
	}
	if ec := echoOf(t, stdout); ec.Origin != "allowed.test" || ec.Host != "allowed.test" || ec.Path != "/plain" {
		t.Errorf("origin saw %+v", ec)
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 80), map[string]any{"decision": "allow", "host": "allowed.test",
		"method": "GET", "status": 200, "rule": "web"})
}

// testGoClient: Go's http.Client, no proxy, HTTPS and HTTP.
func (e *inlineEnv) testGoClient(t *testing.T) {
	c := e.client(map[string]netip.Addr{"allowed.test": inlineWeb, "other.test": inlineOther})
	defer c.CloseIdleConnections()
	for _, u := range []string{"https://allowed.test/go", "http://other.test/go"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", u, resp.Status, body)
		}
		if ec := echoOf(t, string(body)); ec.Path != "/go" {
			t.Errorf("GET %s: origin saw %+v", u, ec)
		}
	}
}

// testDenied: names no rule allows are refused, over TLS (the connection
// closes before any byte reaches an origin) and over HTTP (403); nothing
// reaches the denied host.
func (e *inlineEnv) testDenied(t *testing.T) {
	if _, _, exit := e.curl(t, "--resolve", "denied.test:443:"+inlineDenied.String(), "https://denied.test/"); exit == 0 {
		t.Errorf("curl https://denied.test/ succeeded")
	}
	e.line(t, netip.AddrPortFrom(inlineDenied, 443), map[string]any{"decision": "deny", "reason": "not_allowed",
		"host": "denied.test", "sni": "denied.test"})
	stdout, _, exit := e.curl(t, "-i", "--resolve", "denied.test:80:"+inlineDenied.String(), "http://denied.test/")
	if exit != 0 || !strings.HasPrefix(stdout, "HTTP/1.1 403") || !strings.Contains(stdout, "X-Egress-Denied: not_allowed") {
		t.Errorf("curl http://denied.test/: exit %d\n%s", exit, stdout)
	}
	e.line(t, netip.AddrPortFrom(inlineDenied, 80), map[string]any{"decision": "deny", "reason": "not_allowed",
		"host": "denied.test", "status": 403})
	e.hp.AssertNone(t)
}

// testSNIElsewhere: an SNI naming an allowed host, sent to a denied host's
// address, reaches the allowed host (egressd dials the address it resolved
// for the SNI) and never the denied host.
func (e *inlineEnv) testSNIElsewhere(t *testing.T) {
	before := e.web.Count()
	stdout, stderr, exit := e.curl(t, "--resolve", "allowed.test:443:"+inlineDenied.String(), "https://allowed.test/elsewhere")
	if exit != 0 {
		t.Fatalf("curl: exit %d: %s", exit, stderr)
	}
	if ec := echoOf(t, stdout); ec.Origin != "allowed.test" || ec.Path != "/elsewhere" || e.web.Count() != before+1 {
		t.Errorf("origin saw %+v (%d requests, want %d)", ec, e.web.Count(), before+1)
	}
	e.line(t, netip.AddrPortFrom(inlineDenied, 443), map[string]any{"decision": "allow", "sni": "allowed.test",
		"ip": inlineWeb.String()})
	e.hp.AssertNone(t)
}

// testKeepAlive: one keep-alive connection to allowed.test's address
// carries requests for three Hosts; each is decided, and dialed, by its
// own Host; absolute-form works too; the denied Host gets 403.
func (e *inlineEnv) testKeepAlive(t *testing.T) {
	c, err := e.in.Client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(inlineWeb, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	webBefore, otherBefore := e.webHTTP.Count(), e.other.Count()
	for _, step := range []struct {
		head   string
		status int
		origin string
	}{
		{"GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 200, "allowed.test"},
		{"GET /two HTTP/1.1\r\nHost: other.test\r\n\r\n", 200, "other.test"},
		{"GET http://allowed.test/three HTTP/1.1\r\nHost: denied.test\r\n\r\n", 200, "allowed.test"},
		{"GET /four HTTP/1.1\r\nHost: denied.test\r\n\r\n", 403, ""},
	} {
		if _, err := io.WriteString(c, step.head); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", step.head, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != step.status || resp.Header.Get("X-Origin") != step.origin {
			t.Errorf("%q: %s X-Origin %q, want %d from %q\n%s", step.head, resp.Status, resp.Header.Get("X-Origin"), step.status, step.origin, body)
		}
	}
	if e.webHTTP.Count() != webBefore+2 || e.other.Count() != otherBefore+1 {
		t.Errorf("allowed.test got %d requests (want 2), other.test %d (want 1)", e.webHTTP.Count()-webBefore, e.other.Count()-otherBefore)
	}
	dst := netip.AddrPortFrom(inlineWeb, 80)
	e.line(t, dst, map[string]any{"host": "other.test", "decision": "allow", "status": 200})
	e.line(t, dst, map[string]any{"host": "denied.test", "decision": "deny", "reason": "not_allowed", "status": 403})
	e.hp.AssertNone(t)
}

// testDLP: in-line HTTP requests go through the rule's DLP profile as
// forwarded requests do: a body with an AWS access key is refused before
// any byte reaches the origin; a clean one goes through.
func (e *inlineEnv) testDLP(t *testing.T) {
	before := e.other.Count()
	stdout, _, exit := e.curl(t, "-i", "--resolve", "other.test:80:"+inlineOther.String(),
		"--data-binary", "key="+dlpAWS, "http://other.test/upload")
	if exit != 0 || !strings.HasPrefix(stdout, "HTTP/1.1 403") || !strings.Contains(stdout, "X-Egress-Denied: dlp") {
		t.Errorf("POST with a secret: exit %d\n%s", exit, stdout)
	}
	if e.other.Count() != before {
		t.Errorf("the origin got the request with a secret")
	}
	e.line(t, netip.AddrPortFrom(inlineOther, 80), map[string]any{"method": "POST", "reason": "dlp", "dlp_profile": "keys"})
	stdout, _, exit = e.curl(t, "--resolve", "other.test:80:"+inlineOther.String(), "--data-binary", "key=nothing", "http://other.test/upload")
	if exit != 0 || echoOf(t, stdout).Method != "POST" || e.other.Count() != before+1 {
		t.Errorf("clean POST: exit %d: %s", exit, stdout)
	}
}

// testViaParent: an in-line client's connections to a name whose rule has
// via go through the parent, by name, with its credentials: a TLS tunnel
// decided on the SNI (CONNECT partner.test:443) and a plain request on an
// http_ports port (the absolute URI). The client dials a honeypot's
// address: egressd must not dial what the client chose, nor resolve the
// name itself (its DNS does not know it).
func (e *inlineEnv) testViaParent(t *testing.T) {
	dial := inlineDenied // honeypots only
	before := len(e.parent.Requests())
	stdout, stderr, exit := e.curl(t, "--resolve", "partner.test:443:"+dial.String(), "https://partner.test/via-tls")
	if exit != 0 {
		t.Fatalf("curl https://partner.test/ (in-line, via corp): exit %d: %s", exit, stderr)
	}
	if ec := echoOf(t, stdout); ec.SNI != "partner.test" || ec.Path != "/via-tls" {
		t.Errorf("origin saw SNI %q path %q", ec.SNI, ec.Path)
	}
	stdout, stderr, exit = e.curl(t, "--resolve", "partner.test:80:"+dial.String(), "http://partner.test/via-http")
	if exit != 0 {
		t.Fatalf("curl http://partner.test/ (in-line, via corp): exit %d: %s", exit, stderr)
	}
	if ec := echoOf(t, stdout); ec.Path != "/via-http" {
		t.Errorf("origin saw path %q", ec.Path)
	}
	reqs := e.parent.Requests()[before:]
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(inlineParentUser+":"+inlineParentPassword))
	var tunnel, plain bool
	for _, r := range reqs {
		switch {
		case r.Method == http.MethodConnect && r.Target == "partner.test:443":
			tunnel = true
		case r.Method == http.MethodGet && r.Target == "http://partner.test/via-http":
			plain = true
		default:
			t.Errorf("parent got %s %s", r.Method, r.Target)
			continue
		}
		if r.ProxyAuthorization != basic || r.Status != http.StatusOK {
			t.Errorf("parent: %s %s with Proxy-Authorization %q answered %d", r.Method, r.Target, r.ProxyAuthorization, r.Status)
		}
	}
	if !tunnel || !plain {
		t.Errorf("parent requests %+v: want CONNECT partner.test:443 and GET http://partner.test/via-http", reqs)
	}
	e.line(t, netip.AddrPortFrom(dial, 443), map[string]any{"host": "partner.test", "sni": "partner.test", "rule": "partner",
		"via": "corp", "via_addr": e.parent.Addr(), "decision": "allow"})
	e.line(t, netip.AddrPortFrom(dial, 80), map[string]any{"host": "partner.test", "path": "/via-http", "rule": "partner",
		"via": "corp", "via_addr": e.parent.Addr(), "status": 200})
}

// testInspected: an in-line TLS tunnel whose rule inspects it is
// terminated by egressd as a CONNECT would be (the client trusts the
// inspection CA), and the rule's paths apply to each request inside.
func (e *inlineEnv) testInspected(t *testing.T) {
	resolve := "inspected.test:443:" + inlineWeb.String()
	before := e.web.Count()
	stdout, stderr, exit := e.in.Client.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "--cacert", e.inspect.RootFile,
		"--resolve", resolve, "https://inspected.test/ok/1")
	if exit != 0 || echoOf(t, stdout).Path != "/ok/1" {
		t.Fatalf("inspected GET /ok/1: exit %d: %s %s", exit, stdout, stderr)
	}
	stdout, _, exit = e.in.Client.Curl(t, "-sS", "-i", "--http1.1", "--max-time", "10", "--noproxy", "*", "--cacert", e.inspect.RootFile,
		"--resolve", resolve, "https://inspected.test/nope")
	if exit != 0 || !strings.HasPrefix(stdout, "HTTP/1.1 403") || !strings.Contains(stdout, "X-Egress-Denied: not_allowed") {
		t.Errorf("inspected GET /nope: exit %d\n%s", exit, stdout)
	}
	if e.web.Count() != before+1 {
		t.Errorf("the origin got %d requests, want 1 (/nope must not reach it)", e.web.Count()-before)
	}
	// The origins' CA cannot satisfy a client of an inspected tunnel:
	// egressd, not the origin, answers the handshake.
	if _, _, exit := e.curl(t, "--resolve", resolve, "https://inspected.test/ok/2"); exit == 0 {
		t.Errorf("an inspected tunnel served the origin's certificate")
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 443), map[string]any{"sni": "inspected.test", "rule": "inspected", "decision": "allow"})
	// Each request inside has a line of its own, with the address the
	// client dialed as the tunnel's line has it.
	for _, r := range []struct {
		path   string
		status int
	}{{"/ok/1", 200}, {"/nope", 403}} {
		e.p.WaitForLog(t, testenv.Fields(map[string]any{"listener": "transparent", "inspected": true, "path": r.path, "status": r.status,
			"orig_dst": netip.AddrPortFrom(inlineWeb, 443).String()}))
	}
}

// testNoSNI: a ClientHello without SNI to an address no cidrs rule allows
// is refused before anything is dialed.
func (e *inlineEnv) testNoSNI(t *testing.T) {
	conns := e.web.Conns()
	raw, err := e.in.Client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(inlineWeb, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	// No ServerName: Go sends no server_name extension.
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Errorf("a ClientHello without SNI completed a handshake")
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 443), map[string]any{"decision": "deny", "reason": "not_allowed",
		"host": inlineWeb.String(), "sni": ""})
	if e.web.Conns() != conns {
		t.Errorf("the origin got a connection for a hello without SNI")
	}
}

// testTraps: names that resolve to the metadata address or a private
// range are refused though a rule names them; the private address dialed
// directly on a redirected port is refused too; none is ever dialed.
func (e *inlineEnv) testTraps(t *testing.T) {
	if _, _, exit := e.curl(t, "--resolve", "meta.test:443:"+inlineWeb.String(), "https://meta.test/"); exit == 0 {
		t.Errorf("curl https://meta.test/ succeeded")
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 443), map[string]any{"sni": "meta.test", "decision": "deny", "reason": "private_range"})
	stdout, _, _ := e.curl(t, "-i", "--resolve", "private.test:80:"+inlineWeb.String(), "http://private.test/")
	if !strings.HasPrefix(stdout, "HTTP/1.1 403") || !strings.Contains(stdout, "X-Egress-Denied: private_range") {
		t.Errorf("curl http://private.test/:\n%s", stdout)
	}
	if _, _, exit := e.curl(t, "--resolve", "allowed.test:443:"+e.in.Private.String(), "https://allowed.test/"); exit != 0 {
		// The SNI decides: allowed.test is reached, not 10.0.0.5.
		t.Errorf("curl https://allowed.test/ at the private address: exit %d", exit)
	}
	// No rule names the address (not_allowed, before the range check).
	stdout, _, _ = e.curl(t, "-i", "http://"+e.in.Private.String()+"/")
	if !strings.HasPrefix(stdout, "HTTP/1.1 403") || !strings.Contains(stdout, "X-Egress-Denied: ") {
		t.Errorf("curl http://10.0.0.5/:\n%s", stdout)
	}
	// The metadata address is dropped by the gateway's rules before
	// egressd: the client cannot even connect.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := e.in.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(e.in.Metadata, 80).String()); err == nil {
		c.Close()
		t.Errorf("the client connected to the metadata address")
	}
	e.hp.AssertNone(t)
}

// testOtherPorts: a port that is neither TLS nor HTTP is decided by cidrs
// rules on the original destination and relayed as a tunnel; an address
// no rule allows is refused.
func (e *inlineEnv) testOtherPorts(t *testing.T) {
	c, err := e.in.Client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(inlineRaw, inlineRawPort).String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	greeting, err := br.ReadString('\n')
	if err != nil || greeting != "raw service\n" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	io.WriteString(c, "ping\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "echo ping\n" {
		t.Errorf("echo %q, %v", echo, err)
	}
	c.Close()
	e.line(t, netip.AddrPortFrom(inlineRaw, inlineRawPort), map[string]any{"decision": "allow", "rule": "raw",
		"host": inlineRaw.String(), "port": inlineRawPort, "ip": inlineRaw.String()})

	d, err := e.in.Client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(inlineDenied, inlineRawPort).String())
	if err == nil {
		d.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := d.Read(make([]byte, 1)); err == nil {
			t.Errorf("a denied destination sent %d bytes", n)
		}
		d.Close()
	}
	e.line(t, netip.AddrPortFrom(inlineDenied, inlineRawPort), map[string]any{"decision": "deny", "reason": "not_allowed"})
	e.hp.AssertNone(t)
}

// testQUIC: UDP 443 is refused at the gateway and reaches nobody.
func (e *inlineEnv) testQUIC(t *testing.T) {
	pc, err := e.in.Internet.ListenPacket("udp", netip.AddrPortFrom(inlineWeb, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := e.in.Client.DialContext(context.Background(), "udp", netip.AddrPortFrom(inlineWeb, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("quic initial"))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("QUIC: %v, want connection refused", err)
	}
	pc.SetReadDeadline(time.Now())
	if n, from, err := pc.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("QUIC: %d bytes from %v reached the internet", n, from)
	}
}

// testLoop: a connection to the transparent listener itself (from the
// gateway's own addresses: the rules keep clients from addressing it) is
// refused as a loop, before anything is read or dialed.
func (e *inlineEnv) testLoop(t *testing.T) {
	for _, a := range []netip.Addr{e.in.GatewayWAN4, e.in.GatewayWAN6, netip.MustParseAddr("127.0.0.1")} {
		dst := netip.AddrPortFrom(a, e.port)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := e.in.Gateway.DialContext(ctx, "tcp", dst.String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("a connection to the listener itself got %d bytes", n)
		}
		c.Close()
		e.line(t, dst, map[string]any{"decision": "deny", "reason": "bad_request"})
	}
}

// TestInlineLimit: past limits.max_connections_per_client, a plain HTTP
// client of the in-line gateway (curl, no proxy settings) gets egressd's
// clean 503 with X-Egress-Error: limit, as a client of listen.http does,
// and an access line with the Host, method and path it sent; a TLS client
// is closed without an answer (there is none to give before its
// handshake). Neither reaches the origin.
func TestInlineLimit(t *testing.T) {
	e := newInlineEnv(t, "redirect", "redirect", func(c *testenv.Config) { c.Limits.MaxConnectionsPerClient = 1 })
	// The client's one connection: a keep-alive request answered by the
	// origin, so egressd has accepted and counted it.
	held, err := e.in.Client.DialContext(context.Background(), "tcp", netip.AddrPortFrom(inlineWeb, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(held, "GET /held HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(held), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the held connection's request: %s", resp.Status)
	}
	webHTTP, webConns := e.webHTTP.Count(), e.web.Conns()

	stdout, stderr, exit := e.curl(t, "-i", "--resolve", "allowed.test:80:"+inlineWeb.String(), "http://allowed.test/over?q=1")
	if exit != 0 || !strings.HasPrefix(stdout, "HTTP/1.1 503") || !strings.Contains(stdout, "X-Egress-Error: limit") ||
		!strings.Contains(stdout, "egressd: refused: limit") {
		t.Errorf("curl http://allowed.test/ past the limit: exit %d %s\n%s", exit, stderr, stdout)
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 80), map[string]any{"decision": "deny", "reason": "limit", "status": 503,
		"host": "allowed.test", "port": 80, "method": "GET", "path": "/over", "client": e.in.ClientAddr4.String()})

	if _, _, exit := e.curl(t, "--resolve", "allowed.test:443:"+inlineWeb.String(), "https://allowed.test/over"); exit == 0 {
		t.Errorf("curl https://allowed.test/ past the limit succeeded")
	}
	e.line(t, netip.AddrPortFrom(inlineWeb, 443), map[string]any{"decision": "deny", "reason": "limit",
		"client": e.in.ClientAddr4.String()})

	if e.webHTTP.Count() != webHTTP || e.web.Conns() != webConns {
		t.Errorf("the origins got %d requests and %d connections past the limit", e.webHTTP.Count()-webHTTP, e.web.Conns()-webConns)
	}
	out, errOut, code := e.in.Gateway.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+e.p.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: curl exit %d: %s", code, errOut)
	}
	m := parseMetrics(t, strings.NewReader(out))
	if v, _ := m.get("egressd_limit_rejections_total", map[string]string{"listener": "transparent", "limit": "max_connections_per_client"}); v != 2 {
		t.Errorf("egressd_limit_rejections_total{listener=transparent} = %v, want 2", v)
	}
	if n := accessCount(e.p, map[string]any{"reason": "limit", "listener": "http"}); n != 0 {
		t.Errorf("%d limit lines of listener http", n)
	}
	e.hp.AssertNone(t)
}
