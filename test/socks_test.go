package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/proxy"

	"github.com/egressd/egressd/test/testenv"
)

// SOCKS5 wire values (RFC 1928, RFC 1929) the tests send and expect.
const (
	socksConnect   = 1
	socksBind      = 2
	socksAssociate = 3

	replySucceeded      = 0x00
	replyNotAllowed     = 0x02
	replyHostUnreach    = 0x04
	replyConnRefused    = 0x05
	replyCmdUnsupported = 0x07
)

// socksCreds are RFC 1929 credentials.
type socksCreds struct{ user, pass string }

// socksResult is what a SOCKS5 server answered.
type socksResult struct {
	Method int // chosen method; 0xFF none acceptable; -1 no answer
	Auth   int // RFC 1929 status; -1 when no authentication took place
	Reply  int // RFC 1928 reply code; -1 when none came
}

// socksRequest sends a greeting offering "no authentication" (creds nil) or
// "no authentication" and username/password, as curl does, authenticates,
// then sends cmd for host:port. With asIP the destination is sent as an
// IPv4 or IPv6 address (ATYP 1 or 4: a client that resolved the name
// itself), otherwise as a domain name (ATYP 3, remote DNS) exactly as
// given. It returns the connection positioned after the reply.
func socksRequest(t *testing.T, ns *testenv.Netns, proxyAddr string, creds *socksCreds, cmd byte, host string, port int, asIP bool) (net.Conn, socksResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		t.Fatalf("dial socks5 %s: %v", proxyAddr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	res := socksResult{Method: -1, Auth: -1, Reply: -1}
	greeting := []byte{5, 1, 0}
	if creds != nil {
		greeting = []byte{5, 2, 0, 2}
	}
	if _, err := c.Write(greeting); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return c, res
	}
	res.Method = int(b[1])
	switch res.Method {
	case 0:
	case 2:
		if creds == nil {
			t.Fatalf("server chose username/password that was not offered")
		}
		msg := []byte{1, byte(len(creds.user))}
		msg = append(msg, creds.user...)
		msg = append(msg, byte(len(creds.pass)))
		msg = append(msg, creds.pass...)
		c.Write(msg)
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return c, res
		}
		res.Auth = int(b[1])
		if res.Auth != 0 {
			return c, res
		}
	default:
		return c, res
	}
	req := []byte{5, cmd, 0}
	if asIP {
		a := netip.MustParseAddr(host)
		if a.Is4() {
			req = append(req, 1)
		} else {
			req = append(req, 4)
		}
		req = append(req, a.AsSlice()...)
	} else {
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatalf("request: %v", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return c, res
	}
	res.Reply = int(head[1])
	var rest int
	switch head[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		var l [1]byte
		io.ReadFull(c, l[:])
		rest = int(l[0]) + 2
	}
	if _, err := io.ReadFull(c, make([]byte, rest)); err != nil {
		t.Fatalf("reply address: %v", err)
	}
	return c, res
}

// assertClosed checks that the server closed c without sending more.
func assertClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 64))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed by egressd: %d bytes, %v", n, err)
	}
}

// nsDialer is golang.org/x/net/proxy's forward dialer inside a namespace.
type nsDialer struct{ ns *testenv.Netns }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.ns.DialContext(ctx, network, addr)
}

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.ns.DialContext(ctx, network, addr)
}

// xnetSOCKS returns golang.org/x/net/proxy's SOCKS5 dialer for egressd's
// listener (auth nil: no credentials).
func xnetSOCKS(t *testing.T, ns *testenv.Netns, addr string, auth *proxy.Auth) proxy.ContextDialer {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", addr, auth, nsDialer{ns})
	if err != nil {
		t.Fatal(err)
	}
	return d.(proxy.ContextDialer)
}

