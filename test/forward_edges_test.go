package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestForwardIDNHost: an absolute URI whose host is an IDN, in raw UTF-8
// or percent-encoded (as Go's own client sends it through a proxy), is
// decided and dialed under one spelling, punycode, and reaches the origin
// with that Host; a host that is no valid name gets a clean 400, never a
// 502. On cd2287e every IDN got 502 dial_error: the decision kept the URI's
// spelling and the Transport dialed the punycode one.
func TestForwardIDNHost(t *testing.T) {
	e := newEdgeEnv(t)
	o := testenv.HTTPOriginIn(t, e.ns, "127.0.0.3", "idn")
	e.dns.Set("xn--bcher-kva.test", 60, netip.MustParseAddr("127.0.0.3"))
	e.start(t, "5m", fmt.Sprintf(`    - name: idn
      hosts: ["xn--bcher-kva.test", "*.xn--bcher-kva.test"]
      ports: [%d]
      allow_ranges: ["127.0.0.0/24"]
`, o.Port()))
	want := fmt.Sprintf("xn--bcher-kva.test:%d", o.Port())

	resp, err := e.client(t, "").Get(fmt.Sprintf("http://bücher.test:%d/go", o.Port()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Go client, IDN host: %d %s %s", resp.StatusCode, resp.Header.Get("X-Egress-Error"), body)
	}
	if echo, err := testenv.ParseEcho(body); err != nil || echo.Host != want {
		t.Fatalf("origin saw Host %q (%v), want %q", echo.Host, err, want)
	}

	for _, tc := range []struct{ name, host string }{
		{"raw UTF-8", "bücher.test"},
		{"raw UTF-8, upper case", "BÜCHER.test"},
		{"percent-encoded", "b%C3%BCcher.test"},
		{"punycode", "xn--bcher-kva.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.rawRequest(t, fmt.Sprintf("GET http://%s:%d/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
				tc.host, o.Port(), strings.ReplaceAll(tc.name, " ", "-")))
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("X-Egress-Error"), body)
			}
			if echo, err := testenv.ParseEcho([]byte(body)); err != nil || echo.Host != want {
				t.Fatalf("origin saw Host %q (%v), want %q", echo.Host, err, want)
			}
		})
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "xn--bcher-kva.test", "status": 200.0}))

	before := o.Count()
	for _, host := range []string{"xn--a.test", "a%FF.xn--bcher-kva.test", "-bad.xn--bcher-kva.test", "a..xn--bcher-kva.test"} {
		t.Run("invalid "+host, func(t *testing.T) {
			resp, body := e.rawRequest(t, fmt.Sprintf("GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", host, o.Port()))
			if resp.StatusCode != 400 || resp.Header.Get("X-Egress-Denied") != "bad_request" {
				t.Fatalf("%d %q %q %s", resp.StatusCode, resp.Header.Get("X-Egress-Denied"), resp.Header.Get("X-Egress-Error"), body)
			}
		})
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "reason": "bad_request", "status": 400.0}))
	if n := o.Count(); n != before {
		t.Fatalf("invalid hosts reached the origin: %d requests", n-before)
	}
}

// TestForwardOriginHeaders: an origin's response headers never steer
// egressd nor pass as its own. X-Egress-* headers from an origin are
// dropped, whatever their case, and hop-by-hop headers are always stripped.
// On cd2287e a response carrying X-Egress-Denied or X-Egress-Error kept
// both, and every hop-by-hop header with them.
func TestForwardOriginHeaders(t *testing.T) {
	e := newEdgeEnv(t)
	o := newScriptOrigin(t, e.ns, "127.0.0.3", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			body := "origin body\n"
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"+
				"X-Egress-Denied: not_allowed\r\nX-Egress-Error: dial_error\r\nx-egress-rule: forged\r\n"+
				"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"+
				"Proxy-Authenticate: Basic realm=\"origin\"\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"+
				"X-Kept: yes\r\n\r\n%s", len(body), body)
		}
	})
	e.dns.Set("hdr.test", 60, netip.MustParseAddr("127.0.0.3"))
	e.start(t, "5m", fmt.Sprintf(`    - name: hdr
      hosts: ["hdr.test"]
      ports: [%d]
      allow_ranges: ["127.0.0.0/24"]
`, o.Port()))

	c := e.client(t, "")
	for i := 0; i < 2; i++ { // the second on the pooled upstream conn
		resp, err := c.Get(fmt.Sprintf("http://hdr.test:%d/%d", o.Port(), i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "origin body\n" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		for k := range resp.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-egress-") {
				t.Errorf("client got the origin's %s: %q", k, resp.Header.Values(k))
			}
		}
		for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Upgrade"} {
			if v := resp.Header.Values(k); len(v) > 0 {
				t.Errorf("client got the hop-by-hop %s: %q", k, v)
			}
		}
		if resp.Header.Get("X-Kept") != "yes" {
			t.Errorf("end-to-end header X-Kept lost: %v", resp.Header)
		}
	}
	line := e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "hdr.test", "status": 200.0}))
	if line["decision"] != "allow" || line["reason"] != "" {
		t.Fatalf("access line: %v", line)
	}
}
