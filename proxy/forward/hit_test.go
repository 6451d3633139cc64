package forward

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/tunnel"
)

// hitEnv is a Handler with the HTTP cache on, behind a real accept
// pipeline on loopback, in front of an origin that counts its requests by
// path; the policy allows cache.test (the origin) to every client.
type hitEnv struct {
	t       *testing.T
	h       *Handler
	addr    string
	port    uint16 // the origin's
	engine  *policy.Engine
	access  *observer.ObservedLogs
	metrics *accesslog.Metrics

	mu   sync.Mutex
	hits map[string]int
}

func newHitEnv(t *testing.T, auth func(string) (string, bool), idle time.Duration) *hitEnv {
	t.Helper()
	return newHitEnvCache(t, auth, idle, 64<<20)
}

// newHitEnvCache is newHitEnv with a cache of maxBytes; tune, if any,
// changes the Handler's Options.
func newHitEnvCache(t *testing.T, auth func(string) (string, bool), idle time.Duration, maxBytes int64, tune ...func(*Options)) *hitEnv {
	t.Helper()
	e := &hitEnv{t: t, hits: map[string]int{}}
	origin := &http.Server{Handler: http.HandlerFunc(e.serveOrigin)}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go origin.Serve(oln)
	e.port = uint16(oln.Addr().(*net.TCPAddr).Port)
	e.engine = policy.NewEngine(e.policy(t, true), &countingResolver{names: map[string][]netip.Addr{
		"cache.test": {netip.MustParseAddr("127.0.0.1")},
	}})
	core, access := observer.New(zapcore.InfoLevel)
	e.access = access
	e.metrics = accesslog.NewMetrics(prometheus.NewRegistry())
	cache := httpcache.New(httpcache.Options{MaxBytes: maxBytes})
	registry := egress.NewRegistry()
	o := Options{
		Decider:      e.engine,
		Dialer:       &egress.Dialer{Timeout: 2 * time.Second},
		Log:          accesslog.NewLogger(zap.New(core), e.metrics),
		Runner:       &tunnel.Runner{Registry: registry, Handshake: 2 * time.Second},
		Handshake:    2 * time.Second,
		Idle:         idle,
		Auth:         auth,
		AuthRequired: auth != nil,
		Cache:        cache,
	}
	for _, f := range tune {
		f(&o)
	}
	e.h = New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	acc := accept.Serve(ln, e.h, accept.Options{Listener: policy.ListenerHTTP})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		e.h.Run()
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.h.Shutdown(ctx)
		acc.Shutdown(ctx)
		e.h.Close()
		acc.Close()
		<-ran
		registry.CloseAll()
		origin.Close()
		cache.Close()
	})
	return e
}