// httpVia is an http.Client whose connections are opened by dial (a SOCKS5
// dialer): the origin is reached through egressd's SOCKS5 listener.
func httpVia(t *testing.T, dial proxy.ContextDialer, tlsConf *tls.Config) *http.Client {
	tr := &http.Transport{Proxy: nil, DialContext: dial.DialContext, TLSClientConfig: tlsConf, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// waitLogAfter waits for an access line matching kv among the lines written
// after the first skip lines (Proc.AccessLines at the time of the request):
// an earlier request to the same host cannot satisfy it. It relies on
// WaitForLog passing each line to the predicate once, in order.
func waitLogAfter(t *testing.T, p *testenv.Proc, skip int, kv map[string]any) map[string]any {
	t.Helper()
	seen := 0
	match := testenv.Fields(kv)
	return p.WaitForLog(t, func(m map[string]any) bool {
		i := seen
		seen++
		return i >= skip && match(m)
	})
}

// policyCase is one destination, with the decision every front end must
// give for it.
type policyCase struct {
	name    string
	host    string // as written in a URL authority ([v6] in brackets)
	port    string // a number, or {http} for the plain HTTP origin's port
	reason  string // "" allowed; a deny reason; dns_error or dial_error
	logHost string // host in the access line (normalized)
	rule    string // rule of an allowed request
}

// TestSOCKSPolicyTableAllPaths runs one table of destinations through every
// way a client can ask egressd for one: an absolute-URI HTTP request, a
// CONNECT, SOCKS5 with the name sent to the proxy (remote DNS, ATYP 3) and,
// for IP literals, SOCKS5 with the address (ATYP 1/4: local DNS). One
// policy engine decides all of them, so the answers (status, reply code)
// and the access lines must agree case by case.
func TestSOCKSPolicyTableAllPaths(t *testing.T) {
	f := newFarm(t, "enforce")
	cases := []policyCase{
		{name: "allowed name", host: "allowed.test", port: "{http}", logHost: "allowed.test", rule: "origin"},
		{name: "wildcard any depth", host: "a.b.c.wild.test", port: "{http}", logHost: "a.b.c.wild.test", rule: "origin"},
		{name: "case and trailing dot", host: "ALLOWED.Test.", port: "{http}", logHost: "allowed.test", rule: "origin"},
		{name: "wildcard not apex", host: "wild.test", port: "{http}", reason: "not_allowed", logHost: "wild.test"},
		{name: "no rule", host: "other.test", port: "{http}", reason: "not_allowed", logHost: "other.test"},
		{name: "port not in rule", host: "allowed.test", port: "8081", reason: "port_not_allowed", logHost: "allowed.test"},
		{name: "group rule for another client", host: "ops.test", port: "{http}", reason: "not_allowed", logHost: "ops.test"},
		{name: "name resolving to a private address", host: "private.test", port: "{http}", reason: "private_range", logHost: "private.test"},
		{name: "name resolving to metadata", host: "metadata.test", port: "{http}", reason: "private_range", logHost: "metadata.test"},
		{name: "ip literal in cidrs rule", host: "127.0.0.3", port: "{http}", logHost: "127.0.0.3", rule: "by-ip"},
		{name: "ip literal decimal", host: "2130706435", port: "{http}", logHost: "127.0.0.3", rule: "by-ip"},
		{name: "ip literal mapped v6", host: "[::ffff:127.0.0.3]", port: "{http}", logHost: "127.0.0.3", rule: "by-ip"},
		{name: "metadata literal", host: "169.254.169.254", port: "{http}", reason: "not_allowed", logHost: "169.254.169.254"},
		{name: "private literal, rule as wide as the deny range", host: "10.0.0.5", port: "{http}", reason: "private_range", logHost: "10.0.0.5"},
		{name: "v6 loopback literal", host: "[::1]", port: "{http}", reason: "not_allowed", logHost: "::1"},
		{name: "name does not resolve", host: "no.nx.test", port: "{http}", reason: "dns_error", logHost: "no.nx.test"},
		{name: "nothing listens", host: "dead.test", port: "{http}", reason: "dial_error", logHost: "dead.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port := strings.ReplaceAll(tc.port, "{http}", strconv.Itoa(f.httpPort))
			portN, _ := strconv.Atoi(port)
			authority := tc.host + ":" + port
			bare := strings.Trim(tc.host, "[]")
			wantHTTP, wantSOCKS := 200, replySucceeded
			switch tc.reason {
			case "":
			case "dns_error":
				wantHTTP, wantSOCKS = 502, replyHostUnreach
			case "dial_error":
				wantHTTP, wantSOCKS = 502, replyConnRefused
			default:
				wantHTTP, wantSOCKS = 403, replyNotAllowed
			}
			wantLog := func(listener string) map[string]any {
				kv := map[string]any{"listener": listener, "host": tc.logHost, "port": port}
				if tc.reason == "" {
					kv["decision"], kv["rule"], kv["reason"] = "allow", tc.rule, ""
				} else {
					kv["reason"] = tc.reason
				}
				return kv
			}

			// Absolute-URI HTTP.
			skip := len(f.proc.AccessLines())
			resp := f.rawRequest(t, fmt.Sprintf("GET http://%s/t HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", authority, authority))
			if resp.StatusCode != wantHTTP {
				t.Errorf("http: status %d, want %d", resp.StatusCode, wantHTTP)
			}
			if tc.reason != "" && resp.Header.Get("X-Egress-Denied")+resp.Header.Get("X-Egress-Error") != tc.reason {
				t.Errorf("http: reason headers %v, want %s", resp.Header, tc.reason)
			}
			waitLogAfter(t, f.proc, skip, wantLog("http"))

			// CONNECT.
			skip = len(f.proc.AccessLines())
			c, cresp := f.connect(t, authority)
			c.Close()
			if cresp.StatusCode != wantHTTP {
				t.Errorf("connect: status %d, want %d", cresp.StatusCode, wantHTTP)
			}
			waitLogAfter(t, f.proc, skip, wantLog("connect"))

			// SOCKS5, the name (or literal) as the client wrote it.
			skip = len(f.proc.AccessLines())
			sc, res := socksRequest(t, f.ns, f.proc.SOCKSAddr, nil, socksConnect, bare, portN, false)
			sc.Close()
			if res.Reply != wantSOCKS {
				t.Errorf("socks5 remote DNS: reply %d, want %d", res.Reply, wantSOCKS)
			}
			waitLogAfter(t, f.proc, skip, wantLog("socks5"))

			// SOCKS5 with the address, for literals a client would parse.
			if _, err := netip.ParseAddr(bare); err == nil {
				skip = len(f.proc.AccessLines())
				sc, res := socksRequest(t, f.ns, f.proc.SOCKSAddr, nil, socksConnect, bare, portN, true)
				sc.Close()
				if res.Reply != wantSOCKS {
					t.Errorf("socks5 address: reply %d, want %d", res.Reply, wantSOCKS)
				}
				waitLogAfter(t, f.proc, skip, wantLog("socks5"))
			}
		})
	}
	f.honey.Sync(t)
	f.honey.AssertNone(t)
}

// TestSOCKSCurl drives the SOCKS5 listener with real curl: --socks5-hostname
// sends names (remote DNS), --socks5 with IP-literal URLs sends addresses.
func TestSOCKSCurl(t *testing.T) {
	f := newFarm(t, "enforce")
	cases := []struct {
		name     string
		flag     string
		url      string
		wantCode int // curl exit code: 0, or 97 (the proxy refused)
		log      map[string]any
	}{
		{name: "remote DNS, https", flag: "--socks5-hostname", url: "https://allowed.test:{tls}/h",
			log: map[string]any{"host": "allowed.test", "sni": "allowed.test", "decision": "allow", "rule": "origin", "ip": originIP, "status": 0}},
		{name: "remote DNS, http", flag: "--socks5-hostname", url: "http://a.wild.test:{http}/w",
			log: map[string]any{"host": "a.wild.test", "decision": "allow", "rule": "origin", "ip": httpIP}},
		{name: "remote DNS, denied", flag: "--socks5-hostname", url: "http://other.test:{http}/", wantCode: 97,
			log: map[string]any{"host": "other.test", "decision": "deny", "reason": "not_allowed", "status": 2}},
		{name: "remote DNS, private", flag: "--socks5-hostname", url: "http://private.test:{http}/", wantCode: 97,
			log: map[string]any{"host": "private.test", "decision": "deny", "reason": "private_range"}},
		{name: "address, allowed", flag: "--socks5", url: "http://127.0.0.3:{http}/ip",
			log: map[string]any{"host": "127.0.0.3", "decision": "allow", "rule": "by-ip", "ip": httpIP}},
		{name: "address, metadata", flag: "--socks5", url: "http://169.254.169.254:{http}/", wantCode: 97,
			log: map[string]any{"host": "169.254.169.254", "decision": "deny", "reason": "not_allowed"}},
		// TLS clients never send an IP as SNI: an IP destination on a TLS
		// port needs none (policy.CheckSNI), through SOCKS5 as through CONNECT.
		{name: "address, https without SNI", flag: "--socks5", url: "https://127.0.0.2:{tls}/",
			log: map[string]any{"host": "127.0.0.2", "sni": "", "decision": "allow", "rule": "by-ip", "ip": originIP}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := strings.NewReplacer("{tls}", strconv.Itoa(f.tlsPort), "{http}", strconv.Itoa(f.httpPort)).Replace(tc.url)
			skip := len(f.proc.AccessLines())
			out, hdr, code := f.curl(t, nil, tc.flag, f.proc.SOCKSAddr, "--fail", url)
			if code != tc.wantCode {
				t.Fatalf("curl %s %s: exit %d, want %d\n%s\n%s", tc.flag, url, code, tc.wantCode, hdr, out)
			}
			if code == 0 {
				if _, err := testenv.ParseEcho([]byte(out)); err != nil {
					t.Fatalf("origin answer: %v (%q)", err, out)
				}
			}
			tc.log["listener"] = "socks5"
			tc.log["client"] = "127.0.0.1"
			waitLogAfter(t, f.proc, skip, tc.log)
		})
	}
	f.honey.Sync(t)
	f.honey.AssertNone(t)
}

