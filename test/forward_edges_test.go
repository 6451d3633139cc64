package test

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

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
	e.start(t, 5*time.Minute, testenv.Rule{Name: "idn", Hosts: []string{"xn--bcher-kva.test", "*.xn--bcher-kva.test"},
		Ports: []int{o.Port()}, AllowRanges: []string{"127.0.0.0/24"}})
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
	e.start(t, 5*time.Minute, testenv.Rule{Name: "hdr", Hosts: []string{"hdr.test"}, Ports: []int{o.Port()},
		AllowRanges: []string{"127.0.0.0/24"}})

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

// TestForwardTimeouts: timeouts.idle bounds every wait without progress on
// the forwarded path. A client whose body stalls gets 408 while nothing of
// the request left egressd, else its connection is cut; an origin that
// stalls before its response head gets the client a 504, and one that
// stalls mid-body gets the client's connection cut (the part it got cannot
// pass for the whole); a client that stops reading is cut. Each is logged
// with reason timeout. On cd2287e every one of them waited forever.
func TestForwardTimeouts(t *testing.T) {
	e := newEdgeEnv(t)
	var mu sync.Mutex
	heads := map[string]string{} // path -> the head the origin received
	o := newScriptOrigin(t, e.ns, "127.0.0.3", func(c net.Conn) {
		br := bufio.NewReader(c)
		head, err := readHead(br)
		if err != nil {
			return
		}
		path := strings.Fields(head)[1]
		mu.Lock()
		heads[path] = head
		mu.Unlock()
		switch path {
		case "/stall-head":
			io.Copy(io.Discard, br) // never answers; egressd closes
		case "/stall-body":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			io.Copy(io.Discard, br)
		case "/stall-chunked":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
			io.Copy(io.Discard, br)
		case "/endless":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
			chunk := make([]byte, 64<<10)
			for i := 0; i < 4096; i++ { // at most 256 MiB: far more than the buffers between
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		default: // a request with a body: read it, answer
			io.Copy(io.Discard, br)
		}
	})
	received := func(path string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		h, ok := heads[path]
		return h, ok
	}
	e.dns.Set("slow.test", 60, netip.MustParseAddr("127.0.0.3"))
	e.start(t, time.Second, testenv.Rule{Name: "slow", Hosts: []string{"slow.test"}, Ports: []int{o.Port()},
		AllowRanges: []string{"127.0.0.0/24"}})
	url := func(path string) string { return fmt.Sprintf("http://slow.test:%d%s", o.Port(), path) }
	logged := func(t *testing.T, path string, status float64) {
		t.Helper()
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "slow.test", "reason": "timeout", "status": status}))
	}

	t.Run("client sends no body", func(t *testing.T) {
		conns := o.Conns()
		c := e.dialProxy(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", url("/post-none"))
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a body that never came: %v", err)
		}
		if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("X-Egress-Error") != "timeout" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Egress-Error"))
		}
		logged(t, "/post-none", 408)
		if n := o.Conns() - conns; n != 0 {
			t.Fatalf("the origin was dialed %d times for a request that never came", n)
		}
	})
	t.Run("client body stalls", func(t *testing.T) {
		// The case: Content-Length 10, one byte, then nothing.
		c := e.dialProxy(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nA", url("/post-stall"))
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || len(b) != 0 {
			t.Fatalf("want the connection closed without an answer (the origin got part of the request), got %q, %v", b, err)
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "slow.test", "reason": "timeout", "bytes_up": 1.0}))
		if _, ok := received("/post-stall"); !ok {
			t.Fatal("the origin never got the request head")
		}
	})
	t.Run("origin stalls before its response head", func(t *testing.T) {
		resp, err := e.client(t, "").Get(url("/stall-head"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Egress-Error") != "timeout" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("X-Egress-Error"))
		}
		logged(t, "/stall-head", 504)
	})
	for _, path := range []string{"/stall-body", "/stall-chunked"} {
		t.Run("origin stalls mid-body "+path, func(t *testing.T) {
			// The client gets part of the response, or nothing, and then
			// the connection is cut: never a response that looks whole.
			var body []byte
			resp, err := e.client(t, "").Get(url(path))
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil || len(body) > 10 {
				t.Fatalf("%q %v: want the connection cut", body, err)
			}
			logged(t, path, 200)
		})
	}
	t.Run("client stops reading", func(t *testing.T) {
		c := e.dialProxy(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", url("/endless"))
		br := bufio.NewReaderSize(c, 4096)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		// Read nothing more: egressd's writes fill the socket buffers and
		// stall.
		logged(t, "/endless", 200)
	})
}

// TestForwardPoolPinnedPerDecision: a pooled origin connection serves only
// requests whose own decision pinned its address. two.test resolves to
// 127.0.0.3 and 127.0.0.2; group a may reach both (its rule's
// allow_ranges), everyone else only 127.0.0.2. After group a's request left
// a connection to 127.0.0.3 in the pool, the other client's requests never
// go out on it. On cd2287e they all did.
func TestForwardPoolPinnedPerDecision(t *testing.T) {
	e := newEdgeEnv(t)
	o := newTwinOrigin(t, e.ns, "127.0.0.3", "127.0.0.2")
	e.dns.Set("two.test", 60, netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.2"))
	e.start(t, 5*time.Minute,
		testenv.Rule{Name: "wide", Groups: []string{"a"}, Hosts: []string{"two.test"}, Ports: []int{o.port},
			AllowRanges: []string{"127.0.0.2/32", "127.0.0.3/32"}},
		testenv.Rule{Name: "narrow", Hosts: []string{"two.test"}, Ports: []int{o.port}, AllowRanges: []string{"127.0.0.2/32"}})
	url := fmt.Sprintf("http://two.test:%d/", o.port)
	get := func(c *http.Client, who string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Client", who)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", who, resp.StatusCode, body)
		}
		return string(body)
	}
	a, b := e.client(t, groupAIP), e.client(t, "")
	if got := get(a, "a"); got != "127.0.0.3" {
		t.Fatalf("group a's request went to %s, want the first address, 127.0.0.3", got)
	}
	for i := 0; i < 5; i++ {
		if got := get(b, "b"); got != "127.0.0.2" {
			t.Fatalf("request %d of the other client went to %s", i, got)
		}
	}
	if got := get(a, "a"); got != "127.0.0.3" {
		t.Fatalf("group a's second request went to %s", got)
	}
	_, _, clients3 := o.stats("127.0.0.3")
	if strings.Join(clients3, ",") != "a,a" {
		t.Fatalf("127.0.0.3 served %q, want only group a's two requests", clients3)
	}
	// The access lines name the address each request went out to.
	for _, l := range e.proc.AccessLines() {
		if l["listener"] == "http" && l["client"] == "127.0.0.1" && l["ip"] != "127.0.0.2" {
			t.Fatalf("the other client's request logged ip %v: %v", l["ip"], l)
		}
	}
}

