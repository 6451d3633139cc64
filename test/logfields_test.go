package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// logFieldsEnv is egressd with log.tunnel_open on, in front of a TLS origin
// (on a tls_ports port, so the guard reads each ClientHello), a plain HTTP
// origin, and a name whose port nothing listens on.
type logFieldsEnv struct {
	ns            *testenv.Netns
	proc          *testenv.Proc
	tlsO, plainO  *testenv.Origin
	caFile        string
	closedPort    int
	tlsTarget     string // tls.test:port
	plainTarget   string // plain.test:port
	closedTarget  string // closed.test:port
	admin, socks5 string
}

func newLogFieldsEnv(t *testing.T) *logFieldsEnv {
	t.Helper()
	e := &logFieldsEnv{ns: testenv.NewNetns(t)}
	ca := testenv.NewCA(t)
	e.caFile = ca.WritePEM(t.TempDir())
	e.tlsO = testenv.TLSOriginIn(t, e.ns, ca, "127.0.0.2", "tls.test")
	e.plainO = testenv.HTTPOriginIn(t, e.ns, "127.0.0.3", "plain.test")
	_, port, _ := net.SplitHostPort(e.ns.FreeAddr(t, "127.0.0.4"))
	e.closedPort, _ = strconv.Atoi(port)
	dns := testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	dns.Set("tls.test", 60, netip.MustParseAddr("127.0.0.2"))
	dns.Set("plain.test", 60, netip.MustParseAddr("127.0.0.3"))
	dns.Set("closed.test", 60, netip.MustParseAddr("127.0.0.4"))
	e.tlsTarget = fmt.Sprintf("tls.test:%d", e.tlsO.Port())
	e.plainTarget = fmt.Sprintf("plain.test:%d", e.plainO.Port())
	e.closedTarget = fmt.Sprintf("closed.test:%d", e.closedPort)

	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, e.ns, "127.0.0.1")
	c.DNS.Servers = []string{dns.Addr()}
	c.Log.TunnelOpen = true
	c.Policy.TLSPorts = []int{e.tlsO.Port()}
	c.Policy.Rules = []testenv.Rule{{Name: "origins", Hosts: []string{"tls.test", "plain.test", "closed.test"},
		Ports: []int{e.tlsO.Port(), e.plainO.Port(), e.closedPort}, AllowRanges: []string{"127.0.0.0/24"}}}
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, c)
	return e
}

func (e *logFieldsEnv) scrape(t *testing.T) metrics {
	t.Helper()
	out, errOut, code := e.ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+e.proc.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: %d %s", code, errOut)
	}
	return parseMetrics(t, strings.NewReader(out))
}

// curlTLS fetches https://tls.test/path through proxyArgs with real curl
// and returns the origin's echo and curl's local port (its side of the
// connection to egressd).
func (e *logFieldsEnv) curlTLS(t *testing.T, path string, args ...string) (testenv.Echo, int) {
	t.Helper()
	args = append([]string{"-sS", "--max-time", "20", "--cacert", e.caFile, "-w", "\n%{local_port}"}, args...)
	out, errOut, code := e.ns.Curl(t, append(args, "https://"+e.tlsTarget+path)...)
	if code != 0 {
		t.Fatalf("curl %v: exit %d: %s", args, code, errOut)
	}
	out = strings.TrimSpace(out)
	i := strings.LastIndexByte(out, '\n')
	if i < 0 {
		t.Fatalf("curl output %q", out)
	}
	body, port := out[:i], out[i+1:]
	echo, err := testenv.ParseEcho([]byte(body))
	if err != nil {
		t.Fatalf("origin answer %q: %v", out, err)
	}
	local, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("curl local_port %q", port)
	}
	return echo, local
}

var hexID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// linesOf returns the indexes (in access-log order) of the open and close
// lines with id.
func linesOf(lines []map[string]any, id any) (open, close []int) {
	for i, l := range lines {
		if l["id"] != id {
			continue
		}
		switch l["event"] {
		case "open":
			open = append(open, i)
		case "close":
			close = append(close, i)
		}
	}
	return open, close
}