// TestSOCKSXNetProxy uses golang.org/x/net/proxy's SOCKS5 dialer, as Go
// services do, for HTTP and HTTPS through egressd.
func TestSOCKSXNetProxy(t *testing.T) {
	f := newFarm(t, "enforce")
	d := xnetSOCKS(t, f.ns, f.proc.SOCKSAddr, nil)
	c := httpVia(t, d, &tls.Config{RootCAs: f.ca.CertPool()})
	for _, url := range []string{
		fmt.Sprintf("https://allowed.test:%d/x", f.tlsPort),
		fmt.Sprintf("http://allowed.test:%d/x", f.httpPort),
		fmt.Sprintf("http://127.0.0.3:%d/x", f.httpPort), // x/net sends an IP literal as ATYP 1
	} {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
	}
	_, err := c.Get(fmt.Sprintf("http://other.test:%d/", f.httpPort))
	if err == nil || !strings.Contains(err.Error(), "not allowed by ruleset") {
		t.Fatalf("denied GET: %v, want the ruleset refusal", err)
	}
	f.waitLog(t, map[string]any{"listener": "socks5", "host": "other.test", "reason": "not_allowed"})
}

// TestSOCKSAccessLineFields: a SOCKS5 tunnel's access line has exactly the
// fields of a CONNECT tunnel's.
func TestSOCKSAccessLineFields(t *testing.T) {
	f := newFarm(t, "enforce")
	if _, err := f.tlsThrough(t, fmt.Sprintf("allowed.test:%d", f.tlsPort), "allowed.test"); err != nil {
		t.Fatal(err)
	}
	connect := f.waitLog(t, map[string]any{"listener": "connect", "host": "allowed.test"})
	c := httpVia(t, xnetSOCKS(t, f.ns, f.proc.SOCKSAddr, nil), &tls.Config{RootCAs: f.ca.CertPool()})
	resp, err := c.Get(fmt.Sprintf("https://allowed.test:%d/", f.tlsPort))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	socks := f.waitLog(t, map[string]any{"listener": "socks5", "host": "allowed.test"})
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	if diff := cmp.Diff(keys(connect), keys(socks)); diff != "" {
		t.Errorf("access line keys, connect (-) vs socks5 (+):\n%s", diff)
	}
	for _, k := range []string{"client", "host", "port", "sni", "ip", "decision", "rule", "reason", "group", "user"} {
		if fmt.Sprint(connect[k]) != fmt.Sprint(socks[k]) {
			t.Errorf("%s: connect %v, socks5 %v", k, connect[k], socks[k])
		}
	}
	if socks["status"] != float64(0) || socks["bytes_up"].(float64) <= 0 || socks["bytes_down"].(float64) <= 0 {
		t.Errorf("socks5 line: status %v, bytes %v/%v", socks["status"], socks["bytes_up"], socks["bytes_down"])
	}
}

