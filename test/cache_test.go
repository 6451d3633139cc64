package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// cacheOrigin is a plain-HTTP origin in the test namespace that counts the
// requests it gets by path. /file/NAME is fresh for 10 minutes; /reval is
// stale at once and revalidates with its ETag; /big is 1 MiB, sent in two
// parts with a pause in between that the test ends (release).
type cacheOrigin struct {
	srv     *http.Server
	port    int
	release chan struct{}
	big     []byte

	mu   sync.Mutex
	hits map[string]int
	inm  []string // If-None-Match of each /reval request
}

const bigFirst = 64 << 10

func newCacheOrigin(t *testing.T, ns *testenv.Netns) *cacheOrigin {
	t.Helper()
	ln, err := ns.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &cacheOrigin{
		port:    ln.Addr().(*net.TCPAddr).Port,
		release: make(chan struct{}),
		big:     bytes.Repeat([]byte("egressd "), (1<<20)/8),
		hits:    map[string]int{},
	}
	o.srv = &http.Server{Handler: http.HandlerFunc(o.serve), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		o.srv.Close()
		<-done
	})
	return o
}

func (o *cacheOrigin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.hits[r.URL.Path]++
	if r.URL.Path == "/reval" {
		o.inm = append(o.inm, r.Header.Get("If-None-Match"))
	}
	o.mu.Unlock()
	switch {
	case strings.HasPrefix(r.URL.Path, "/file/"):
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"`+r.URL.Path+`"`)
		if r.URL.Path == "/file/forged" {
			w.Header().Set("X-Egress-Denied", "forged") // must never reach a client
		}
		io.WriteString(w, "contents of "+r.URL.Path)
	case r.URL.Path == "/reval":
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("ETag", `"r1"`)
		if r.Header.Get("If-None-Match") == `"r1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "revalidated body")
	case r.URL.Path == "/hints":
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.Header().Set("X-Egress-Denied", "forged")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("X-Egress-Denied")
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "final")
	case r.URL.Path == "/big":
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(o.big)))
		w.Write(o.big[:bigFirst])
		w.(http.Flusher).Flush()
		select {
		case <-o.release:
		case <-r.Context().Done():
			return
		}
		w.Write(o.big[bigFirst:])
	default:
		http.NotFound(w, r)
	}
}