// policy allows cache.test (allowed) or nothing but other.test.
func (e *hitEnv) policy(t *testing.T, allowed bool) *policy.Policy {
	host := "other.test"
	if allowed {
		host = "cache.test"
	}
	pol, err := policy.Compile(policy.Config{
		Mode:       policy.ModeEnforce,
		DenyRanges: []string{policy.DefaultRanges},
		Rules: []policy.Rule{{Name: "origin", Hosts: []string{host}, Ports: []int{int(e.port)},
			AllowRanges: []string{"127.0.0.0/24"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

func (e *hitEnv) serveOrigin(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.hits[r.URL.Path]++
	e.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/bighead/") {
		// Header fields far larger than the body: 24 of 320 bytes.
		w.Header().Set("Cache-Control", "public, max-age=600")
		for i := range 24 {
			w.Header().Set(fmt.Sprintf("X-Pad-%02d", i), strings.Repeat(string(rune('a'+i)), 320))
		}
		io.WriteString(w, "sixteen bytes ok")
		return
	}
	switch r.URL.Path {
	case "/stale":
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"s1"`)
		if r.Header.Get("If-None-Match") == `"s1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "stale body")
	case "/vary":
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "encoding "+r.Header.Get("Accept-Encoding"))
	case "/echo":
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %s", r.Method, len(b), b[len(b)-3:])
	case "/chunked":
		// No Content-Length: net/http sends it chunked to the client
		// (not stored: the cache streams it on).
		// ?big: longer than net/http buffers before it chunks.
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "chunk one ")
		w.(http.Flusher).Flush()
		if r.URL.RawQuery == "big" {
			io.WriteString(w, strings.Repeat("x", 3000))
		}
		io.WriteString(w, "chunk two")
	case "/sniff":
		// No Content-Type: net/http sniffs one from the body.
		w.Header()["Content-Type"] = nil
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "<html><body>sniffed</body></html>")
	default:
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("ETag", `"`+r.URL.Path+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Zeta", "last")
		w.Header().Add("Accept-Ranges", "bytes")
		io.WriteString(w, strings.Repeat("contents of "+r.URL.Path+"\n", 40))
	}
}

func (e *hitEnv) count(path string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hits[path]
}

// store fetches path (with the extra fields) and waits until the cache
// holds the response: a miss's body is stored once the origin's body has
// ended, which may be after the client has it.
func (e *hitEnv) store(path, extra string) {
	e.t.Helper()
	e.dial().get(e.head("GET", path, extra))
	u, _ := url.Parse(e.url(path))
	hd, _ := parseHitHead([]byte(e.head("GET", path, extra)))
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		if _, ok := e.h.o.Cache.Fresh(http.MethodGet, u, hd.header); ok {
			return
		}
		if time.Since(start) > 10*time.Second {
			e.t.Fatalf("%s not stored", path)
		}
	}
}

func (e *hitEnv) url(path string) string { return fmt.Sprintf("http://cache.test:%d%s", e.port, path) }

// head is a GET (or method) head for path as curl sends it.
func (e *hitEnv) head(method, path, extra string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: cache.test:%d\r\nUser-Agent: hit-test\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n%s\r\n",
		method, e.url(path), e.port, extra)
}

// rawConn is a client connection that reads responses as sent.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (e *hitEnv) dial() *rawConn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: e.t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// read reads one response: its head as sent, and its body.
func (r *rawConn) read(head bool) (string, string) {
	r.t.Helper()
	var b strings.Builder
	length := 0
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("response head %q: %v", b.String(), err)
		}
		b.WriteString(line)
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if head {
		length = 0
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r.br, body); err != nil {
		r.t.Fatalf("body: %v", err)
	}
	return b.String(), string(body)
}

// post is a POST head for target, with body.
func post(target, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: cache.test\r\nContent-Length: %d\r\n\r\n%s", target, len(body), body)
}

func (r *rawConn) get(s string) (string, string) {
	r.send(s)
	return r.read(strings.HasPrefix(s, "HEAD"))
}

// closed reports whether the server closed the connection (reads EOF).
func (r *rawConn) closed() bool {
	_, err := r.br.ReadByte()
	return err == io.EOF
}

var ageLine = regexp.MustCompile(`(?m)^Age: \d+`)

// sameHead reports heads that differ at most in Age's value.
func sameHead(a, b string) bool {
	return ageLine.ReplaceAllString(a, "Age: N") == ageLine.ReplaceAllString(b, "Age: N")
}

// line returns the access line n (0-based), waiting for it.
func (e *hitEnv) line(n int) map[string]any {
	e.t.Helper()
	waitLines(e.t, e.access, n+1)
	l := e.access.All()[n].ContextMap()
	for _, k := range []string{"id", "duration_ms", "client_port", "time"} {
		delete(l, k)
	}
	return l
}

