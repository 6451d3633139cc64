package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// newPPFarm is the farm fixture for the PROXY protocol tests: one
// instance behind HAProxy with send-proxy-v2 (and send-proxy on
// lbHTTPv1), the instance trusting lbIP only. Its policy: ops.test for
// group ops (clients from opsIP) only, web.test for everyone. configure,
// when set, changes the config further.
func newPPFarm(t *testing.T, configure func(c *testenv.Config)) *lbFarm {
	t.Helper()
	return newLBFarm(t, lbFarmOpts{instances: 1, proxyProtocol: true, configure: func(f *lbFarm, _ int, c *testenv.Config) {
		c.Timeouts.Handshake = 2 * time.Second
		c.Timeouts.DrainDelay = 0
		c.Timeouts.Drain = 2 * time.Second
		c.Policy.Groups = map[string]testenv.Group{"ops": {CIDRs: []string{opsIP + "/32"}}}
		ports := []int{f.tlsPort, f.httpPort}
		c.Policy.Rules = []testenv.Rule{
			{Name: "ops-only", Groups: []string{"ops"}, Hosts: []string{"ops.test"}, Ports: ports, AllowRanges: []string{"127.0.0.0/24"}},
			{Name: "public", Hosts: []string{"web.test"}, Ports: ports, AllowRanges: []string{"127.0.0.0/24"}},
		}
		if configure != nil {
			configure(c)
		}
	}})
}

// curl runs curl in the farm's namespace, failing on HTTP errors, with the
// CA and the response headers on stderr.
func (f *lbFarm) curl(t *testing.T, args ...string) (out, hdr string, code int) {
	t.Helper()
	return f.ns.Curl(t, append([]string{"-sS", "--fail", "--max-time", "20", "--cacert", f.caFile, "-D", "/dev/stderr"}, args...)...)
}

// TestProxyProtocolHAProxy: behind HAProxy with send-proxy-v2 (and
// send-proxy), the client address HAProxy saw drives group matching and
// the access log, on the HTTP, CONNECT and SOCKS5 paths. Without the PROXY
// header every client would be HAProxy's 127.0.0.10.
func TestProxyProtocolHAProxy(t *testing.T) {
	e := newPPFarm(t, nil)
	p := e.inst[0]
	ops := fmt.Sprintf("http://ops.test:%d/pp", e.httpPort)
	opsTLS := fmt.Sprintf("https://ops.test:%d/pp", e.tlsPort)
	cases := []struct {
		name string
		args []string
		code int
		log  map[string]any
	}{
		{name: "http v2, ops client", args: []string{"--interface", opsIP, "-x", "http://" + e.lbHTTP, ops},
			log: map[string]any{"listener": "http", "client": opsIP, "group": "ops", "decision": "allow", "rule": "ops-only"}},
		{name: "http v2, other client", args: []string{"-x", "http://" + e.lbHTTP, ops}, code: 22,
			log: map[string]any{"listener": "http", "client": "127.0.0.1", "decision": "deny", "reason": "not_allowed"}},
		{name: "http v1, ops client", args: []string{"--interface", opsIP, "-x", "http://" + e.lbHTTPv1, ops},
			log: map[string]any{"listener": "http", "client": opsIP, "group": "ops", "decision": "allow"}},
		{name: "connect v2, ops client", args: []string{"--interface", opsIP, "-x", "http://" + e.lbHTTP, opsTLS},
			log: map[string]any{"listener": "connect", "client": opsIP, "group": "ops", "decision": "allow", "sni": "ops.test"}},
		{name: "connect v2, other client", args: []string{"-x", "http://" + e.lbHTTP, opsTLS}, code: 22,
			log: map[string]any{"listener": "connect", "client": "127.0.0.1", "decision": "deny", "reason": "not_allowed"}},
		{name: "socks5 v2, ops client", args: []string{"--interface", opsIP, "--socks5-hostname", e.lbSOCKS, opsTLS},
			log: map[string]any{"listener": "socks5", "client": opsIP, "group": "ops", "decision": "allow", "sni": "ops.test"}},
		{name: "socks5 v2, other client", args: []string{"--socks5-hostname", e.lbSOCKS, ops}, code: 97,
			log: map[string]any{"listener": "socks5", "client": "127.0.0.1", "decision": "deny", "reason": "not_allowed"}},
		// A direct client (not from trusted_proxies) sends no header and
		// is known by its socket address.
		{name: "direct ops client", args: []string{"--interface", opsIP, "-x", p.ProxyURL().String(), ops},
			log: map[string]any{"listener": "http", "client": opsIP, "group": "ops", "decision": "allow"}},
		{name: "direct socks5 client", args: []string{"--socks5-hostname", p.SOCKSAddr, ops}, code: 97,
			log: map[string]any{"listener": "socks5", "client": "127.0.0.1", "reason": "not_allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			skip := len(p.AccessLines())
			out, hdr, code := e.curl(t, tc.args...)
			if code != tc.code {
				t.Fatalf("curl exit %d, want %d\n%s\n%s", code, tc.code, hdr, out)
			}
			waitLogAfter(t, p, skip, tc.log)
		})
	}
	for _, l := range p.AccessLines() {
		if l["client"] == lbIP {
			t.Errorf("an access line names the load balancer as the client: %v", l)
		}
	}
}