// checkTunnelLines checks the open and close lines of the tunnel whose
// close line is end: one of each, the open one first, with the same keys.
func checkTunnelLines(t *testing.T, p *testenv.Proc, end map[string]any) {
	t.Helper()
	id, _ := end["id"].(string)
	if !hexID.MatchString(id) {
		t.Fatalf("id %q, want 16 hex digits", end["id"])
	}
	lines := p.AccessLines()
	open, closing := linesOf(lines, id)
	if len(open) != 1 || len(closing) != 1 || open[0] > closing[0] {
		t.Fatalf("id %s: open lines at %v, close lines at %v: want one of each, open first", id, open, closing)
	}
	o := lines[open[0]]
	for k, v := range end {
		if _, ok := o[k]; !ok {
			t.Errorf("open line lacks %s (close line: %v)", k, v)
		}
	}
	for _, k := range []string{"listener", "client", "client_port", "host", "port", "sni", "ip", "egress_addr", "tls_version", "alpn", "decision", "rule"} {
		if fmt.Sprint(o[k]) != fmt.Sprint(end[k]) {
			t.Errorf("%s: open line %v, close line %v", k, o[k], end[k])
		}
	}
}

// TestAccessLogFields: through CONNECT (curl, TLS 1.2 at most, HTTP/1.1)
// and SOCKS5 (curl --socks5-hostname, TLS 1.3, h2 offered) to a TLS origin,
// and a forwarded request (Go's http.Transport), each access line carries
// the client's own source port, the address egressd dialed from (the peer
// address the origin saw), the ClientHello's version and ALPN list, the
// forwarded request's method, path without its query and User-Agent, and
// an id; each tunnel also wrote an open line, before its close line and
// with the same id. The durations and the dial results are in the metrics.
func TestAccessLogFields(t *testing.T) {
	e := newLogFieldsEnv(t)
	p := e.proc
	start := e.scrape(t)

	t.Run("connect", func(t *testing.T) {
		echo, local := e.curlTLS(t, "/c", "-x", p.ProxyURL().String(), "--http1.1", "--tls-max", "1.2")
		end := p.WaitForLog(t, testenv.Fields(map[string]any{"listener": "connect", "event": "close", "host": "tls.test"}))
		want := map[string]any{"client_port": local, "egress_addr": echo.Remote, "tls_version": "TLSv1.2",
			"alpn": "[http/1.1]", "sni": "tls.test", "ip": "127.0.0.2"}
		for k, v := range want {
			if fmt.Sprint(end[k]) != fmt.Sprint(v) {
				t.Errorf("%s = %v, want %v (line %v)", k, end[k], v, end)
			}
		}
		checkEgressAddr(t, end, "127.0.0.2")
		checkTunnelLines(t, p, end)
	})

	t.Run("socks5", func(t *testing.T) {
		echo, local := e.curlTLS(t, "/s", "--socks5-hostname", p.SOCKSAddr)
		end := p.WaitForLog(t, testenv.Fields(map[string]any{"listener": "socks5", "event": "close", "host": "tls.test"}))
		want := map[string]any{"client_port": local, "egress_addr": echo.Remote, "tls_version": "TLSv1.3",
			"alpn": "[h2 http/1.1]"}
		for k, v := range want {
			if fmt.Sprint(end[k]) != fmt.Sprint(v) {
				t.Errorf("%s = %v, want %v (line %v)", k, end[k], v, end)
			}
		}
		checkEgressAddr(t, end, "127.0.0.2")
		checkTunnelLines(t, p, end)
	})

	t.Run("forwarded", func(t *testing.T) {
		client := p.HTTPClient(t, nil)
		var local int
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { local = info.Conn.LocalAddr().(*net.TCPAddr).Port },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.plainTarget+"/a/b%20c?token=secret-query", nil)
		req.Header.Set("User-Agent", "logfields-test/1.0")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		echo, err := testenv.ParseEcho(body)
		if err != nil || echo.Query != "token=secret-query" {
			t.Fatalf("origin answer %q (%v): the request did not arrive whole", body, err)
		}
		end := p.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "plain.test"}))
		want := map[string]any{"event": "close", "method": "GET", "path": "/a/b%20c", "user_agent": "logfields-test/1.0",
			"client_port": local, "egress_addr": echo.Remote, "status": 200}
		for k, v := range want {
			if fmt.Sprint(end[k]) != fmt.Sprint(v) {
				t.Errorf("%s = %v, want %v (line %v)", k, end[k], v, end)
			}
		}
		if fmt.Sprint(end) != strings.ReplaceAll(fmt.Sprint(end), "secret-query", "") {
			t.Errorf("the query reached the access line: %v", end)
		}
		if _, ok := end["tls_version"]; ok {
			t.Errorf("a forwarded request has tls_version: %v", end)
		}
		checkEgressAddr(t, end, "127.0.0.3")
		if open, _ := linesOf(p.AccessLines(), end["id"]); len(open) != 0 {
			t.Errorf("a forwarded request wrote an open line")
		}
	})

	t.Run("open line while the tunnel lasts", func(t *testing.T) {
		c, resp := p.Connect(t, e.plainTarget, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: %s", resp.Status)
		}
		local := c.LocalAddr().(*net.TCPAddr).Port
		open := p.WaitForLog(t, testenv.Fields(map[string]any{"event": "open", "host": "plain.test", "client_port": local}))
		if _, closing := linesOf(p.AccessLines(), open["id"]); len(closing) != 0 {
			t.Fatalf("the close line is there while the tunnel is open")
		}
		if open["bytes_up"] != 0.0 || open["status"] != 200.0 {
			t.Errorf("open line: bytes_up %v, status %v", open["bytes_up"], open["status"])
		}
		// A request through the tunnel, then the client ends it.
		fmt.Fprintf(c, "GET /t HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
		if b, err := io.ReadAll(c); err != nil || !strings.Contains(string(b), `"path":"/t"`) {
			t.Fatalf("through the tunnel: %q %v", b, err)
		}
		c.Close()
		end := p.WaitForLog(t, testenv.Fields(map[string]any{"event": "close", "id": open["id"]}))
		if end["bytes_up"].(float64) <= 0 || end["egress_addr"] != open["egress_addr"] {
			t.Errorf("close line %v after open line %v", end, open)
		}
	})

	t.Run("dial refused", func(t *testing.T) {
		_, resp := p.Connect(t, e.closedTarget, nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("CONNECT to a closed port: %s", resp.Status)
		}
		end := p.WaitForLog(t, testenv.Fields(map[string]any{"host": "closed.test", "reason": "dial_error"}))
		if end["egress_addr"] != "" || end["event"] != "close" {
			t.Errorf("egress_addr %v, event %v: want none, close", end["egress_addr"], end["event"])
		}
		if open, _ := linesOf(p.AccessLines(), end["id"]); len(open) != 0 {
			t.Errorf("a tunnel that never opened wrote an open line")
		}
	})

	// Every line has its own id but the two lines of one tunnel.
	ids := map[any]int{}
	for _, l := range p.AccessLines() {
		ids[l["id"]]++
	}
	for id, n := range ids {
		if n > 2 {
			t.Errorf("id %v on %d lines", id, n)
		}
	}

	// The metrics: one duration per tunnel (connect: curl and the held
	// one; socks5: curl), one per forwarded request, and the dials by
	// result (four connected, one refused).
	var end metrics
	waitUntil(t, 10*time.Second, func() bool {
		end = e.scrape(t)
		v, _ := end.get("egressd_tunnel_duration_seconds", map[string]string{"listener": "connect"})
		return v == 2
	}, func() string { return "egressd_tunnel_duration_seconds{listener=connect} did not reach 2" })
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"egressd_tunnel_duration_seconds", map[string]string{"listener": "connect"}, 2},
		{"egressd_tunnel_duration_seconds", map[string]string{"listener": "socks5"}, 1},
		{"egressd_tunnel_duration_seconds", map[string]string{"listener": "http"}, 0},
		{"egressd_http_request_duration_seconds", map[string]string{}, 1},
		{"egressd_dial_duration_seconds", map[string]string{"result": "success"}, 4},
		{"egressd_dial_duration_seconds", map[string]string{"result": "refused"}, 1},
		{"egressd_dial_duration_seconds", map[string]string{"result": "timeout"}, 0},
	} {
		before, _ := start.get(c.name, c.labels)
		after, ok := end.get(c.name, c.labels)
		if !ok || after-before != c.want {
			t.Errorf("%s%v moved by %v (exists: %v), want %v", c.name, c.labels, after-before, ok, c.want)
		}
	}
}

// checkEgressAddr: egress_addr is IP:port on loopback, the address the
// origin on originIP saw the connection come from.
func checkEgressAddr(t *testing.T, line map[string]any, originIP string) {
	t.Helper()
	s, _ := line["egress_addr"].(string)
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Errorf("egress_addr %q (origin %s): want a loopback IP:port", s, originIP)
	}
}
