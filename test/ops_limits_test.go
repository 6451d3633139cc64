package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowloris: 500 connections that send part of a request (or of a
// SOCKS5 greeting) and stall, and tunnels to a TLS port whose ClientHello
// never comes, do not keep a well-behaved client from being served, and
// egressd closes each of them once timeouts.handshake has passed, returning
// every descriptor.
func TestSlowloris(t *testing.T) {
	const handshake = 6 * time.Second
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{Handshake: handshake})

	// Warm up with the requests made later, so that pooled upstream
	// connections and splice pipes are part of the baseline.
	warm := time.Now()
	mustCurl(t, "warm-up https", f.curlHTTPS("allowed.test", "/warm"))
	mustCurl(t, "warm-up http", f.curlFixed())
	mustCurl(t, "warm-up socks5", f.curlSOCKS("allowed.test", "/warm"))
	idleTook := time.Since(warm)
	f.waitOpenConns(t, 0)
	base := fdsAtRest(t, p)

	const nHTTP, nSOCKS = 450, 50
	type loris struct {
		c       net.Conn
		started time.Time
	}
	var all []loris
	for i := 0; i < nHTTP+nSOCKS; i++ {
		addr, stall := f.httpAddr, []byte("GET http://allowed.test/ HT")
		if i >= nHTTP {
			addr, stall = f.socksAddr, []byte{5} // a greeting cut after its version
		}
		started := time.Now()
		c := dialFrom(t, addr, "")
		if _, err := c.Write(stall); err != nil {
			t.Fatal(err)
		}
		all = append(all, loris{c, started})
	}
	f.waitOpenConns(t, nHTTP+nSOCKS)
	peak := fdCount(t, p.PID())
	t.Logf("egressd descriptors: %d at rest, %d with %d stalled clients: %.2f per connection",
		base.total, peak, nHTTP+nSOCKS, float64(peak-base.total)/float64(nHTTP+nSOCKS))
	// And tunnels to a TLS port whose ClientHello never comes.
	const nTLS = 10
	for i := 0; i < nTLS; i++ {
		started := time.Now()
		c, err := connectTunnel(f.httpAddr, fmt.Sprintf("allowed.test:%d", f.ports.tls))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		all = append(all, loris{c, started})
	}
	f.waitOpenConns(t, nHTTP+nSOCKS+nTLS)

	// A well-behaved client, on every front end, while they stall.
	during := time.Now()
	mustCurl(t, "https during slowloris", f.curlHTTPS("allowed.test", "/during"))
	mustCurl(t, "http during slowloris", f.curlFixed())
	mustCurl(t, "socks5 during slowloris", f.curlSOCKS("allowed.test", "/during"))
	duringTook := time.Since(during)
	if time.Since(all[len(all)-1].started) >= handshake {
		t.Logf("note: the machine was slow; the well-behaved requests ended after the handshake timeout")
	}
	t.Logf("three requests took %v at rest, %v beside %d stalled clients", idleTook, duringTook, nHTTP+nSOCKS)

	// egressd closes every stalled connection, not before the handshake
	// timeout (a lower bound cannot be flaky), and not much later.
	for i, l := range all {
		l.c.SetReadDeadline(l.started.Add(handshake + 20*time.Second))
		_, err := io.Copy(io.Discard, l.c)
		closed := time.Now()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("stalled connection %d still open %v after it started", i, closed.Sub(l.started))
		}
		if d := closed.Sub(l.started); d < handshake {
			t.Fatalf("stalled connection %d closed after %v, before timeouts.handshake (%v)", i, d, handshake)
		}
		l.c.Close()
	}
	f.waitOpenConns(t, 0)
	waitFDs(t, p, base)
	// The access log is flushed every 200ms: the lines may trail the closes.
	sniMissing := func() int {
		return accessCount(p, map[string]any{"listener": "connect", "host": "allowed.test", "reason": "sni_missing"})
	}
	waitUntil(t, 10*time.Second, func() bool { return sniMissing() == nTLS },
		func() string {
			return fmt.Sprintf("%d sni_missing lines for the stalled tunnels, want %d", sniMissing(), nTLS)
		})
}