// TestProxyProtocolRefusals: a trusted source must send a header; any other
// source must not. Refused connections are closed without an answer and
// leave no access line.
func TestProxyProtocolRefusals(t *testing.T) {
	e := newPPFarm(t, nil)
	p := e.inst[0]
	ops := fmt.Sprintf("http://ops.test:%d/", e.httpPort)
	before := len(p.AccessLines())

	// The load balancer's address without a header (curl from lbIP).
	if out, hdr, code := e.curl(t, "--interface", lbIP, "-x", p.ProxyURL().String(), ops); code != 52 && code != 55 && code != 56 {
		t.Errorf("trusted source without a header: curl exit %d, want 52, 55 or 56 (closed)\n%s%s", code, hdr, out)
	}
	if out, hdr, code := e.curl(t, "--interface", lbIP, "--socks5-hostname", p.SOCKSAddr, ops); code != 97 {
		t.Errorf("trusted source without a header, socks5: curl exit %d, want 97\n%s%s", code, hdr, out)
	}
	// curl --haproxy-protocol sends a v1 header with its real addresses:
	// from an untrusted source that is refused, from the trusted one it
	// is honoured.
	// (curl reports the close as 52, 55 or 56 depending on when it sees it.)
	if out, hdr, code := e.curl(t, "--haproxy-protocol", "--interface", opsIP, "-x", p.ProxyURL().String(), ops); code != 52 && code != 55 && code != 56 {
		t.Errorf("header from an untrusted source: curl exit %d, want 52, 55 or 56 (closed)\n%s%s", code, hdr, out)
	}
	// Forged headers naming a client of group ops, from 127.0.0.1.
	forged := []struct {
		name, addr string
		data       []byte
	}{
		{"v1 to http", p.HTTPAddr, []byte(fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 3128\r\nGET %s HTTP/1.1\r\nHost: ops.test\r\n\r\n", opsIP, ops))},
		{"v2 to http", p.HTTPAddr, append(ppV2(opsIP), fmt.Sprintf("GET %s HTTP/1.1\r\nHost: ops.test\r\n\r\n", ops)...)},
		{"v1 to socks5", p.SOCKSAddr, []byte(fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 1080\r\n\x05\x01\x00", opsIP))},
		{"v2 to socks5", p.SOCKSAddr, append(ppV2(opsIP), 5, 1, 0)},
	}
	for _, tc := range forged {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.ns.DialContext(ctx, "tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.data)
			assertClosed(t, c)
		})
	}
	// Still serving, and none of the refused connections was logged.
	if out, hdr, code := e.curl(t, "--haproxy-protocol", "--interface", lbIP, "-x", p.ProxyURL().String(), fmt.Sprintf("http://web.test:%d/", e.httpPort)); code != 0 {
		t.Fatalf("v1 header from the trusted source: curl exit %d\n%s%s", code, hdr, out)
	}
	line := p.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "web.test", "decision": "allow"}))
	if line["client"] != lbIP {
		t.Errorf("client %v, want %s (the header's source)", line["client"], lbIP)
	}
	if lines := p.AccessLines()[before:]; len(lines) != 1 {
		t.Errorf("refused connections were logged: %v", lines)
	}
	if !strings.Contains(p.Stderr(), "trusted proxy sent no PROXY header") {
		t.Errorf("no diagnostic for the trusted source without a header:\n%s", p.Stderr())
	}
}

