package forward

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/tunnel"
)

// staticDecider allows everything to one pinned address.
type staticDecider struct{ d policy.Decision }

func (s staticDecider) Decide(context.Context, policy.Request) (policy.Decision, error) {
	return s.d, nil
}

// BenchmarkForwardGET: one keep-alive client, absolute-URI GETs of a
// 1 KiB body through the Handler to an origin on loopback; the client and
// the origin run in the same process, so compare runs, not absolute
// figures (allocs/op is the steadiest).
func BenchmarkForwardGET(b *testing.B) {
	body := make([]byte, 1024)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		w.Write(body)
	}))
	defer origin.Close()
	oap := netip.MustParseAddrPort(origin.Listener.Addr().String())
	h := New(Options{
		Decider: staticDecider{policy.Decision{Verdict: policy.Allow, Host: "127.0.0.1", IsIP: true, Port: oap.Port(), Addrs: []netip.AddrPort{oap}}},
		Dialer:  &egress.Dialer{},
		Log:     accesslog.NewLogger(nil, nil),
		Runner:  &tunnel.Runner{},
	})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	pu, _ := url.Parse("http://" + ln.Addr().String())
	tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	target := "http://" + oap.String() + "/x"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}

// cachingHandler is a Handler with the HTTP cache on that allows an origin
// answering a cacheable 1 KiB object at every path; both end with b.
func cachingHandler(b *testing.B) (*Handler, netip.AddrPort) {
	body := make([]byte, 1024)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Write(body)
	}))
	b.Cleanup(origin.Close)
	oap := netip.MustParseAddrPort(origin.Listener.Addr().String())
	cache := httpcache.New(httpcache.Options{MaxBytes: 1 << 20})
	b.Cleanup(cache.Close)
	return New(Options{
		Decider: staticDecider{policy.Decision{Verdict: policy.Allow, Host: "127.0.0.1", IsIP: true, Port: oap.Port(), Addrs: []netip.AddrPort{oap}}},
		Dialer:  &egress.Dialer{},
		Log:     accesslog.NewLogger(nil, nil),
		Runner:  &tunnel.Runner{},
		Cache:   cache,
	}), oap
}

// BenchmarkForwardHit: as BenchmarkForwardGET, with the HTTP cache on and
// the object stored: every request is a hit answered from storage.
func BenchmarkForwardHit(b *testing.B) {
	h, oap := cachingHandler(b)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	pu, _ := url.Parse("http://" + ln.Addr().String())
	tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	target := "http://" + oap.String() + "/x"
	get := func() string {
		resp, err := c.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get(httpcache.HeaderXCache)
	}
	get() // stores it
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if xc := get(); xc != string(httpcache.Hit) {
			b.Fatalf("X-Cache %q", xc)
		}
	}
}

// BenchmarkCacheHitPath: as BenchmarkForwardHit, through the accept
// pipeline and Serve: every request is a fresh hit on one keep-alive
// connection, answered by the hit path (hit.go) without net/http.
func BenchmarkCacheHitPath(b *testing.B) {
	h, oap := cachingHandler(b)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	acc := accept.Serve(ln, h, accept.Options{Listener: policy.ListenerHTTP})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		h.Run()
	}()
	defer func() {
		h.Close()
		acc.Close()
		<-ran
	}()
	head := "GET http://" + oap.String() + "/x HTTP/1.1\r\nHost: " + oap.String() + "\r\nUser-Agent: bench\r\n\r\n"
	get := func(c net.Conn, br *bufio.Reader) string {
		if _, err := io.WriteString(c, head); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get(httpcache.HeaderXCache)
	}
	c0, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	get(c0, bufio.NewReader(c0)) // stores it
	c0.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if xc := get(c, br); xc != string(httpcache.Hit) {
			b.Fatalf("X-Cache %q", xc)
		}
	}
	b.StopTimer()
	if h.fastHits.Load() != int64(b.N) {
		b.Fatalf("the hit path served %d of %d", h.fastHits.Load(), b.N)
	}
}