// TestHitPath: a fresh hit on a new connection is answered by the hit
// path (the origin is not asked, net/http not involved), with the same
// bytes and the same access line as the hit net/http answers after a miss
// on one connection; GET and HEAD, a sniffed Content-Type, Vary.
func TestHitPath(t *testing.T) {
	e := newHitEnv(t, nil, 0)
	warm, lines := 0, 0
	for _, tc := range []struct{ method, path, extra string }{
		{"GET", "/file/a", ""},
		{"HEAD", "/file/a", ""},
		{"GET", "/sniff", ""},
		{"HEAD", "/sniff", ""},
		{"GET", "/vary", "Accept-Encoding: gzip\r\n"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			head := e.head(tc.method, tc.path, tc.extra)
			e.store(tc.path, tc.extra)
			// A request with a body, which keeps the connection on
			// net/http, then a hit net/http answers on that connection.
			slow := e.dial()
			warm++
			slow.get(post(e.url("/echo"), fmt.Sprintf("warm%d", warm)))
			// Five lines a case: the store's and the POST's, then three
			// hits'. A line is written after its answer, so the client
			// may have an answer before its line: wait for them.
			base := lines
			lines += 5
			defer waitLines(t, e.access, lines)
			waitLines(t, e.access, base+2)
			a0 := base + 2
			f0 := e.h.fastHits.Load()
			slowHead, slowBody := slow.get(head)
			if e.h.fastHits.Load() != f0 {
				t.Fatal("a request after a POST on the same connection went through the hit path")
			}
			// A hit on a connection of its own: the hit path.
			fast := e.dial()
			fastHead, fastBody := fast.get(head)
			if e.h.fastHits.Load() != f0+1 {
				t.Fatalf("the hit path served %d hits, want 1", e.h.fastHits.Load()-f0)
			}
			if !strings.Contains(fastHead, "X-Cache: HIT\r\n") || !strings.HasPrefix(fastHead, "HTTP/1.1 200 OK\r\n") {
				t.Fatalf("hit path answered\n%s", fastHead)
			}
			if !sameHead(slowHead, fastHead) || slowBody != fastBody {
				t.Fatalf("net/http answered\n%s%q\nthe hit path\n%s%q", slowHead, slowBody, fastHead, fastBody)
			}
			if n := e.count(tc.path); n != 1 {
				t.Fatalf("origin asked %d times, want once", n)
			}
			slowLine, fastLine := e.line(a0), e.line(a0+1)
			if fmt.Sprint(slowLine) != fmt.Sprint(fastLine) || fastLine["cache"] != "hit" {
				t.Fatalf("access lines differ:\nnet/http %v\nhit path %v", slowLine, fastLine)
			}
			// The connection stays open for more.
			if h2, _ := fast.get(head); !sameHead(h2, fastHead) || e.h.fastHits.Load() != f0+2 {
				t.Fatalf("second hit on the connection\n%s", h2)
			}
		})
	}
	// Five lines a case (the store's, the POST's, three hits); a hit's
	// line is finished after its answer is written, and its metrics
	// right after its line.
	waitLines(t, e.access, 25)
	hits := e.metrics.CacheRequests.WithLabelValues("hit")
	for start := time.Now(); testutil.ToFloat64(hits) < 17 && time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
	}
	if got := testutil.ToFloat64(hits); got != 17 {
		t.Errorf("egressd_cache_requests_total{result=hit} = %v, want 17", got)
	}
	// Another variant of /vary is a miss: net/http asks the origin.
	c := e.dial()
	h, body := c.get(e.head("GET", "/vary", "Accept-Encoding: br\r\n"))
	if !strings.Contains(h, "X-Cache: MISS") || body != "encoding br" || e.count("/vary") != 2 {
		t.Fatalf("another variant: %s%q (origin asked %d times)", h, body, e.count("/vary"))
	}
}

