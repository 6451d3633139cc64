package httpcache

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkHit is the cache's share of a hit: selecting the stored
// response, checking it, building the response and reading its 1 KiB body.
func BenchmarkHit(b *testing.B) {
	c := New(Options{MaxBytes: 1 << 20})
	defer c.Close()
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		b.Fatal("the origin was asked")
		return nil, nil
	})
	body := make([]byte, 1024)
	req, _ := http.NewRequest(http.MethodGet, "http://origin.test/object", nil)
	req.Header.Set("User-Agent", "bench")
	rq := newRequestInfo(req, "http://origin.test/object")
	o := c.newObject(rq, &http.Response{StatusCode: 200, ContentLength: 1024, Header: http.Header{
		"Cache-Control": {"public, max-age=3600"}, "Content-Type": {"application/octet-stream"},
		"Date": {string(appendHTTPDate(nil, c.o.Now()))},
	}}, parseCacheControl(http.Header{"Cache-Control": {"public, max-age=3600"}}), c.o.Now(), c.o.Now())
	o.body, o.length = body, 1024
	o.size = objectSize(o)
	c.store.put(o, nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.RoundTrip(req, next)
		if err != nil || resp.Header.Get(HeaderXCache) != string(Hit) {
			b.Fatalf("%v %v", err, resp.Header)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