// TestSOCKSGuard: SOCKS5 tunnels to tls_ports get the SNI check CONNECT
// tunnels get.
func TestSOCKSGuard(t *testing.T) {
	f := newFarm(t, "enforce")
	d := xnetSOCKS(t, f.ns, f.proc.SOCKSAddr, nil)
	target := fmt.Sprintf("allowed.test:%d", f.tlsPort)
	through := func(serverName string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			t.Fatalf("socks5 to %s: %v", target, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: serverName, RootCAs: f.ca.CertPool(), InsecureSkipVerify: serverName == ""})
		if err := tc.Handshake(); err != nil {
			return err
		}
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(tc), nil)
		return err
	}
	if err := through("allowed.test"); err != nil {
		t.Fatalf("matching SNI: %v", err)
	}
	f.waitLog(t, map[string]any{"listener": "socks5", "sni": "allowed.test", "decision": "allow"})
	if err := through("evil.test"); err == nil {
		t.Fatal("SNI evil.test through a tunnel to allowed.test succeeded")
	}
	f.waitLog(t, map[string]any{"listener": "socks5", "host": "allowed.test", "sni": "evil.test", "decision": "deny", "reason": "sni_mismatch"})
	if err := through(""); err == nil {
		t.Fatal("no SNI succeeded")
	}
	f.waitLog(t, map[string]any{"listener": "socks5", "host": "allowed.test", "decision": "deny", "reason": "sni_missing"})

	c, res := socksRequest(t, f.ns, f.proc.SOCKSAddr, nil, socksConnect, "allowed.test", f.tlsPort, false)
	if res.Reply != replySucceeded {
		t.Fatalf("reply %d", res.Reply)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	assertClosed(t, c)
	f.waitLog(t, map[string]any{"listener": "socks5", "host": "allowed.test", "decision": "deny", "reason": "protocol_mismatch"})
	if n := f.tls.Count(); n != 1 {
		t.Fatalf("origin served %d requests, want only the one with the matching SNI", n)
	}
}