// TestLimitFlood: past limits.max_connections every front end refuses
// clearly (HTTP 503 with X-Egress-Error: limit, SOCKS5 general failure),
// counts and logs each refusal, never hangs, and gives every descriptor
// back; once connections close, clients are served again.
func TestLimitFlood(t *testing.T) {
	const max = 40
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{MaxConns: max, Handshake: 20 * time.Second})
	mustCurl(t, "warm-up https", f.curlHTTPS("allowed.test", "/warm"))
	mustCurl(t, "warm-up http", f.curlFixed())
	mustCurl(t, "warm-up socks5", f.curlSOCKS("allowed.test", "/warm"))
	f.waitOpenConns(t, 0)
	base := fdsAtRest(t, p)

	// Fill the limit with connections that have not asked anything yet.
	var held []net.Conn
	for i := 0; i < max; i++ {
		addr := f.httpAddr
		if i%4 == 0 {
			addr = f.socksAddr
		}
		held = append(held, dialFrom(t, addr, ""))
	}
	f.waitOpenConns(t, max)

	// A flood of well-formed requests, 16 at a time: each gets the 503.
	const flood = 200
	var wg sync.WaitGroup
	errs := make(chan error, flood)
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errs <- refusedHTTP(f.httpAddr, "", fmt.Sprintf("GET http://fixed.test:%d/%d HTTP/1.1\r\nHost: fixed.test\r\n\r\n", f.ports.fixed, i))
			}
		}()
	}
	for i := 0; i < flood; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// Real clients see a clear refusal.
	r := f.curlFixed()
	if r.code != 22 || !strings.Contains(r.stderr, "503") || !strings.Contains(r.stderr, "X-Egress-Error: limit") {
		t.Errorf("curl http past the limit: %s", r)
	}
	r = f.curlHTTPS("allowed.test", "/full")
	if r.code == 0 || !strings.Contains(r.stderr, "503") {
		t.Errorf("curl https past the limit: %s", r)
	}
	r = f.curlSOCKS("allowed.test", "/full")
	if r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "socks") {
		t.Errorf("curl socks5 past the limit: %s", r)
	}
	if _, err := socksTunnel(f.socksAddr, fmt.Sprintf("raw.test:%d", f.ports.raw)); err == nil ||
		!strings.Contains(err.Error(), "general SOCKS server failure") {
		t.Errorf("SOCKS5 dial past the limit: %v", err)
	}

	// A flood that sends nothing: each connection is answered or closed
	// within the refusal's bound (2 x min(handshake, 2s)); past 64 refusals
	// in progress, closed at once.
	const silent = 100
	var answered, closedOnly int
	var mu sync.Mutex
	var swg sync.WaitGroup
	for i := 0; i < silent; i++ {
		swg.Add(1)
		go func() {
			defer swg.Done()
			c, err := dialFromErr(f.httpAddr, "")
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			b, err := io.ReadAll(c)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				t.Error("a silent refused connection hung")
			case strings.HasPrefix(string(b), "HTTP/1.1 503 Service Unavailable\r\n"):
				answered++
			case len(b) == 0:
				closedOnly++
			default:
				t.Errorf("silent refused connection got %q", b)
			}
		}()
	}
	swg.Wait()
	t.Logf("silent flood of %d: %d answered 503, %d closed without an answer", silent, answered, closedOnly)
	if answered == 0 {
		t.Error("no silent connection got its 503")
	}

	want := map[string]float64{
		"http":    flood + 1 + silent,
		"connect": 1,
		"socks5":  2,
	}
	for l, n := range want {
		f.waitMetric(t, "egressd_limit_rejections_total", map[string]string{"listener": l, "limit": "max_connections"}, n)
	}
	m := f.scrape(t)
	for l := range want {
		if v := m.value(t, "egressd_limit_rejections_total", map[string]string{"listener": l, "limit": "max_connections_per_client"}); v != 0 {
			t.Errorf("per-client rejections on %s: %v", l, v)
		}
	}
	total := flood + 1 + silent + 1 + 2
	waitUntil(t, 10*time.Second, func() bool { return accessCount(p, map[string]any{"reason": "limit", "decision": "deny"}) == total },
		func() string {
			return fmt.Sprintf("%d access lines with reason limit, want %d", accessCount(p, map[string]any{"reason": "limit"}), total)
		})
	if n := accessCount(p, map[string]any{"reason": "limit", "listener": "http", "host": "fixed.test", "status": 503}); n != flood+1 {
		t.Errorf("%d http refusal lines naming fixed.test with status 503, want %d", n, flood+1)
	}

	// Once the held connections close, clients are served again and every
	// descriptor is back.
	for _, c := range held {
		c.Close()
	}
	f.waitOpenConns(t, 0)
	mustCurl(t, "https after the flood", f.curlHTTPS("allowed.test", "/after"))
	mustCurl(t, "socks5 after the flood", f.curlSOCKS("allowed.test", "/after"))
	f.waitOpenConns(t, 0)
	waitFDs(t, p, base)
}

