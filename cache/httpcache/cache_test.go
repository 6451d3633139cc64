package httpcache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time for freshness tests: no sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// origin is an in-process HTTP server that counts the requests it gets, by
// path, and answers with the handler the test gives (nil: 200, "body").
type origin struct {
	srv     *httptest.Server
	clock   *clock
	mu      sync.Mutex
	hits    map[string]int
	lastReq *http.Request // the last request that reached it
	serve   func(w http.ResponseWriter, r *http.Request)
}

func newOrigin(t *testing.T, clk *clock, serve func(w http.ResponseWriter, r *http.Request)) *origin {
	t.Helper()
	o := &origin{clock: clk, hits: map[string]int{}, serve: serve}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits[r.URL.Path]++
		o.lastReq = r.Clone(context.Background())
		o.mu.Unlock()
		w.Header().Set("Date", string(appendHTTPDate(nil, clk.Now())))
		if o.serve == nil {
			io.WriteString(w, "body")
			return
		}
		o.serve(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

func (o *origin) last() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastReq
}

// env is a cache in front of a real Transport, and a client using it.
type env struct {
	t      *testing.T
	clock  *clock
	origin *origin
	cache  *Cache
	client *http.Client
	obs    *countingObserver
}

func newEnv(t *testing.T, o Options, serve func(w http.ResponseWriter, r *http.Request)) *env {
	t.Helper()
	clk := newClock()
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	obs := &countingObserver{}
	o.Observer = obs
	o.Now = clk.Now
	c := New(o)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(func() {
		c.Close()
		tr.CloseIdleConnections()
	})
	e := &env{t: t, clock: clk, cache: c, obs: obs,
		client: &http.Client{
			Transport: &Transport{Cache: c, Next: tr},
			// Redirects are answers to check, never followed: a Location
			// may name a host outside the test.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	e.origin = newOrigin(t, clk, serve)
	return e
}

// get sends a request for path with the given header lines ("Name: value")
// and returns the response with its body read.
func (e *env) get(path string, header ...string) (*http.Response, string) {
	return e.do(http.MethodGet, path, header...)
}

func (e *env) do(method, path string, header ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.origin.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(k, strings.TrimSpace(v))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

// expect checks X-Cache, the status and the origin's count for path.
func (e *env) expect(resp *http.Response, st Status, code, originCount int) {
	e.t.Helper()
	if got := resp.Header.Get(HeaderXCache); got != string(st) {
		e.t.Errorf("%s: X-Cache %q, want %q", resp.Request.URL.Path, got, st)
	}
	if resp.StatusCode != code {
		e.t.Errorf("%s: status %d, want %d", resp.Request.URL.Path, resp.StatusCode, code)
	}
	if got := e.origin.count(resp.Request.URL.Path); got != originCount {
		e.t.Errorf("%s: origin saw %d requests, want %d", resp.Request.URL.Path, got, originCount)
	}
}

type countingObserver struct {
	collapsed atomic.Int64
	bytes     atomic.Int64
	objects   atomic.Int64
	evicted   atomic.Int64
}

func (o *countingObserver) Collapsed() { o.collapsed.Add(1) }
func (o *countingObserver) Stored(b int64, n int) {
	o.bytes.Store(b)
	o.objects.Store(int64(n))
}
func (o *countingObserver) Evicted(n int) { o.evicted.Add(int64(n)) }

// respond returns a handler that sets header lines and writes body.
func respond(code int, body string, header ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, h := range header {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(k, strings.TrimSpace(v))
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func TestFreshness(t *testing.T) {
	t.Parallel()
	past := func(e *env, d time.Duration) string { return string(appendHTTPDate(nil, e.clock.Now().Add(d))) }
	cases := []struct {
		name string
		// header lines of the origin's response; {+1h} and {-1h} are dates
		// relative to the clock.
		header []string
		code   int
		// fresh for: a second request after fresh is a hit, one after
		// stale (when > 0) a miss.
		fresh, stale time.Duration
		stored       bool
	}{
		{name: "max-age", header: []string{"Cache-Control: max-age=60"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
		{name: "s-maxage wins over max-age", header: []string{"Cache-Control: max-age=600, s-maxage=60"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
		{name: "max-age wins over Expires", header: []string{"Cache-Control: max-age=60", "Expires: {+1h}"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
		{name: "Expires", header: []string{"Expires: {+1h}"}, fresh: 59 * time.Minute, stale: 61 * time.Minute, stored: true},
		{name: "Expires in the past", header: []string{"Expires: {-1h}"}},
		{name: "invalid Expires", header: []string{"Expires: 0"}},
		{name: "Age counts", header: []string{"Cache-Control: max-age=60", "Age: 50"}, fresh: 9 * time.Second, stale: 11 * time.Second, stored: true},
		{name: "Age past max-age", header: []string{"Cache-Control: max-age=60", "Age: 61"}},
		{name: "heuristic from Last-Modified", header: []string{"Last-Modified: {-10h}"}, fresh: 59 * time.Minute, stale: 61 * time.Minute, stored: true},
		{name: "heuristic capped at a day", header: []string{"Last-Modified: {-1000h}"}, fresh: 23 * time.Hour, stale: 25 * time.Hour, stored: true},
		{name: "no heuristic for 302", header: []string{"Last-Modified: {-10h}", "Location: /x"}, code: 302},
		{name: "302 with max-age", header: []string{"Cache-Control: max-age=60", "Location: /x"}, code: 302, fresh: 59 * time.Second, stored: true},
		{name: "no freshness, no validator", header: nil},
		{name: "negative max-age", header: []string{"Cache-Control: max-age=-1"}},
		{name: "max-age=0", header: []string{"Cache-Control: max-age=0"}},
		{name: "CDN-Cache-Control is a heuristic", header: []string{"CDN-Cache-Control: max-age=60"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
		{name: "CDN-Cache-Control restricts", header: []string{"Cache-Control: max-age=600", "CDN-Cache-Control: max-age=60"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
		{name: "CDN-Cache-Control never extends", header: []string{"Cache-Control: max-age=60", "CDN-Cache-Control: max-age=600"}, fresh: 59 * time.Second, stale: 61 * time.Second, stored: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code := tc.code
			if code == 0 {
				code = 200
			}
			var e *env
			e = newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				for _, h := range tc.header {
					k, v, _ := strings.Cut(h, ":")
					v = strings.TrimSpace(v)
					if strings.HasPrefix(v, "{") {
						d, _ := time.ParseDuration(strings.Trim(v, "{}+"))
						v = past(e, d)
					}
					w.Header().Add(k, v)
				}
				w.WriteHeader(code)
				io.WriteString(w, "body")
			})
			resp, _ := e.get("/f")
			e.expect(resp, Miss, code, 1)
			if !tc.stored {
				resp, _ = e.get("/f")
				e.expect(resp, Miss, code, 2)
				return
			}
			e.clock.Advance(tc.fresh)
			resp, body := e.get("/f")
			e.expect(resp, Hit, code, 1)
			if body != "body" {
				t.Errorf("hit body %q", body)
			}
			if tc.stale > 0 {
				e.clock.Advance(tc.stale - tc.fresh)
				resp, _ = e.get("/f")
				e.expect(resp, Miss, code, 2)
			}
		})
	}
}

func TestAgeAndDateOnHits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, respond(200, "x", "Cache-Control: max-age=600", "Age: 10"))
	first, _ := e.get("/a")
	date := first.Header.Get("Date")
	e.clock.Advance(95 * time.Second)
	resp, _ := e.get("/a")
	e.expect(resp, Hit, 200, 1)
	if got := resp.Header.Get("Age"); got != "105" {
		t.Errorf("Age %q, want 105", got)
	}
	if got := resp.Header.Get("Date"); got != date {
		t.Errorf("Date %q on the hit, want the stored %q", got, date)
	}
	if got := resp.Header.Get("Content-Length"); got != "1" {
		t.Errorf("Content-Length %q", got)
	}
}

func TestRequestDirectives(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		advance time.Duration // after the first request (max-age=100 stored)
		header  []string
		want    Status
		code    int
	}{
		{name: "plain", want: Hit},
		{name: "no-cache revalidates", header: []string{"Cache-Control: no-cache"}, want: Revalidated},
		{name: "Pragma no-cache alone", header: []string{"Pragma: no-cache"}, want: Revalidated},
		{name: "Pragma with Cache-Control", header: []string{"Pragma: no-cache", "Cache-Control: max-stale"}, want: Hit},
		{name: "max-age=0", header: []string{"Cache-Control: max-age=0"}, want: Revalidated},
		{name: "max-age older", advance: 30 * time.Second, header: []string{"Cache-Control: max-age=20"}, want: Revalidated},
		{name: "max-age young enough", advance: 10 * time.Second, header: []string{"Cache-Control: max-age=20"}, want: Hit},
		{name: "min-fresh", advance: 90 * time.Second, header: []string{"Cache-Control: min-fresh=20"}, want: Revalidated},
		{name: "max-stale", advance: 150 * time.Second, header: []string{"Cache-Control: max-stale=60"}, want: Hit},
		{name: "max-stale too short", advance: 150 * time.Second, header: []string{"Cache-Control: max-stale=10"}, want: Revalidated},
		{name: "only-if-cached", header: []string{"Cache-Control: only-if-cached"}, want: Hit},
		{name: "only-if-cached stale", advance: 150 * time.Second, header: []string{"Cache-Control: only-if-cached"}, want: Miss, code: 504},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=100")
				w.Header().Set("ETag", `"v1"`)
				if r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				io.WriteString(w, "body")
			})
			e.get("/r")
			e.clock.Advance(tc.advance)
			resp, body := e.get("/r", tc.header...)
			code := tc.code
			if code == 0 {
				code = 200
			}
			origin := map[Status]int{Hit: 1, Revalidated: 2, Miss: 1}[tc.want]
			e.expect(resp, tc.want, code, origin)
			if code == 200 && body != "body" {
				t.Errorf("body %q", body)
			}
		})
	}
}

func TestNotStored(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		header  []string
		request []string
		code    int
	}{
		{name: "no-store", header: []string{"Cache-Control: max-age=100, no-store"}},
		{name: "no-store any case", header: []string{"Cache-Control: max-age=100, No-Store"}},
		{name: "request no-store", header: []string{"Cache-Control: max-age=100"}, request: []string{"Cache-Control: no-store"}},
		{name: "private", header: []string{"Cache-Control: max-age=100, private"}},
		{name: "Set-Cookie", header: []string{"Cache-Control: max-age=100, public", "Set-Cookie: session=alice"}},
		{name: "Vary star", header: []string{"Cache-Control: max-age=100", "Vary: Accept, *"}},
		{name: "CDN-Cache-Control private", header: []string{"Cache-Control: max-age=100", "CDN-Cache-Control: private"}},
		{name: "CDN-Cache-Control no-store", header: []string{"Cache-Control: max-age=100", "CDN-Cache-Control: no-store"}},
		{name: "must-understand unknown status", header: []string{"Cache-Control: max-age=100, no-store, must-understand"}, code: 599},
		{name: "partial content", header: []string{"Cache-Control: max-age=100", "Content-Range: bytes 0-3/10"}, code: 206},
		{name: "Authorization", header: []string{"Cache-Control: max-age=100"}, request: []string{"Authorization: Basic YTpi"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code := tc.code
			if code == 0 {
				code = 200
			}
			e := newEnv(t, Options{}, respond(code, "body", tc.header...))
			for i := 1; i <= 2; i++ {
				resp, _ := e.get("/n", tc.request...)
				e.expect(resp, Miss, code, i)
			}
			if n := e.obs.objects.Load(); n != 0 {
				t.Errorf("%d objects stored", n)
			}
		})
	}
}

func TestStoredWith(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		header  []string
		request []string
		code    int
	}{
		{name: "Authorization and public", header: []string{"Cache-Control: max-age=100, public"}, request: []string{"Authorization: Basic YTpi"}},
		{name: "Authorization and s-maxage", header: []string{"Cache-Control: s-maxage=100"}, request: []string{"Authorization: Basic YTpi"}},
		{name: "Authorization and must-revalidate", header: []string{"Cache-Control: max-age=100, must-revalidate"}, request: []string{"Authorization: Basic YTpi"}},
		{name: "must-understand known status", header: []string{"Cache-Control: max-age=100, no-store, must-understand"}},
		{name: "404 heuristic", header: []string{"Cache-Control: public, max-age=100"}, code: 404},
		{name: "request Cookie", header: []string{"Cache-Control: max-age=100"}, request: []string{"Cookie: a=b"}},
		{name: "qualified private", header: []string{`Cache-Control: max-age=100, private="X-Secret"`, "X-Secret: s3cr3t"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code := tc.code
			if code == 0 {
				code = 200
			}
			e := newEnv(t, Options{}, respond(code, "body", tc.header...))
			resp, _ := e.get("/s", tc.request...)
			e.expect(resp, Miss, code, 1)
			resp, _ = e.get("/s", tc.request...)
			e.expect(resp, Hit, code, 1)
			if v := resp.Header.Get("X-Secret"); v != "" {
				t.Errorf("a field private=X-Secret names was stored: %q", v)
			}
		})
	}
}

func TestAuthorizationNotServedStoredAnswer(t *testing.T) {
	t.Parallel()
	// A response stored for anonymous requests must not answer one with
	// Authorization unless it allows that.
	e := newEnv(t, Options{}, respond(200, "body", "Cache-Control: max-age=100"))
	e.get("/a")
	resp, _ := e.get("/a", "Authorization: Basic YTpi")
	e.expect(resp, Miss, 200, 2)
}

func TestVary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		w.Header().Set("Vary", "Accept-Language, X-Foo")
		fmt.Fprintf(w, "lang=%s foo=%s", r.Header.Get("Accept-Language"), r.Header.Get("X-Foo"))
	})
	steps := []struct {
		header []string
		want   Status
		body   string
		origin int
	}{
		{[]string{"Accept-Language: en, de", "X-Foo: 1"}, Miss, "lang=en, de foo=1", 1},
		{[]string{"Accept-Language: en, de", "X-Foo: 1"}, Hit, "lang=en, de foo=1", 1},
		{[]string{"Accept-Language: DE ,en", "X-Foo: 1"}, Hit, "lang=en, de foo=1", 1}, // normalized
		{[]string{"Accept-Language: en, de", "X-Foo: 2"}, Miss, "lang=en, de foo=2", 2},
		{[]string{"Accept-Language: en, de", "X-Foo: 2"}, Hit, "lang=en, de foo=2", 2},
		{[]string{"Accept-Language: en, de", "X-Foo: 1"}, Hit, "lang=en, de foo=1", 2}, // both variants kept
		{[]string{"Accept-Language: en, de"}, Miss, "lang=en, de foo=", 3},             // absent differs from present
		{[]string{"Accept-Language: en, de", "X-Foo: 1", "X-Bar: 9"}, Hit, "lang=en, de foo=1", 3},
	}
	for i, s := range steps {
		resp, body := e.get("/v", s.header...)
		if resp.Header.Get(HeaderXCache) != string(s.want) || body != s.body || e.origin.count("/v") != s.origin {
			t.Errorf("step %d %v: X-Cache %s body %q origin %d, want %s %q %d", i, s.header,
				resp.Header.Get(HeaderXCache), body, e.origin.count("/v"), s.want, s.body, s.origin)
		}
	}
}

func TestRevalidation(t *testing.T) {
	t.Parallel()
	for _, validator := range []string{"ETag", "Last-Modified"} {
		t.Run(validator, func(t *testing.T) {
			t.Parallel()
			var version atomic.Int32
			lm := "Mon, 07 Dec 2026 08:00:00 GMT"
			e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				v := version.Load()
				w.Header().Set("Cache-Control", "max-age=10")
				w.Header().Set("X-Version", strconv.Itoa(int(v)))
				if validator == "ETag" {
					w.Header().Set("ETag", `"e1"`)
					if r.Header.Get("If-None-Match") == `"e1"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				} else {
					w.Header().Set("Last-Modified", lm)
					if r.Header.Get("If-Modified-Since") == lm {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				}
				io.WriteString(w, "the body")
			})
			resp, _ := e.get("/r")
			e.expect(resp, Miss, 200, 1)
			e.clock.Advance(20 * time.Second)
			version.Store(2) // the 304 carries a new X-Version: stored fields are refreshed
			resp, body := e.get("/r")
			e.expect(resp, Revalidated, 200, 2)
			if body != "the body" || resp.Header.Get("X-Version") != "2" {
				t.Errorf("revalidated: body %q X-Version %q", body, resp.Header.Get("X-Version"))
			}
			if resp.Header.Get("Content-Length") != "8" {
				t.Errorf("Content-Length %q", resp.Header.Get("Content-Length"))
			}
			// Fresh again for 10 s from the 304.
			e.clock.Advance(5 * time.Second)
			resp, _ = e.get("/r")
			e.expect(resp, Hit, 200, 2)
			if resp.Header.Get("X-Version") != "2" {
				t.Errorf("after the refresh, X-Version %q", resp.Header.Get("X-Version"))
			}
		})
	}
}

func TestRevalidationReplacedByNewResponse(t *testing.T) {
	t.Parallel()
	var version atomic.Int32
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		v := strconv.Itoa(int(version.Load()))
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"`+v+`"`)
		if r.Header.Get("If-None-Match") == `"`+v+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "version "+v)
	})
	e.get("/n")
	e.clock.Advance(20 * time.Second)
	version.Store(1)
	resp, body := e.get("/n")
	e.expect(resp, Miss, 200, 2)
	if body != "version 1" {
		t.Errorf("body %q", body)
	}
	if got := e.origin.last().Header.Get("If-None-Match"); got != `"0"` {
		t.Errorf("revalidation sent If-None-Match %q", got)
	}
	resp, body = e.get("/n")
	e.expect(resp, Hit, 200, 2)
	if body != "version 1" {
		t.Errorf("the new response was not stored: %q", body)
	}
}

func TestNoCacheResponseRevalidatesEveryTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1000, no-cache")
		w.Header().Set("ETag", `"a"`)
		if r.Header.Get("If-None-Match") == `"a"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "body")
	})
	e.get("/c")
	for i := 2; i <= 3; i++ {
		resp, body := e.get("/c")
		e.expect(resp, Revalidated, 200, i)
		if body != "body" {
			t.Errorf("body %q", body)
		}
	}
}

func TestClientConditionalsAnsweredFromStorage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, respond(200, "body", "Cache-Control: max-age=100", `ETag: W/"x"`,
		"Last-Modified: Mon, 07 Dec 2026 08:00:00 GMT"))
	e.get("/c")
	cases := []struct {
		header []string
		code   int
	}{
		{[]string{`If-None-Match: "y", "x"`}, 304}, // weak comparison
		{[]string{`If-None-Match: *`}, 304},
		{[]string{`If-None-Match: "y"`}, 200},
		{[]string{"If-Modified-Since: Mon, 07 Dec 2026 09:00:00 GMT"}, 304},
		{[]string{"If-Modified-Since: Mon, 07 Dec 2026 07:00:00 GMT"}, 200},
		{[]string{`If-None-Match: "y"`, "If-Modified-Since: Mon, 07 Dec 2026 09:00:00 GMT"}, 200}, // If-None-Match wins
	}
	for _, tc := range cases {
		resp, body := e.get("/c", tc.header...)
		if resp.StatusCode != tc.code || resp.Header.Get(HeaderXCache) != string(Hit) {
			t.Errorf("%v: %d %s, want %d HIT", tc.header, resp.StatusCode, resp.Header.Get(HeaderXCache), tc.code)
		}
		if tc.code == 304 && (body != "" || resp.Header.Get("ETag") != `W/"x"`) {
			t.Errorf("%v: 304 with body %q, ETag %q", tc.header, body, resp.Header.Get("ETag"))
		}
	}
	if n := e.origin.count("/c"); n != 1 {
		t.Errorf("origin saw %d requests", n)
	}
}

func TestRangeFromStorage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, respond(200, "0123456789", "Cache-Control: max-age=100", `ETag: "r"`))
	e.get("/r")
	cases := []struct {
		header []string
		code   int
		body   string
		cr     string
	}{
		{[]string{"Range: bytes=2-4"}, 206, "234", "bytes 2-4/10"},
		{[]string{"Range: bytes=7-"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range: bytes=-3"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range: bytes=5-100"}, 206, "56789", "bytes 5-9/10"},
		{[]string{"Range: bytes=0-1,4-5"}, 200, "0123456789", ""},
		{[]string{"Range: bytes=20-"}, 200, "0123456789", ""},
		{[]string{"Range: bytes=2-4", `If-Range: "r"`}, 206, "234", "bytes 2-4/10"},
		{[]string{"Range: bytes=2-4", `If-Range: "other"`}, 200, "0123456789", ""},
	}
	for _, tc := range cases {
		resp, body := e.get("/r", tc.header...)
		if resp.StatusCode != tc.code || body != tc.body || resp.Header.Get("Content-Range") != tc.cr {
			t.Errorf("%v: %d %q %q, want %d %q %q", tc.header, resp.StatusCode, body, resp.Header.Get("Content-Range"), tc.code, tc.body, tc.cr)
		}
	}
	if n := e.origin.count("/r"); n != 1 {
		t.Errorf("origin saw %d requests", n)
	}
	// A range request that misses goes to the origin as it is; the
	// partial answer is not stored.
	e2 := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
	})
	for i := 1; i <= 2; i++ {
		resp, body := e2.get("/p", "Range: bytes=0-1")
		e2.expect(resp, Miss, 206, i)
		if body != "01" {
			t.Errorf("partial body %q", body)
		}
	}
}

func TestHeadAnsweredFromStoredGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, respond(200, "body", "Cache-Control: max-age=100"))
	resp, _ := e.do(http.MethodHead, "/h")
	e.expect(resp, Miss, 200, 1) // a HEAD that misses stores nothing
	e.get("/h")
	resp, body := e.do(http.MethodHead, "/h")
	e.expect(resp, Hit, 200, 2)
	if body != "" || resp.Header.Get("Content-Length") != "4" {
		t.Errorf("HEAD hit: body %q, Content-Length %q", body, resp.Header.Get("Content-Length"))
	}
}

func TestInvalidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		method   string
		code     int
		location string // on the unsafe response
		path     string // the path checked afterwards
		want     Status
	}{
		{method: "POST", code: 200, path: "/i", want: Miss},
		{method: "PUT", code: 201, path: "/i", want: Miss},
		{method: "DELETE", code: 204, path: "/i", want: Miss},
		{method: "M-SEARCH", code: 200, path: "/i", want: Miss},
		{method: "POST", code: 500, path: "/i", want: Hit}, // failed: nothing invalidated
		{method: "POST", code: 303, location: "/other", path: "/other", want: Miss},
		{method: "POST", code: 303, location: "http://elsewhere.test/other", path: "/other", want: Hit},
		{method: "OPTIONS", code: 200, path: "/i", want: Hit}, // safe
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %d %s", tc.method, tc.code, tc.location), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet {
					w.Header().Set("Cache-Control", "max-age=100")
					io.WriteString(w, "body")
					return
				}
				if tc.location != "" {
					w.Header().Set("Location", tc.location)
				}
				w.WriteHeader(tc.code)
			})
			e.get("/i")
			e.get("/other")
			resp, _ := e.do(tc.method, "/i")
			if resp.Header.Get(HeaderXCache) != string(Miss) {
				t.Errorf("%s: X-Cache %q", tc.method, resp.Header.Get(HeaderXCache))
			}
			resp, _ = e.get(tc.path)
			if got := resp.Header.Get(HeaderXCache); got != string(tc.want) {
				t.Errorf("GET %s after %s %d: X-Cache %s, want %s", tc.path, tc.method, tc.code, got, tc.want)
			}
		})
	}
}

func TestOversizeStreamsThrough(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 4096)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{MaxObjectBytes: 1024}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=100")
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				for i := 0; i < len(big); i += 512 {
					io.WriteString(w, big[i:i+512])
					w.(http.Flusher).Flush()
				}
			})
			for i := 1; i <= 2; i++ {
				resp, body := e.get("/big")
				e.expect(resp, Miss, 200, i)
				if body != big {
					t.Fatalf("body of %d bytes, want %d", len(body), len(big))
				}
			}
			if n := e.obs.objects.Load(); n != 0 {
				t.Errorf("%d objects stored", n)
			}
			// One that fits is stored.
			e.origin.serve = respond(200, "small", "Cache-Control: max-age=100")
			e.get("/small")
			resp, _ := e.get("/small")
			e.expect(resp, Hit, 200, 1)
		})
	}
}

func TestStaleServedWhenOriginUnreachable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cc   string
		want bool
	}{
		{"max-age=10", true},
		{"max-age=10, must-revalidate", false},
		{"max-age=10, proxy-revalidate", false},
		{"s-maxage=10", false},
	} {
		t.Run(tc.cc, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Options{}, respond(200, "body", "Cache-Control: "+tc.cc))
			e.get("/s")
			e.origin.srv.CloseClientConnections()
			e.origin.srv.Close()
			e.clock.Advance(20 * time.Second)
			req, _ := http.NewRequest(http.MethodGet, e.origin.srv.URL+"/s", nil)
			resp, err := e.client.Do(req)
			if !tc.want {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("a response forbidden to be served stale was: %s", resp.Header.Get(HeaderXCache))
				}
				return
			}
			if err != nil {
				t.Fatalf("origin down: %v", err)
			}
			defer resp.Body.Close()
			if resp.Header.Get(HeaderXCache) != string(Hit) {
				t.Errorf("X-Cache %q", resp.Header.Get(HeaderXCache))
			}
		})
	}
}

func TestStaleIfError(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		io.WriteString(w, "good")
	})
	e.get("/e")
	fail.Store(true)
	e.clock.Advance(30 * time.Second)
	resp, body := e.get("/e")
	e.expect(resp, Hit, 200, 2)
	if body != "good" {
		t.Errorf("body %q", body)
	}
	e.clock.Advance(60 * time.Second) // past the window
	resp, _ = e.get("/e")
	e.expect(resp, Miss, 503, 3)
}

func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	var version atomic.Int32
	refreshed := make(chan struct{}, 1)
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", version.Load())
		if version.Load() > 0 {
			refreshed <- struct{}{}
		}
	})
	e.get("/w")
	version.Store(1)
	e.clock.Advance(20 * time.Second)
	// The stale response answers at once; the refresh runs meanwhile (it
	// may reach the origin before this request's body is read).
	resp, body := e.get("/w")
	if body != "v0" || resp.Header.Get(HeaderXCache) != string(Hit) {
		t.Errorf("stale answer: %s %q", resp.Header.Get(HeaderXCache), body)
	}
	<-refreshed // the background revalidation reached the origin
	e.cache.Close()
	resp, body = e.get("/w")
	e.expect(resp, Hit, 200, 2)
	if body != "v1" {
		t.Errorf("after the background refresh: %q", body)
	}
}

func TestEvictionByBytes(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("b", 10<<10)
	// Room for 4 objects of 10 KiB each (with header fields and overhead), not 5.
	e := newEnv(t, Options{MaxBytes: 50 << 10}, respond(200, body, "Cache-Control: max-age=100"))
	for i := 0; i < 4; i++ {
		e.get(fmt.Sprintf("/%d", i))
	}
	e.get("/0") // recently used: survives the next insertion
	e.get("/4") // evicts /1, the least recently used
	if got := e.obs.evicted.Load(); got != 1 {
		t.Errorf("%d evictions, want 1", got)
	}
	for path, want := range map[string]Status{"/0": Hit, "/1": Miss, "/4": Hit} {
		resp, _ := e.get(path)
		if got := resp.Header.Get(HeaderXCache); got != string(want) {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	if b, _ := e.cache.Usage(); b > 50<<10 {
		t.Errorf("store holds %d bytes, more than its bound", b)
	}
}

// TestFresh: Fresh answers exactly the requests RoundTrip would answer
// from storage as they are, and no others.
func TestFresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}, respond(200, "body", "Cache-Control: max-age=100", "Vary: Accept", "X-Stored: yes", "Age: 3"))
	e.get("/f", "Accept: text/plain")
	u, _ := url.Parse(e.origin.srv.URL + "/f")
	cases := []struct {
		name   string
		method string
		header []string
		after  time.Duration
		want   bool
	}{
		{name: "GET", method: "GET", header: []string{"Accept: text/plain"}, want: true},
		{name: "HEAD", method: "HEAD", header: []string{"Accept: text/plain"}, want: true},
		{name: "other variant", method: "GET", header: []string{"Accept: text/html"}},
		{name: "conditional", method: "GET", header: []string{"Accept: text/plain", `If-None-Match: "x"`}},
		{name: "range", method: "GET", header: []string{"Accept: text/plain", "Range: bytes=0-1"}},
		{name: "no-cache", method: "GET", header: []string{"Accept: text/plain", "Cache-Control: no-cache"}},
		{name: "Authorization", method: "GET", header: []string{"Accept: text/plain", "Authorization: Basic YTpi"}},
		{name: "POST", method: "POST", header: []string{"Accept: text/plain"}},
		{name: "stale", method: "GET", header: []string{"Accept: text/plain"}, after: 200 * time.Second},
	}
	for _, tc := range cases {
		h := http.Header{}
		for _, l := range tc.header {
			k, v, _ := strings.Cut(l, ":")
			h.Add(k, strings.TrimSpace(v))
		}
		e.clock.Advance(tc.after)
		st, ok := e.cache.Fresh(tc.method, u, h)
		if ok != tc.want {
			t.Errorf("%s: ok %v, want %v", tc.name, ok, tc.want)
			continue
		}
		if ok && (st.Status() != 200 || string(st.Body()) != "body" || st.Header().Get("X-Stored") != "yes" || st.Age() != 3) {
			t.Errorf("%s: %d %q %v age %d", tc.name, st.Status(), st.Body(), st.Header(), st.Age())
		}
	}
}

// TestRevalidationThatSetsACookie: a 304 that sets a cookie (or turns the
// response private) refreshes the response for the client that asked, and
// takes it out of storage: nobody else gets that cookie.
func TestRevalidationThatSetsACookie(t *testing.T) {
	t.Parallel()
	for _, field := range []string{"Set-Cookie: session=alice", "Cache-Control: max-age=10, private"} {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			k, v, _ := strings.Cut(field, ":")
			e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=10")
				w.Header().Set("ETag", `"c"`)
				if r.Header.Get("If-None-Match") == `"c"` {
					w.Header().Set(k, strings.TrimSpace(v))
					w.WriteHeader(http.StatusNotModified)
					return
				}
				io.WriteString(w, "body")
			})
			e.get("/c")
			e.clock.Advance(20 * time.Second)
			resp, body := e.get("/c")
			e.expect(resp, Revalidated, 200, 2)
			if body != "body" || resp.Header.Get(k) == "" {
				t.Errorf("the revalidating client: %q, %s %q", body, k, resp.Header.Get(k))
			}
			// The next client is not answered from storage.
			resp, _ = e.get("/c")
			e.expect(resp, Miss, 200, 3)
			if resp.Header.Get("Set-Cookie") != "" {
				t.Errorf("the cookie reached another client")
			}
		})
	}
}