// TestSOCKSReplies: denials, upstream failures and unsupported commands get
// their RFC 1928 reply codes, and the connection is closed after them.
func TestSOCKSReplies(t *testing.T) {
	f := newFarm(t, "enforce")
	cases := []struct {
		name  string
		cmd   byte
		host  string
		port  int
		reply int
		log   map[string]any
	}{
		{"denied", socksConnect, "other.test", f.httpPort, replyNotAllowed, map[string]any{"reason": "not_allowed", "status": 2}},
		{"name does not resolve", socksConnect, "x.nx.test", f.httpPort, replyHostUnreach, map[string]any{"reason": "dns_error", "status": 4}},
		{"connection refused", socksConnect, "dead.test", f.httpPort, replyConnRefused, map[string]any{"reason": "dial_error", "status": 5}},
		{"bind", socksBind, "allowed.test", f.httpPort, replyCmdUnsupported, map[string]any{"decision": "deny", "status": 7}},
		{"udp associate", socksAssociate, "0.0.0.0", 0, replyCmdUnsupported, map[string]any{"decision": "deny", "status": 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, res := socksRequest(t, f.ns, f.proc.SOCKSAddr, nil, tc.cmd, tc.host, tc.port, tc.host == "0.0.0.0")
			if res.Reply != tc.reply {
				t.Fatalf("reply %d, want %d", res.Reply, tc.reply)
			}
			assertClosed(t, c)
			tc.log["listener"], tc.log["host"] = "socks5", tc.host
			f.waitLog(t, tc.log)
		})
	}
	f.honey.Sync(t)
	f.honey.AssertNone(t)
}

// socksEnv is egressd with a SOCKS5-focused policy in its own namespace:
// an IPv4 and an IPv6 (ULA, on the namespace's loopback) HTTP origin, and
// pprof on the admin listener for goroutine counts.
type socksEnv struct {
	ns     *testenv.Netns
	dns    *testenv.DNSServer
	web4   *testenv.Origin
	web6   *testenv.Origin
	proc   *testenv.Proc
	web4IP string
	web6IP string
}