// refusedHTTP sends req on a new connection and checks for the limit
// refusal and the close that follows.
func refusedHTTP(addr, from, req string) error {
	c, err := dialFromErr(addr, from)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("refusal: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Egress-Error") != "limit" {
		return fmt.Errorf("refusal: %s %v", resp.Status, resp.Header)
	}
	if _, err := br.ReadByte(); err == nil {
		return errors.New("refused connection still open")
	}
	return nil
}

// TestLimitPerClient: limits.max_connections_per_client refuses one client
// at its limit while another is served; a reload raises the limit.
func TestLimitPerClient(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{PerClient: 3, Handshake: 20 * time.Second}
	p := f.start(t, o)
	// Not 127.0.0.1: its ephemeral ports may be exhausted by other
	// processes' loopback traffic, and these clients bind.
	const noisy, quiet = "127.0.0.11", "127.0.0.12"
	for i := 0; i < 3; i++ {
		dialFrom(t, f.httpAddr, noisy)
	}
	f.waitOpenConns(t, 3)

	if err := refusedHTTP(f.httpAddr, noisy, "GET http://fixed.test/ HTTP/1.1\r\nHost: fixed.test\r\n\r\n"); err != nil {
		t.Fatalf("noisy client's 4th connection: %v", err)
	}
	r := f.curlFixed("--interface", noisy)
	if r.code != 22 || !strings.Contains(r.stderr, "X-Egress-Error: limit") {
		t.Errorf("curl from the noisy client: %s", r)
	}
	if r := f.curlSOCKS("allowed.test", "/noisy", "--interface", noisy); r.code == 0 {
		t.Errorf("curl socks5 from the noisy client succeeded")
	}
	mustCurl(t, "http from another client", f.curlFixed("--interface", quiet))
	mustCurl(t, "https from another client", f.curlHTTPS("allowed.test", "/quiet", "--interface", quiet))
	mustCurl(t, "socks5 from another client", f.curlSOCKS("allowed.test", "/quiet", "--interface", quiet))

	f.waitMetric(t, "egressd_limit_rejections_total", map[string]string{"listener": "http", "limit": "max_connections_per_client"}, 2)
	f.waitMetric(t, "egressd_limit_rejections_total", map[string]string{"listener": "socks5", "limit": "max_connections_per_client"}, 1)
	p.WaitForLog(t, func(l map[string]any) bool {
		return l["reason"] == "limit" && l["client"] == noisy && l["listener"] == "socks5"
	})
	if n := accessCount(p, map[string]any{"reason": "limit", "client": quiet}); n != 0 {
		t.Errorf("%d refusals of the quiet client", n)
	}

	// The limit reloads: the noisy client gets more room at once.
	o.PerClient = 5
	replaceFile(t, f.configPath, f.config(o))
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	mustCurl(t, "http from the noisy client after the reload", f.curlFixed("--interface", noisy))
}