// TestHitPathConnection: Connection: close is answered with it and the
// connection closes; a pipelined pair of hits is answered in order; a hit
// pipelined with a miss leaves the miss to net/http; a stale object goes
// to net/http and is revalidated.
func TestHitPathConnection(t *testing.T) {
	e := newHitEnv(t, nil, 0)
	e.store("/file/c", "")
	e.dial().get(e.head("GET", "/stale", ""))
	su, _ := url.Parse(e.url("/stale"))
	for start := time.Now(); !e.h.o.Cache.Holds(su); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("/stale not stored")
		}
	}

	c := e.dial()
	h, _ := c.get(e.head("GET", "/file/c", "Connection: close\r\n"))
	if !strings.Contains(h, "X-Cache: HIT") || !strings.HasSuffix(h, "Connection: close\r\n\r\n") || !c.closed() {
		t.Fatalf("Connection: close: %s", h)
	}

	f0 := e.h.fastHits.Load()
	c = e.dial()
	c.send(e.head("GET", "/file/c", "") + e.head("HEAD", "/file/c", ""))
	h1, b1 := c.read(false)
	h2, b2 := c.read(true)
	if !strings.Contains(h1, "X-Cache: HIT") || len(b1) == 0 || !strings.Contains(h2, "X-Cache: HIT") || b2 != "" ||
		e.h.fastHits.Load() != f0+2 {
		t.Fatalf("pipelined hits:\n%s\n%s", h1, h2)
	}
	c.send(e.head("GET", "/file/c", "") + e.head("GET", "/file/d", ""))
	h1, _ = c.read(false)
	h2, b2 = c.read(false)
	if !strings.Contains(h1, "X-Cache: HIT") || !strings.Contains(h2, "X-Cache: MISS") || !strings.HasPrefix(b2, "contents of /file/d") {
		t.Fatalf("a hit pipelined with a miss:\n%s\n%s", h1, h2)
	}

	// After hits, a request the hit path read and declined reaches
	// net/http whole: a POST with a body longer than the head buffer, and
	// then a CONNECT on the same connection.
	c = e.dial()
	c.get(e.head("GET", "/file/c", ""))
	payload := strings.Repeat("x", 3*headBufSize) + "end"
	h, body := c.get(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: cache.test\r\nContent-Length: %d\r\n\r\n%s", e.url("/echo"), len(payload), payload))
	if !strings.HasPrefix(h, "HTTP/1.1 200") || body != fmt.Sprintf("POST %d end", len(payload)) {
		t.Fatalf("POST after a hit: %s%q", h, body)
	}
	c = e.dial()
	c.get(e.head("GET", "/file/c", ""))
	target := fmt.Sprintf("cache.test:%d", e.port)
	c.send("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n" + "GET /file/tunneled HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
	if resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT after a hit: %v %v", resp, err)
	}
	if resp, err := http.ReadResponse(c.br, nil); err != nil || resp.StatusCode != 200 || resp.Header.Get("Etag") != `"/file/tunneled"` {
		t.Fatalf("request through the tunnel: %v %v", resp, err)
	}

	h, body = e.dial().get(e.head("GET", "/stale", ""))
	if !strings.Contains(h, "X-Cache: REVALIDATED") || body != "stale body" || e.count("/stale") != 2 {
		t.Fatalf("stale object: %s%q (origin asked %d times)", h, body, e.count("/stale"))
	}
	if n := e.count("/file/c"); n != 1 {
		t.Fatalf("origin asked %d times for /file/c", n)
	}
}

// TestHitPathPolicyFirst: after a reload that removes the host, the next
// request on a connection the hit path serves is denied, and nothing
// reaches the origin.
func TestHitPathPolicyFirst(t *testing.T) {
	e := newHitEnv(t, nil, 0)
	e.store("/file/p", "")
	c := e.dial()
	if h, _ := c.get(e.head("GET", "/file/p", "")); !strings.Contains(h, "X-Cache: HIT") {
		t.Fatalf("hit: %s", h)
	}
	e.engine.Store(e.policy(t, false))
	h, body := c.get(e.head("GET", "/file/p", ""))
	if !strings.HasPrefix(h, "HTTP/1.1 403") || !strings.Contains(h, "X-Egress-Denied: not_allowed") || strings.Contains(body, "contents") {
		t.Fatalf("after the reload: %s%q", h, body)
	}
	if h, _ := e.dial().get(e.head("GET", "/file/p", "")); !strings.HasPrefix(h, "HTTP/1.1 403") {
		t.Fatalf("new connection after the reload: %s", h)
	}
	if n := e.count("/file/p"); n != 1 {
		t.Fatalf("origin asked %d times", n)
	}
}