func newSOCKSEnv(t *testing.T) *socksEnv {
	t.Helper()
	e := &socksEnv{web4IP: "127.0.0.3", web6IP: "fd00:e9::3"}
	e.ns = testenv.NewNetns(t, e.web6IP+"/128")
	e.web4 = testenv.HTTPOriginIn(t, e.ns, e.web4IP, "web4")
	e.web6 = testenv.HTTPOriginIn(t, e.ns, e.web6IP, "web6")
	e.dns = testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	e.dns.Set("web.test", 60, netip.MustParseAddr(e.web4IP))
	e.dns.Set("web6.test", 60, netip.MustParseAddr(e.web6IP))
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, e.ns, "127.0.0.1")
	c.Admin.Pprof = true
	c.DNS.Servers = []string{e.dns.Addr()}
	c.Timeouts.Handshake = 2 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.TLSPorts = []int{443}
	c.Policy.Rules = []testenv.Rule{
		{Name: "web", Hosts: []string{"web.test", "web6.test"}, CIDRs: []string{"127.0.0.3/32", e.web6IP + "/128"},
			Ports: []int{e.web4.Port(), e.web6.Port()}, AllowRanges: []string{"127.0.0.0/24", "fd00:e9::/64"}},
		{Name: "loopback6", CIDRs: []string{"::1/128"}, Ports: []int{e.web4.Port()}},
	}
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, c)
	return e
}

// TestSOCKSAddressTypes: CONNECT with each RFC 1928 address type (IPv4,
// domain name, IPv6) reaches the origin, through raw requests, curl and
// golang.org/x/net/proxy.
func TestSOCKSAddressTypes(t *testing.T) {
	e := newSOCKSEnv(t)
	get := func(c net.Conn, host string) testenv.Echo {
		t.Helper()
		fmt.Fprintf(c, "GET /atyp HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("response: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		echo, err := testenv.ParseEcho(body)
		if err != nil {
			t.Fatalf("origin answer %q: %v", body, err)
		}
		return echo
	}
	cases := []struct {
		name, host string
		port       int
		asIP       bool
		origin, ip string
	}{
		{"ipv4", e.web4IP, e.web4.Port(), true, "web4", e.web4IP},
		{"domain", "web.test", e.web4.Port(), false, "web4", e.web4IP},
		{"domain with AAAA", "web6.test", e.web6.Port(), false, "web6", e.web6IP},
		{"ipv6", e.web6IP, e.web6.Port(), true, "web6", e.web6IP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, tc.host, tc.port, tc.asIP)
			if res.Reply != replySucceeded {
				t.Fatalf("reply %d", res.Reply)
			}
			if echo := get(c, tc.host); echo.Origin != tc.origin {
				t.Fatalf("reached %q, want %q", echo.Origin, tc.origin)
			}
			c.Close()
			e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "socks5", "host": tc.host, "ip": tc.ip, "decision": "allow", "rule": "web"}))
		})
	}
	// [::1] is a loopback literal: a cidrs rule equal to the deny range
	// ties, and a tie denies.
	c, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, "::1", e.web4.Port(), true)
	if res.Reply != replyNotAllowed {
		t.Fatalf("[::1]: reply %d", res.Reply)
	}
	c.Close()
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "socks5", "host": "::1", "reason": "private_range"}))

	// Real clients: curl sends an IPv6 URL's address as ATYP 4, x/net
	// sends literals as addresses and names as names.
	for _, url := range []string{
		fmt.Sprintf("http://[%s]:%d/curl6", e.web6IP, e.web6.Port()),
		fmt.Sprintf("http://%s:%d/curl4", e.web4IP, e.web4.Port()),
	} {
		out, errOut, code := e.ns.Curl(t, "-sS", "--fail", "--max-time", "20", "--socks5", e.proc.SOCKSAddr, url)
		if code != 0 {
			t.Fatalf("curl --socks5 %s: exit %d: %s %s", url, code, out, errOut)
		}
	}
	hc := httpVia(t, xnetSOCKS(t, e.ns, e.proc.SOCKSAddr, nil), nil)
	for _, url := range []string{
		fmt.Sprintf("http://[%s]:%d/xnet6", e.web6IP, e.web6.Port()),
		fmt.Sprintf("http://web6.test:%d/xnet6name", e.web6.Port()),
		fmt.Sprintf("http://%s:%d/xnet4", e.web4IP, e.web4.Port()),
	} {
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("x/net GET %s: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("x/net GET %s: %d", url, resp.StatusCode)
		}
	}
	var paths []string
	for _, r := range append(e.web6.Requests(), e.web4.Requests()...) {
		paths = append(paths, r.Path)
	}
	for _, p := range []string{"/curl6", "/curl4", "/xnet6", "/xnet6name", "/xnet4"} {
		if !slices.Contains(paths, p) {
			t.Errorf("origin never saw %s (saw %v)", p, paths)
		}
	}
}