// TestOpsMaxHeaderBytes: a request head past limits.max_header_bytes is
// answered 431. (Go's net/http allows 4096 bytes of slack past the limit.)
func TestOpsMaxHeaderBytes(t *testing.T) {
	f := newOpsFarm(t)
	f.start(t, opsOpts{MaxHeader: 1 << 10})
	send := func(header int) *http.Response {
		c := dialFrom(t, f.httpAddr, "")
		fmt.Fprintf(c, "GET http://fixed.test:%d/ HTTP/1.1\r\nHost: fixed.test\r\nX-Pad: %s\r\nConnection: close\r\n\r\n",
			f.ports.fixed, strings.Repeat("p", header))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := send(500); resp.StatusCode != http.StatusOK {
		t.Errorf("500-byte header: %s", resp.Status)
	}
	if resp := send(16 << 10); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header: %s", resp.Status)
	}
	r := f.curlFixed("-H", "X-Pad: "+strings.Repeat("p", 16<<10))
	if r.code != 22 || !strings.Contains(r.stderr, "431") {
		t.Errorf("curl with a 16 KiB header: %s", r)
	}
}

// TestOpsMaxResponseHeaderBytes: an origin's response head past
// limits.max_response_header_bytes is a 502 with X-Egress-Error:
// dial_error and an access line saying so; the same request is relayed
// with the default. The fixed origin's head is about 150 bytes.
func TestOpsMaxResponseHeaderBytes(t *testing.T) {
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{MaxRespHeader: 64})
	r := f.curlFixed("-i")
	if r.code != 22 || !strings.Contains(r.stderr, "502") {
		t.Fatalf("curl past the response head limit: %s", r)
	}
	p.WaitForLog(t, func(l map[string]any) bool {
		return l["host"] == "fixed.test" && l["status"] == 502.0 && l["reason"] == "dial_error"
	})
	p.Stop(t, 10*time.Second)

	f.start(t, opsOpts{})
	mustCurl(t, "with the default limit", f.curlFixed())
}

// TestOpsTunnelTimeouts: timeouts.idle closes a tunnel that carried nothing
// either way for that long, on both front ends; timeouts.max_tunnel closes
// a busy tunnel when its time is up.
func TestOpsTunnelTimeouts(t *testing.T) {
	const idle, maxTunnel = 1 * time.Second, 4 * time.Second
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{Idle: idle, MaxTunnel: maxTunnel})
	target := fmt.Sprintf("raw.test:%d", f.ports.raw)

	waitClosed := func(name string, c net.Conn, from time.Time, atLeast time.Duration) time.Duration {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		d := time.Since(from)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: tunnel not closed after %v", name, d)
		}
		if d < atLeast {
			t.Fatalf("%s: tunnel closed after %v, before %v", name, d, atLeast)
		}
		return d
	}

	for _, front := range []string{"connect", "socks5"} {
		var c net.Conn
		var err error
		if front == "connect" {
			c, err = connectTunnel(f.httpAddr, target)
		} else {
			c, err = socksTunnel(f.socksAddr, target)
		}
		if err != nil {
			t.Fatalf("%s: %v", front, err)
		}
		if err := echo(c, "ping"); err != nil {
			t.Fatalf("%s: %v", front, err)
		}
		last := time.Now()
		d := waitClosed(front+" idle", c, last, idle)
		t.Logf("%s: idle tunnel closed %v after its last byte (timeouts.idle %v)", front, d, idle)
		c.Close()
		p.WaitForLog(t, func(l map[string]any) bool {
			return l["listener"] == front && l["host"] == "raw.test" && l["bytes_up"] == float64(4) && l["bytes_down"] == float64(4)
		})
	}

	// A busy tunnel outlives timeouts.idle many times and ends at
	// timeouts.max_tunnel.
	start := time.Now()
	c, err := connectTunnel(f.httpAddr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tick := time.NewTicker(idle / 5)
	defer tick.Stop()
	n := 0
	for range tick.C {
		if err := echo(c, "x"); err != nil {
			break
		}
		n++
		if time.Since(start) > maxTunnel+20*time.Second {
			t.Fatal("busy tunnel never cut")
		}
	}
	if d := time.Since(start); d < maxTunnel {
		t.Fatalf("busy tunnel cut after %v, before timeouts.max_tunnel %v", d, maxTunnel)
	}
	t.Logf("busy tunnel cut after %v (%d round trips; max_tunnel %v)", time.Since(start), n, maxTunnel)
}