// TestHitPathAuth: with credentials required, a request without them or
// with wrong ones gets 407 (net/http's answer), checked once although the
// hit path looked at it first; a stored object is served on the hit path
// only with good ones, and the line names the user.
func TestHitPathAuth(t *testing.T) {
	good := "Basic " + "YWxpY2U6c2VjcmV0" // alice:secret
	var checks atomic.Int64
	e := newHitEnv(t, func(h string) (string, bool) {
		checks.Add(1)
		return "alice", h == good
	}, 0)
	e.store("/file/u", "Proxy-Authorization: "+good+"\r\n")
	for _, extra := range []string{"", "Proxy-Authorization: Basic eDp5\r\n"} {
		c0 := checks.Load()
		c := e.dial()
		h, body := c.get(e.head("GET", "/file/u", extra))
		if !strings.HasPrefix(h, "HTTP/1.1 407") || strings.Contains(body, "contents") {
			t.Fatalf("credentials %q: %s%q", extra, h, body)
		}
		if n := checks.Load() - c0; n != 1 {
			t.Fatalf("credentials %q checked %d times, want once", extra, n)
		}
		// The next request on the connection is net/http's, checked anew.
		if h, _ := c.get(e.head("GET", "/file/u", "Proxy-Authorization: "+good+"\r\n")); !strings.Contains(h, "X-Cache: HIT") ||
			checks.Load()-c0 != 2 {
			t.Fatalf("good credentials after a 407: %s (%d checks)", h, checks.Load()-c0)
		}
	}
	// The store's line, then a 407 and a hit for each: a line is written
	// after its answer, so wait for them before counting.
	const a0 = 5
	waitLines(t, e.access, a0)
	f0 := e.h.fastHits.Load()
	if h, _ := e.dial().get(e.head("GET", "/file/u", "Proxy-Authorization: "+good+"\r\n")); !strings.Contains(h, "X-Cache: HIT") {
		t.Fatalf("good credentials: %s", h)
	}
	if e.h.fastHits.Load() != f0+1 {
		t.Fatalf("hit path served %d, want 1", e.h.fastHits.Load()-f0)
	}
	if l := e.line(a0); l["user"] != "alice" || l["cache"] != "hit" {
		t.Fatalf("line %v", l)
	}
}

// TestHitPathIdleAndShutdown: a connection the hit path serves is closed
// after timeouts.idle without a request, and at once by Shutdown.
func TestHitPathIdleAndShutdown(t *testing.T) {
	e := newHitEnv(t, nil, 300*time.Millisecond)
	e.store("/file/i", "")
	c := e.dial()
	c.get(e.head("GET", "/file/i", ""))
	start := time.Now()
	if !c.closed() || time.Since(start) > 5*time.Second {
		t.Fatal("idle connection not closed")
	}
	e.h.idle.Store(0)
	c = e.dial()
	c.get(e.head("GET", "/file/i", ""))
	e.h.Shutdown(context.Background())
	if !c.closed() {
		t.Fatal("idle connection not closed by Shutdown")
	}
}