// goroutines reads egressd's goroutine count from its pprof endpoint.
func goroutines(t *testing.T, e *socksEnv) int {
	t.Helper()
	tr := &http.Transport{DialContext: e.ns.DialContext, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + e.proc.AdminAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	m := regexp.MustCompile(`total (\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("goroutine profile: %q", line)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// fds counts egressd's open descriptors.
func fds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSOCKSGarbage: malformed greetings, truncated requests and unknown
// versions close the connection, and after a burst of them egressd has no
// more goroutines or descriptors than before, and keeps serving.
func TestSOCKSGarbage(t *testing.T) {
	e := newSOCKSEnv(t)
	inputs := [][]byte{
		{},                                  // connect and close
		{4, 1, 0, 80, 127, 0, 0, 1, 0},      // SOCKS4
		{5},                                 // version only
		{5, 3, 0},                           // truncated method list
		{5, 0},                              // no methods: 0xFF
		{5, 1, 0, 5, 1},                     // truncated request
		{5, 1, 0, 5, 1, 0, 3, 40, 'a', 'b'}, // truncated name
		{5, 1, 0, 5, 1, 0, 9, 1, 2},         // unknown address type
		{5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 3, 0, 80}, // request version 4
		{5, 1, 2, 1, 200, 'x'},                     // username/password not offered by us, truncated
		[]byte("GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"),
		{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, // TLS to the SOCKS port
		[]byte(strings.Repeat("\x05\xff", 300)),
	}
	// Warm up: the first connections start long-lived runtime goroutines.
	for _, in := range inputs[:3] {
		garbage(t, e, in)
	}
	g0, f0 := goroutines(t, e), fds(t, e.proc.PID())
	const rounds = 15 // bounded: 195 connections
	for range rounds {
		for _, in := range inputs {
			garbage(t, e, in)
		}
	}
	// Every connection was closed by egressd (garbage read EOF), so its
	// descriptor is gone; its goroutine returns right after: bounded wait.
	deadline := time.Now().Add(10 * time.Second)
	g1 := goroutines(t, e)
	for ; g1 > g0 && time.Now().Before(deadline); g1 = goroutines(t, e) {
		time.Sleep(20 * time.Millisecond) // polling a count in another process: no event to wait on
	}
	// The admin connection goroutines() used may still be closing on
	// egressd's side when the count is read: a leak is what stays.
	f1 := fds(t, e.proc.PID())
	for ; f1 > f0 && time.Now().Before(deadline); f1 = fds(t, e.proc.PID()) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("egressd before/after %d garbage connections: %d/%d goroutines, %d/%d descriptors", rounds*len(inputs), g0, g1, f0, f1)
	if g1 > g0 {
		t.Errorf("egressd has %d goroutines after the garbage, %d before", g1, g0)
	}
	if f1 > f0 {
		t.Errorf("egressd has %d descriptors after the garbage, %d before", f1, f0)
	}
	c, res := socksRequest(t, e.ns, e.proc.SOCKSAddr, nil, socksConnect, "web.test", e.web4.Port(), false)
	if res.Reply != replySucceeded {
		t.Fatalf("not serving after the garbage: reply %d", res.Reply)
	}
	c.Close()
	if strings.Contains(e.proc.Stderr(), "panic") {
		t.Errorf("egressd logged a panic:\n%s", e.proc.Stderr())
	}
}

// garbage sends in, half-closes, and requires egressd to close the
// connection (reading whatever it answered first).
func garbage(t *testing.T, e *socksEnv, in []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.ns.DialContext(ctx, "tcp", e.proc.SOCKSAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(in)
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("egressd did not close after % x", in)
		}
	}
}