// TestOpsFDsPerTunnel: an idle tunnel holds its two sockets and nothing
// else (splice pipes are borrowed only while bytes flow), and each one is
// counted as one client connection until it ends.
func TestOpsFDsPerTunnel(t *testing.T) {
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{})
	target := fmt.Sprintf("raw.test:%d", f.ports.raw)
	warm, err := connectTunnel(f.httpAddr, target)
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(warm, "warm"); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	f.waitOpenConns(t, 0)
	base := fdsAtRest(t, p)

	const n = 100 // per front end
	var tunnels []net.Conn
	for i := 0; i < 2*n; i++ {
		var c net.Conn
		var err error
		if i < n {
			c, err = connectTunnel(f.httpAddr, target)
		} else {
			c, err = socksTunnel(f.socksAddr, target)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, "x"); err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, c)
	}
	f.waitOpenConns(t, 2*n)
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "connect"}, n)
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "socks5"}, n)
	open := fdsAtRest(t, p)
	t.Logf("egressd descriptors: %d (%d sockets) at rest, %d (%d sockets) with %d idle tunnels: %.2f per tunnel",
		base.total, base.sockets, open.total, open.sockets, 2*n, float64(open.total-base.total)/float64(2*n))
	if got := open.sockets - base.sockets; got != 2*2*n {
		t.Errorf("%d more sockets with %d idle tunnels, want two per tunnel", got, 2*n)
	}
	if extra := open.total - base.total - 2*2*n; extra > pipeSlack {
		t.Errorf("%d descriptors beyond two per idle tunnel", extra)
	}
	for _, c := range tunnels {
		c.Close()
	}
	f.waitOpenConns(t, 0)
	f.waitMetric(t, "egressd_active_tunnels", map[string]string{"listener": "connect"}, 0)
	waitFDs(t, p, base)
}

// BenchmarkOpsRequestBesideSlowloris measures one plain HTTP request
// through egressd at rest and beside 500 stalled connections (the timing
// goal of the slowloris test, kept out of its assertions).
//
//	go test ./test/ -run '^$' -bench OpsRequestBesideSlowloris -benchtime 200x
func BenchmarkOpsRequestBesideSlowloris(b *testing.B) {
	for _, stalled := range []int{0, 500} {
		b.Run(fmt.Sprintf("stalled=%d", stalled), func(b *testing.B) { benchBesideSlowloris(b, stalled) })
	}
}

func benchBesideSlowloris(b *testing.B, stalled int) {
	f := newOpsFarm(b)
	f.start(b, opsOpts{Handshake: 5 * time.Minute})
	for i := 0; i < stalled; i++ {
		c := dialFrom(b, f.httpAddr, "")
		if _, err := io.WriteString(c, "GET http://allowed.test/ HT"); err != nil {
			b.Fatal(err)
		}
	}
	f.waitOpenConns(b, float64(stalled))
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: f.httpAddr}), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	target := fmt.Sprintf("http://fixed.test:%d/", f.ports.fixed)
	for b.Loop() {
		resp, err := client.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.Status)
		}
	}
}