// TestHitPathClients: curl and Go's Transport, through the proxy: the
// first request on a connection is a miss, the hits after it net/http's;
// a new client's hit is the hit path's, with the same headers and body.
func TestHitPathClients(t *testing.T) {
	e := newHitEnv(t, nil, 0)
	curl := func(urls ...string) string {
		args := append([]string{"-sS", "--max-time", "10", "-D", "-", "-x", "http://" + e.addr}, urls...)
		out, err := exec.Command("curl", args...).Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		return string(out)
	}
	curl(e.url("/file/k"))
	hd, _ := parseHitHead([]byte(e.head("GET", "/file/k", "")))
	ku, _ := url.Parse(e.url("/file/k"))
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		if _, ok := e.h.o.Cache.Fresh(http.MethodGet, ku, hd.header); ok {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("/file/k not stored")
		}
	}
	f0 := e.h.fastHits.Load()
	// One connection (curl reuses it across --next): a POST with a body,
	// which stays on net/http, then the hit net/http answers.
	slow := curl("-d", "abc", e.url("/echo"), "--next", "-sS", "--max-time", "10", "-D", "-", "-x", "http://"+e.addr, e.url("/file/k"))
	if e.h.fastHits.Load() != f0 {
		t.Fatal("hit path used after a POST")
	}
	fast := curl(e.url("/file/k"))
	if e.h.fastHits.Load() != f0+1 {
		t.Fatal("curl's hit not on the hit path")
	}
	i := strings.LastIndex(slow, "HTTP/1.1 ")
	if !strings.Contains(slow[:i], "POST 3 abc") || !sameHead(strings.ReplaceAll(slow[i:], "\r\n", "\n"), strings.ReplaceAll(fast, "\r\n", "\n")) {
		t.Fatalf("curl through net/http:\n%s\nthrough the hit path:\n%s", slow[i:], fast)
	}
	// One connection: a miss (net/http), then the hit, which net/http
	// gives back to the hit path.
	both := curl(e.url("/file/warm"), e.url("/file/k"))
	i = strings.LastIndex(both, "HTTP/1.1 ")
	if e.h.fastHits.Load() != f0+2 || !strings.Contains(both[:i], "X-Cache: MISS") ||
		!sameHead(strings.ReplaceAll(both[i:], "\r\n", "\n"), strings.ReplaceAll(fast, "\r\n", "\n")) {
		t.Fatalf("a hit after a miss on one curl connection (hit path served %d):\n%s", e.h.fastHits.Load()-f0-1, both)
	}
	f0++

	pu, _ := url.Parse("http://" + e.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for i := range 3 {
		resp, err := c.Get(e.url("/file/k"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" || !strings.HasPrefix(string(b), "contents of /file/k") ||
			resp.ContentLength != int64(len(b)) {
			t.Fatalf("Go client #%d: %d %v", i, resp.StatusCode, resp.Header)
		}
	}
	if e.h.fastHits.Load() != f0+4 || e.count("/file/k") != 1 {
		t.Fatalf("hit path served %d of 3 Go hits; origin asked %d times", e.h.fastHits.Load()-f0-1, e.count("/file/k"))
	}
}

// TestHitPathTakeBack: after net/http answered a request on a connection,
// the connection goes back to the hit path when nothing of the exchange
// is left to net/http, and bounces between the two as requests come.
func TestHitPathTakeBack(t *testing.T) {
	e := newHitEnv(t, nil, 0)
	e.store("/file/t", "")
	hit := e.head("GET", "/file/t", "")
	fastHead, fastBody := e.dial().get(hit) // on the hit path
	isHit := func(t *testing.T, what, h, body string) {
		t.Helper()
		if !sameHead(h, fastHead) || body != fastBody {
			t.Fatalf("%s:\n%s%q\nwant\n%s%q", what, h, body, fastHead, fastBody)
		}
	}
	isMiss := func(t *testing.T, what, h, body, path string) {
		t.Helper()
		if !strings.HasPrefix(h, "HTTP/1.1 200") || !strings.Contains(h, "X-Cache: MISS") || !strings.HasPrefix(body, "contents of "+path) {
			t.Fatalf("%s: %s%q", what, h, body)
		}
	}
	// served waits (the access line is written before the connection is
	// taken back) and checks how many hits the hit path served since f0.
	served := func(t *testing.T, f0, want int64) {
		t.Helper()
		if got := e.h.fastHits.Load() - f0; got != want {
			t.Fatalf("the hit path served %d hits, want %d", got, want)
		}
	}

	t.Run("bounce", func(t *testing.T) {
		c := e.dial()
		f0 := e.h.fastHits.Load()
		for i := range 3 {
			path := fmt.Sprintf("/file/bounce%d", i)
			h, body := c.get(e.head("GET", path, ""))
			isMiss(t, "miss "+path, h, body, path)
			h, body = c.get(hit)
			isHit(t, "hit after "+path, h, body)
			served(t, f0, int64(i+1))
		}
		if n := e.count("/file/t"); n != 1 {
			t.Fatalf("origin asked %d times for the hit", n)
		}
	})

	t.Run("backoff", func(t *testing.T) {
		// A turn of the hit path that declines its first request (a
		// miss after a miss) leaves the connection to net/http for 2,
		// then 4, ... requests; a turn that serves a hit resets it.
		c := e.dial()
		f0 := e.h.fastHits.Load()
		miss := func(path string) {
			t.Helper()
			h, body := c.get(e.head("GET", path, ""))
			isMiss(t, "miss "+path, h, body, path)
		}
		hitOn := func(want int64) {
			t.Helper()
			h, body := c.get(hit)
			isHit(t, "hit", h, body)
			served(t, f0, want)
		}
		miss("/file/back1")
		miss("/file/back2") // declined by the hit path: a wait of 2
		miss("/file/back3")
		hitOn(0) // net/http's; then the hit path's turn
		hitOn(1)
		miss("/file/back4") // declined after a hit: no wait
		hitOn(2)
		miss("/file/back5") // declined after a hit: no wait
		miss("/file/back6") // declined at once: a wait of 2
		miss("/file/back7")
		miss("/file/back8")
		miss("/file/back9") // declined at once again: a wait of 4
		miss("/file/back10")
		miss("/file/back11")
		miss("/file/back12")
		hitOn(2) // net/http's
		hitOn(3)
	})

	t.Run("misses", func(t *testing.T) {
		// A connection of misses only: a few turns on the hit path, then
		// one every maxTakeBackWait+1 requests.
		c := e.dial()
		t0 := e.h.takenBack.Load()
		for i := range 300 {
			path := fmt.Sprintf("/file/many%d", i)
			h, body := c.get(e.head("GET", path, ""))
			isMiss(t, "miss "+path, h, body, path)
		}
		// Turns after requests 1, 4, 9, 18, 35, 68, 133, 198, 263.
		if n := e.h.takenBack.Load() - t0; n != 9 {
			t.Fatalf("taken back %d times in 300 misses, want 9", n)
		}
	})

	t.Run("chunked", func(t *testing.T) {
		// A response without a Content-Length from the origin keeps the
		// connection on net/http: chunked, or short enough that net/http
		// gives it a length once the handler returned. The request after
		// it is net/http's, and the one after that the hit path's.
		c := e.dial()
		f0 := e.h.fastHits.Load()
		for i, query := range []string{"big", "", "big"} {
			c.send(e.head("GET", "/chunked?"+query, ""))
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			want := "chunk one chunk two"
			if query == "big" {
				want = "chunk one " + strings.Repeat("x", 3000) + "chunk two"
			}
			if err != nil || string(b) != want || (len(resp.TransferEncoding) == 0) != (query == "") {
				t.Fatalf("chunked #%d: %q %v %v", i, b, err, resp.TransferEncoding)
			}
			h, body := c.get(hit)
			isHit(t, "hit after a response without Content-Length", h, body)
			served(t, f0, 0)
			h, body = c.get(hit)
			isHit(t, "second hit after it", h, body)
			served(t, f0, 1)
			f0++
		}
	})

	t.Run("close", func(t *testing.T) {
		c := e.dial()
		h, body := c.get(e.head("GET", "/file/closing", "Connection: close\r\n"))
		isMiss(t, "miss with Connection: close", h, body, "/file/closing")
		if !strings.Contains(h, "Connection: close\r\n") || !c.closed() {
			t.Fatalf("Connection: close on a miss: %s", h)
		}
	})

	t.Run("pipelined", func(t *testing.T) {
		// A hit right behind a miss (and a second one): net/http reads
		// them with the miss; the hit path answers them from its buffer.
		c := e.dial()
		f0 := e.h.fastHits.Load()
		c.send(e.head("GET", "/file/pipe1", "") + hit + hit + e.head("GET", "/file/pipe2", "") + hit)
		h, body := c.read(false)
		isMiss(t, "pipelined miss", h, body, "/file/pipe1")
		for i := range 2 {
			h, body = c.read(false)
			isHit(t, fmt.Sprintf("pipelined hit %d", i), h, body)
		}
		h, body = c.read(false)
		isMiss(t, "pipelined second miss", h, body, "/file/pipe2")
		h, body = c.read(false)
		isHit(t, "pipelined last hit", h, body)
		served(t, f0, 3)
	})

	t.Run("post", func(t *testing.T) {
		c := e.dial()
		f0 := e.h.fastHits.Load()
		h, body := c.get(post(e.url("/echo"), "hello"))
		if !strings.HasPrefix(h, "HTTP/1.1 200") || body != "POST 5 llo" {
			t.Fatalf("POST: %s%q", h, body)
		}
		h, body = c.get(hit)
		isHit(t, "hit after a POST", h, body)
		h, body = c.get(hit)
		isHit(t, "second hit after a POST", h, body)
		served(t, f0, 1)
	})

	t.Run("go", func(t *testing.T) {
		pu, _ := url.Parse("http://" + e.addr)
		tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true, MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		var conns atomic.Int64
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				conns.Add(1)
			}
		}}
		f0 := e.h.fastHits.Load()
		for i, path := range []string{"/file/go1", "/file/t", "/file/go2", "/file/t", "/file/t"} {
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, e.url(path), nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "contents of "+path) {
				t.Fatalf("Go client #%d %s: %d %q", i, path, resp.StatusCode, b)
			}
		}
		served(t, f0, 3)
		if conns.Load() != 1 {
			t.Fatalf("Go client used %d connections", conns.Load())
		}
	})

	t.Run("policy", func(t *testing.T) {
		c := e.dial()
		h, body := c.get(e.head("GET", "/file/policy", ""))
		isMiss(t, "miss", h, body, "/file/policy")
		waitHitIdle(t, e.h, c)
		e.engine.Store(e.policy(t, false))
		defer e.engine.Store(e.policy(t, true))
		h, body = c.get(hit)
		if !strings.HasPrefix(h, "HTTP/1.1 403") || !strings.Contains(h, "X-Egress-Denied: not_allowed") || strings.Contains(body, "contents") {
			t.Fatalf("after the reload: %s%q", h, body)
		}
		// net/http's denial closes the connection; it is not taken back.
		if !strings.Contains(h, "Connection: close\r\n") || !c.closed() {
			t.Fatal("connection open after the denial")
		}
		if n := e.count("/file/t"); n != 1 {
			t.Fatalf("origin asked %d times", n)
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		c := e.dial()
		h, body := c.get(e.head("GET", "/file/shut", ""))
		isMiss(t, "miss", h, body, "/file/shut")
		waitHitIdle(t, e.h, c) // taken back, idle on the hit path
		e.h.Shutdown(context.Background())
		if !c.closed() {
			t.Fatal("taken-back idle connection not closed by Shutdown")
		}
	})
}

// TestHitPathTakeBackIdle: a connection taken back from net/http closes
// after timeouts.idle without a request, as on either path.
func TestHitPathTakeBackIdle(t *testing.T) {
	e := newHitEnv(t, nil, 300*time.Millisecond)
	c := e.dial()
	c.get(e.head("GET", "/file/idle", ""))
	waitHitIdle(t, e.h, c)
	if !c.closed() {
		t.Fatal("idle taken-back connection not closed")
	}
}

// waitHitIdle waits until c's connection waits for a request on the hit
// path.
func waitHitIdle(t *testing.T, h *Handler, c *rawConn) {
	t.Helper()
	port := uint16(c.c.LocalAddr().(*net.TCPAddr).Port)
	idle := func() bool {
		h.hitMu.Lock()
		defer h.hitMu.Unlock()
		for ac := range h.hitIdle {
			if ac.Client.Port() == port {
				return true
			}
		}
		return false
	}
	for start := time.Now(); !idle(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("connection not idle on the hit path")
		}
	}
}