// TestProxyProtocolPerClientLimit: behind HAProxy every connection comes
// from the load balancer, yet limits.max_connections_per_client counts
// each client the PROXY header names: the client at the cap is refused
// (503 with X-Egress-Error: limit, SOCKS5 reply 0x01, an access line with
// reason limit and its own address) while another client behind the same
// load balancer, and the first one once it closes a connection, go on.
func TestProxyProtocolPerClientLimit(t *testing.T) {
	e := newPPFarm(t, func(c *testenv.Config) { c.Limits.MaxConnectionsPerClient = 2 })
	p := e.inst[0]
	target := fmt.Sprintf("web.test:%d", e.httpPort)
	connect := func(from string) (net.Conn, string) {
		t.Helper()
		c := e.ns.DialFrom(t, from, e.lbHTTP)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := testenv.Connect(c, target, nil)
		if err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		return c, resp.Status + " " + resp.Header.Get("X-Egress-Error")
	}
	held := make([]net.Conn, 0, 2)
	for range 2 {
		c, status := connect(opsIP)
		if !strings.HasPrefix(status, "200") {
			t.Fatalf("tunnel %d from %s: %q, want 200", len(held)+1, opsIP, status)
		}
		held = append(held, c)
	}
	skip := len(p.AccessLines())
	if _, status := connect(opsIP); status != "503 Service Unavailable limit" {
		t.Fatalf("third tunnel from %s: %q, want 503 with X-Egress-Error: limit", opsIP, status)
	}
	waitLogAfter(t, p, skip, map[string]any{"listener": "connect", "client": opsIP, "decision": "deny", "reason": "limit"})

	// SOCKS5 through the load balancer: refused the SOCKS5 way.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := e.ns.DialFromContext(ctx, "tcp", opsIP, e.lbSOCKS)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	sc.Write([]byte{5, 1, 0})
	reply := make([]byte, 2)
	if _, err := io.ReadFull(sc, reply); err != nil {
		t.Fatalf("SOCKS5 greeting answer: %v", err)
	}
	req := append([]byte{5, 1, 0, 3, byte(len("web.test"))}, "web.test"...)
	req = binary.BigEndian.AppendUint16(req, uint16(e.httpPort))
	sc.Write(req)
	rep := make([]byte, 2)
	if _, err := io.ReadFull(sc, rep); err != nil || rep[1] != 0x01 {
		t.Fatalf("SOCKS5 request from %s at the cap: reply %v, %v; want 0x01", opsIP, rep, err)
	}

	// Another client behind the same load balancer is not affected.
	if _, status := connect("127.0.0.1"); !strings.HasPrefix(status, "200") {
		t.Fatalf("tunnel from another client: %q, want 200", status)
	}
	// The first client gets a slot back when it closes a tunnel (the
	// limiter sees the close within its sweep).
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, status := connect(opsIP)
		if strings.HasPrefix(status, "200") {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a tunnel, a new one from %s: %q, want 200", opsIP, status)
		}
		time.Sleep(50 * time.Millisecond) // the limiter's sweep is periodic; bounded by the deadline
	}
}

// ppV2 is a PROXY v2 header for a TCP over IPv4 client src.
func ppV2(src string) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, 0x21, 0x11, 0, 12)
	b = append(b, net.ParseIP(src).To4()...)
	b = append(b, 127, 0, 0, 1)
	b = binary.BigEndian.AppendUint16(b, 40000)
	return binary.BigEndian.AppendUint16(b, 3128)
}