// TestForwardPoolRetiredOnReload: a reload that takes an address out of
// the allowed ranges retires every pooled connection to it, a busy one
// after its current request: the request in flight completes, and no later
// request goes out on that connection. On cd2287e only idle connections
// were closed, so the busy one went back to the pool and served on.
func TestForwardPoolRetiredOnReload(t *testing.T) {
	e := newEdgeEnv(t)
	o := newTwinOrigin(t, e.ns, "127.0.0.3", "127.0.0.2")
	e.dns.Set("two.test", 60, netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.2"))
	rule := func(ranges ...string) testenv.Rule {
		return testenv.Rule{Name: "two", Hosts: []string{"two.test"}, Ports: []int{o.port}, AllowRanges: ranges}
	}
	e.start(t, 5*time.Minute, rule("127.0.0.2/32", "127.0.0.3/32"))
	c := e.client(t, "")
	get := func(path string) (string, error) {
		resp, err := c.Get(fmt.Sprintf("http://two.test:%d%s", o.port, path))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		return string(body), err
	}
	// Steady traffic on one pooled connection to 127.0.0.3, then a request
	// that holds it across the reload.
	for i := 0; i < 3; i++ {
		if got, err := get("/warm"); err != nil || got != "127.0.0.3" {
			t.Fatalf("warm-up: %q %v", got, err)
		}
	}
	held := make(chan error, 1)
	go func() {
		got, err := get("/hold")
		if err == nil && got != "127.0.0.3" {
			err = fmt.Errorf("the held request went to %s", got)
		}
		held <- err
	}()
	if ip := <-o.arrived; ip != "127.0.0.3" {
		t.Fatalf("held request at %s", ip)
	}
	conns3, _, _ := o.stats("127.0.0.3")
	if conns3 != 1 {
		t.Fatalf("want one connection to 127.0.0.3, got %d", conns3)
	}
	e.reload(t, 5*time.Minute, rule("127.0.0.2/32"))
	// Traffic goes on while the held request is busy (net/http's
	// Transport stops closing connections that turn idle after
	// CloseIdleConnections at the next request it serves).
	if got, err := get("/during"); err != nil || got != "127.0.0.2" {
		t.Fatalf("request after the reload: %q %v", got, err)
	}
	o.Release()
	if err := <-held; err != nil {
		t.Fatalf("the request in flight across the reload: %v", err)
	}
	for i := 0; i < 5; i++ {
		if got, err := get("/after"); err != nil || got != "127.0.0.2" {
			t.Fatalf("request %d after the reload: %q %v", i, got, err)
		}
	}
	conns3, _, clients3 := o.stats("127.0.0.3")
	if conns3 != 1 || len(clients3) != 4 {
		t.Fatalf("127.0.0.3 accepted %d connections and served %d requests after the reload, want 1 and 4 (the 3 before, the held one)", conns3, len(clients3))
	}
	waitUntil(t, 10*time.Second, func() bool { _, open, _ := o.stats("127.0.0.3"); return open == 0 },
		func() string { return "the retired connection to 127.0.0.3 is still open" })
}

// wsAccept is the Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestForwardWebSocket: a WebSocket handshake sent as an absolute URI (as
// Go's http.Client sends it through a proxy) is decided and dialed like
// any forwarded request; the origin's 101 turns both connections into one
// of egressd's own tunnels: the frames sent with either handshake arrive,
// bytes are counted, it is drained and idle-timed like a CONNECT tunnel, and
// it ends in one access line. An origin that switches protocols when no
// upgrade was asked gets nothing relayed. On cd2287e the handshake lost its
// Upgrade headers on the way (the origin refused it), and an origin's
// unasked 101 sent with an X-Egress-Denied header was relayed by goproxy
// with no timeout, outside egressd's tunnels.
func TestForwardWebSocket(t *testing.T) {
	e := newEdgeEnv(t)
	ln, err := e.ns.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		unasked := r.URL.Path == "/unasked"
		if !unasked && !(strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && r.Header.Get("Sec-WebSocket-Key") != "") {
			http.Error(w, "not a websocket handshake", http.StatusUpgradeRequired)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: %s\r\nX-Egress-Denied: forged\r\nKeep-Alive: timeout=1\r\n\r\nhi", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		if unasked {
			for i := 0; i < 100; i++ {
				if _, err := io.WriteString(c, "raw bytes nobody asked for\n"); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			return
		}
		io.Copy(c, brw) // echo, including what came with the handshake
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := portOf(ln.Addr())
	e.dns.Set("ws.test", 60, netip.MustParseAddr("127.0.0.3"))
	e.start(t, time.Second, testenv.Rule{Name: "ws", Hosts: []string{"ws.test"}, Ports: []int{port},
		AllowRanges: []string{"127.0.0.0/24"}})
	url := fmt.Sprintf("http://ws.test:%d/chat", port)
	tunnels := func() float64 {
		return e.scrape(t).value(t, "egressd_active_tunnels", map[string]string{"listener": "http"})
	}

	t.Run("Go client", func(t *testing.T) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Version", "13")
		// The Transport, not a Client with a Timeout: that one hides the
		// upgraded body's Write.
		resp, err := e.client(t, "").Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("handshake: %d %s", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept("dGhlIHNhbXBsZSBub25jZQ==") {
			t.Errorf("Sec-WebSocket-Accept %q", got)
		}
		if v := resp.Header.Get("X-Egress-Denied") + resp.Header.Get("Keep-Alive"); v != "" {
			t.Errorf("the origin's X-Egress-Denied or Keep-Alive reached the client: %v", resp.Header)
		}
		ws := resp.Body.(io.ReadWriteCloser)
		buf := make([]byte, 7)
		if _, err := io.ReadFull(ws, buf[:2]); err != nil || string(buf[:2]) != "hi" {
			t.Fatalf("the origin's first frame: %q %v", buf[:2], err)
		}
		if _, err := io.WriteString(ws, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ws, buf[:5]); err != nil || string(buf[:5]) != "hello" {
			t.Fatalf("echo: %q %v", buf[:5], err)
		}
		if n := tunnels(); n != 1 {
			t.Errorf("egressd_active_tunnels{listener=http} = %v while the WebSocket is open, want 1", n)
		}
		// Then silence: timeouts.idle (1s) ends the tunnel.
		done := make(chan error, 1)
		go func() { _, err := ws.Read(buf); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("read data from an idle WebSocket")
			}
		case <-time.After(15 * time.Second):
			t.Fatal("an idle WebSocket was not closed")
		}
		line := e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "ws.test", "status": 101.0}))
		if line["bytes_up"] != 5.0 || line["bytes_down"] != 7.0 || line["ip"] != "127.0.0.3" || line["decision"] != "allow" {
			t.Errorf("access line: %v", line)
		}
		waitUntil(t, 10*time.Second, func() bool { return tunnels() == 0 }, func() string { return "the tunnel gauge did not come back to 0" })
	})
	t.Run("raw client, frames sent with the handshake", func(t *testing.T) {
		c := e.dialProxy(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: ws.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n\r\nearly", url)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%v %v", resp, err)
		}
		buf := make([]byte, 7)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hiearly" {
			t.Fatalf("got %q %v, want the origin's frame then the echo of ours", buf, err)
		}
		c.Close()
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "ws.test", "status": 101.0, "bytes_up": 5.0}))
	})
	t.Run("origin switches unasked", func(t *testing.T) {
		resp, body := e.rawRequest(t, fmt.Sprintf("GET http://ws.test:%d/unasked HTTP/1.1\r\nHost: ws.test\r\nConnection: close\r\n\r\n", port))
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Egress-Error") != "dial_error" || strings.Contains(body, "raw bytes") {
			t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, body)
		}
		e.proc.WaitForLog(t, testenv.Fields(map[string]any{"listener": "http", "host": "ws.test", "status": 502.0}))
	})
	lines := 0
	for _, l := range e.proc.AccessLines() {
		if l["status"] == 101.0 {
			lines++
		}
	}
	if lines != 2 {
		t.Errorf("%d access lines for 2 WebSockets", lines)
	}
}

// TestForwardWebSocketDLP: a WebSocket handshake is inspected like any
// forwarded request: one carrying a secret in its URL is refused before
// anything is dialed.
func TestForwardWebSocketDLP(t *testing.T) {
	f := newDLPFarm(t, "block", "1MiB")
	conns := f.http.Conns()
	resp := f.rawRequest(t, fmt.Sprintf("GET http://upload.test:%d/ws?card=%s HTTP/1.1\r\nHost: upload.test\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		f.httpPort, strings.ReplaceAll(dlpCard, " ", "%20")))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egress-Denied") != "dlp" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	f.waitLog(t, map[string]any{"listener": "http", "host": "upload.test", "reason": "dlp", "status": 403.0})
	if n := f.http.Conns() - conns; n != 0 {
		t.Fatalf("the origin was dialed %d times", n)
	}
}