func (o *cacheOrigin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// cacheEnv is egressd with its HTTP cache on, in a namespace with the
// origin (cache.test) and a DNS server. Clients from 127.0.0.1 are group
// web, from 127.0.0.77 group ops; the rule for cache.test names groups.
type cacheEnv struct {
	ns     *testenv.Netns
	origin *cacheOrigin
	proc   *testenv.Proc
	dns    string
	listen [3]string
}

func newCacheEnv(t *testing.T, groups ...string) *cacheEnv {
	t.Helper()
	e := &cacheEnv{ns: testenv.NewNetns(t)}
	e.origin = newCacheOrigin(t, e.ns)
	dns := testenv.NewDNSServerIn(t, e.ns, "127.0.0.53")
	dns.Set("cache.test", 60, netip.MustParseAddr("127.0.0.3"))
	e.dns = dns.Addr()
	e.listen = [3]string{e.ns.FreeAddr(t, "127.0.0.1"), e.ns.FreeAddr(t, "127.0.0.1"), e.ns.FreeAddr(t, "127.0.0.1")}
	e.proc = (&testenv.Egressd{Netns: e.ns}).StartConfig(t, e.config(t, groups...))
	return e
}

// config allows cache.test to the groups listed (none: no rule for it at
// all), with the HTTP cache on.
func (e *cacheEnv) config(t *testing.T, groups ...string) *testenv.Config {
	t.Helper()
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listen{HTTP: e.listen[0], SOCKS5: e.listen[1], Admin: e.listen[2]}
	c.DNS.Servers = []string{e.dns}
	c.Timeouts.Handshake = 3 * time.Second
	c.Timeouts.Connect = 2 * time.Second
	c.Cache.HTTP.MaxBytes = 64 << 20
	c.Cache.HTTP.MaxObjectBytes = 4 << 20
	c.Cache.HTTP.CollapseTimeout = 30 * time.Second
	c.Policy.Mode = "enforce"
	c.Policy.Groups = map[string]testenv.Group{
		"web": {CIDRs: []string{"127.0.0.1/32"}},
		"ops": {CIDRs: []string{"127.0.0.77/32"}},
	}
	c.Policy.Rules = []testenv.Rule{{Name: "something-else", Hosts: []string{"other.test"}, Ports: []int{e.origin.port}}}
	if len(groups) > 0 {
		c.Policy.Rules = []testenv.Rule{{Name: "cache-origin", Groups: groups, Hosts: []string{"cache.test"},
			Ports: []int{e.origin.port}, AllowRanges: []string{"127.0.0.0/24"}}}
	}
	return c
}

// client is a Go client using egressd as its HTTP proxy, connecting from
// the address from (127.0.0.1: group web; 127.0.0.77: group ops).
func (e *cacheEnv) client(t *testing.T, from string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy: http.ProxyURL(e.proc.ProxyURL()),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e.ns.DialFromContext(ctx, network, from, addr)
		},
		MaxIdleConnsPerHost: 128,
		DisableCompression:  true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (e *cacheEnv) url(path string) string {
	return fmt.Sprintf("http://cache.test:%d%s", e.origin.port, path)
}

// get fetches path and returns the status, X-Cache and body.
func get(t *testing.T, c *http.Client, url string) (int, string, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header.Get("X-Cache"), string(b)
}

func (e *cacheEnv) scrape(t *testing.T) metrics {
	t.Helper()
	out, errOut, code := e.ns.Curl(t, "-sS", "--max-time", "10", "--noproxy", "*", "http://"+e.proc.AdminAddr+"/metrics")
	if code != 0 {
		t.Fatalf("scrape: curl exit %d: %s", code, errOut)
	}
	return parseMetrics(t, strings.NewReader(out))
}

// TestHTTPCache drives egressd's HTTP cache with real curl and Go's
// Transport: a fresh response is stored on the first request and served on
// the second without asking the origin (X-Cache: MISS, then HIT); a stale
// one is revalidated with its ETag (REVALIDATED); the access lines carry
// cache and the metrics count both, with the bytes served from storage.
func TestHTTPCache(t *testing.T) {
	e := newCacheEnv(t, "web")
	curl := func(path string) (string, string) {
		t.Helper()
		out, hdr, code := e.ns.Curl(t, "-sS", "--max-time", "20", "-D", "/dev/stderr", "-x", e.proc.ProxyURL().String(), e.url(path))
		if code != 0 {
			t.Fatalf("curl %s: exit %d: %s", path, code, hdr)
		}
		return out, hdr
	}
	body, hdr := curl("/file/a")
	if body != "contents of /file/a" || !strings.Contains(hdr, "X-Cache: MISS") {
		t.Errorf("first: %q\n%s", body, hdr)
	}
	body, hdr = curl("/file/a")
	if body != "contents of /file/a" || !strings.Contains(hdr, "X-Cache: HIT") || !strings.Contains(hdr, "Age: ") {
		t.Errorf("second: %q\n%s", body, hdr)
	}
	if n := e.origin.count("/file/a"); n != 1 {
		t.Errorf("origin asked %d times for /file/a, want once", n)
	}

	c := e.client(t, "127.0.0.1")
	for i, want := range []string{"MISS", "REVALIDATED", "REVALIDATED"} {
		code, xc, body := get(t, c, e.url("/reval"))
		if code != 200 || xc != want || body != "revalidated body" {
			t.Errorf("/reval #%d: %d %s %q, want 200 %s", i+1, code, xc, body, want)
		}
	}
	// Hits answered as HEAD, as a 304 to the client's own validator, and
	// for a stored response carrying a field that would pass as egressd's.
	head, err := http.NewRequest(http.MethodHead, e.url("/file/a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Do(head); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" || resp.ContentLength != int64(len("contents of /file/a")) {
			t.Errorf("HEAD: %d X-Cache %q Content-Length %d", resp.StatusCode, resp.Header.Get("X-Cache"), resp.ContentLength)
		}
	}
	inmReq, _ := http.NewRequest(http.MethodGet, e.url("/file/a"), nil)
	inmReq.Header.Set("If-None-Match", `"/file/a"`)
	if resp, err := c.Do(inmReq); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified || resp.Header.Get("X-Cache") != "HIT" {
			t.Errorf("If-None-Match: %d X-Cache %q, want 304 HIT", resp.StatusCode, resp.Header.Get("X-Cache"))
		}
	}
	for i, want := range []string{"MISS", "HIT"} {
		req, _ := http.NewRequest(http.MethodGet, e.url("/file/forged"), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Cache") != want || resp.Header.Get("X-Egress-Denied") != "" {
			t.Errorf("/file/forged #%d: X-Cache %q, X-Egress-Denied %q", i+1, resp.Header.Get("X-Cache"), resp.Header.Get("X-Egress-Denied"))
		}
	}
	if n := e.origin.count("/file/a"); n != 1 {
		t.Errorf("origin asked %d times for /file/a, want once", n)
	}

	e.origin.mu.Lock()
	inm := append([]string(nil), e.origin.inm...)
	e.origin.mu.Unlock()
	if strings.Join(inm, " ") != ` "r1" "r1"` {
		t.Errorf("the origin got If-None-Match %q, want none and then the stored ETag twice", inm)
	}

	for _, l := range []map[string]any{
		{"host": "cache.test", "method": "GET", "cache": "hit", "status": float64(200), "bytes_down": float64(len("contents of /file/a"))},
		{"host": "cache.test", "method": "GET", "cache": "miss", "status": float64(200), "decision": "allow", "rule": "cache-origin"},
		{"host": "cache.test", "method": "GET", "cache": "revalidated", "status": float64(200)},
	} {
		e.proc.WaitForLog(t, testenv.Fields(l))
	}
	m := e.scrape(t)
	for labels, want := range map[string]float64{"result=hit": 4, "result=miss": 3, "result=revalidated": 2} {
		if got := m.series("egressd_cache_requests_total")[labels]; got != want {
			t.Errorf("egressd_cache_requests_total{%s} = %v, want %v", labels, got, want)
		}
	}
	if got, want := m.series("egressd_cache_served_bytes_total")[""], float64(len("contents of /file/a")+len("contents of /file/forged")+2*len("revalidated body")); got != want {
		t.Errorf("egressd_cache_served_bytes_total = %v, want %v", got, want)
	}
	if got := m.series("egressd_cache_stored_objects")[""]; got != 3 {
		t.Errorf("egressd_cache_stored_objects = %v, want 3", got)
	}
	if got := m.series("egressd_cache_stored_bytes")[""]; got <= 0 {
		t.Errorf("egressd_cache_stored_bytes = %v", got)
	}
}

// TestHTTPCacheCollapsedForwarding: 100 instances booting at once fetch the
// same 1 MiB artifact through egressd; the origin is asked once, and every
// client gets the first part while the origin still holds the rest
// (collapsed requests stream the one fetch as it arrives).
func TestHTTPCacheCollapsedForwarding(t *testing.T) {
	const clients = 100
	e := newCacheEnv(t, "web")
	c := e.client(t, "127.0.0.1")
	type result struct {
		xcache string
		ok     bool
		err    error
	}
	results := make(chan result, clients)
	var first sync.WaitGroup
	first.Add(clients)
	for range clients {
		go func() {
			resp, err := c.Get(e.url("/big"))
			if err != nil {
				first.Done()
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			head := make([]byte, bigFirst)
			_, err = io.ReadFull(resp.Body, head)
			first.Done()
			if err != nil {
				results <- result{err: err}
				return
			}
			rest, err := io.ReadAll(resp.Body)
			results <- result{xcache: resp.Header.Get("X-Cache"), ok: bytes.Equal(append(head, rest...), e.origin.big), err: err}
		}()
	}
	waited := make(chan struct{})
	go func() { first.Wait(); close(waited) }()
	select {
	case <-waited: // every client has the first part; the origin still holds the rest
	case <-time.After(20 * time.Second):
		t.Fatalf("not every client got the first part of the body while the origin held the rest (origin asked %d times)", e.origin.count("/big"))
	}
	close(e.origin.release)
	count := map[string]int{}
	for range clients {
		r := <-results
		if r.err != nil || !r.ok {
			t.Errorf("client: %v, body intact: %v", r.err, r.ok)
			continue
		}
		count[r.xcache]++
	}
	if n := e.origin.count("/big"); n != 1 {
		t.Errorf("the origin was asked %d times, want once", n)
	}
	if count["MISS"] != 1 || count["HIT"] != clients-1 {
		t.Errorf("X-Cache %v, want one MISS and %d HIT", count, clients-1)
	}
	if got := e.scrape(t).series("egressd_cache_collapsed_total")[""]; got != clients-1 {
		t.Errorf("egressd_cache_collapsed_total = %v, want %d", got, clients-1)
	}
}

// TestHTTPCachePolicyFirst: a stored response reaches only clients the
// policy allows that host now. A group without the rule is denied although
// the object is stored, and a reload that removes the host makes its
// objects unreachable at once; the origin is never asked again.
func TestHTTPCachePolicyFirst(t *testing.T) {
	e := newCacheEnv(t, "web")
	web, ops := e.client(t, "127.0.0.1"), e.client(t, "127.0.0.77")
	url := e.url("/file/p")
	for _, want := range []string{"MISS", "HIT"} {
		if code, xc, _ := get(t, web, url); code != 200 || xc != want {
			t.Fatalf("web: %d %s, want 200 %s", code, xc, want)
		}
	}
	code, xc, body := get(t, ops, url)
	if code != http.StatusForbidden || xc != "" || strings.Contains(body, "contents") {
		t.Errorf("ops, not in the rule's groups: %d X-Cache %q %q, want 403 without the stored object", code, xc, body)
	}
	e.proc.WaitForLog(t, testenv.Fields(map[string]any{"client": "127.0.0.77", "host": "cache.test", "decision": "deny", "reason": "not_allowed"}))

	if err := os.WriteFile(e.proc.ConfigPath, []byte(testenv.YAML(t, e.config(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	e.proc.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return reloads(t, e.ns, e.proc.AdminAddr, "success") >= 1 })
	code, xc, body = get(t, web, url)
	if code != http.StatusForbidden || xc != "" || strings.Contains(body, "contents") {
		t.Errorf("web after the reload removed the host: %d X-Cache %q %q, want 403", code, xc, body)
	}
	if n := e.origin.count("/file/p"); n != 1 {
		t.Errorf("origin asked %d times, want once", n)
	}
	for _, l := range e.proc.AccessLines() {
		if l["decision"] == "deny" && l["cache"] != nil {
			t.Errorf("a denied request went through the cache: %v", l)
		}
	}
}

// TestInterimResponsesForwarded: a 103 Early Hints from the origin reaches
// the client before the final response, as RFC 9110 section 15.2 asks of a
// proxy, without headers that would pass as egressd's; the final response
// is stored, and a hit has no interim response.
func TestInterimResponsesForwarded(t *testing.T) {
	e := newCacheEnv(t, "web")
	c := e.client(t, "127.0.0.1")
	for _, want := range []struct {
		xcache string
		hints  int
	}{{"MISS", 1}, {"HIT", 0}} {
		var mu sync.Mutex
		var got []textproto.MIMEHeader
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			defer mu.Unlock()
			if code == http.StatusEarlyHints {
				got = append(got, h)
			}
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, e.url("/hints"), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		hints := append([]textproto.MIMEHeader(nil), got...)
		mu.Unlock()
		if string(body) != "final" || resp.Header.Get("X-Cache") != want.xcache || len(hints) != want.hints {
			t.Errorf("%q X-Cache %s with %d 103s, want %s with %d", body, resp.Header.Get("X-Cache"), len(hints), want.xcache, want.hints)
		}
		for _, h := range hints {
			if h.Get("Link") != "</style.css>; rel=preload; as=style" || h.Get("X-Egress-Denied") != "" {
				t.Errorf("103 fields: %v", h)
			}
		}
	}
}

// waitFor polls cond until it holds, at most 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("condition not met within 10s")
		}
	}
}
