package httpcache

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// HeaderXCache is the response field that says how the cache answered.
const HeaderXCache = "X-Cache"

// Status is how the cache answered a request; it is the X-Cache value.
type Status string

// The X-Cache values (the contract; egressd's access line carries them in
// lower case).
const (
	Hit         Status = "HIT"         // served from storage, the origin not asked
	Miss        Status = "MISS"        // the origin answered (stored or not)
	Revalidated Status = "REVALIDATED" // served from storage after the origin confirmed it (304)
)

// Defaults used when an [Options] field is zero.
const (
	DefaultMaxObjectBytes  = 8 << 20
	DefaultCollapseTimeout = 10 * time.Second
)

// revalidateTimeout bounds a background revalidation (stale-while-revalidate),
// which has no client waiting that could give up.
const revalidateTimeout = 30 * time.Second

// Observer receives what the cache does besides answering requests, for
// metrics (how each request was answered is its X-Cache). Its methods must
// be cheap and safe for concurrent use.
type Observer interface {
	Collapsed()                      // a request was answered from another request's fetch
	Stored(bytes int64, objects int) // what the store holds now
	Evicted(objects int)             // objects dropped to make room
}

// Options configure a [Cache].
type Options struct {
	// MaxBytes bounds what the store holds: bodies, header fields, a
	// per-object overhead and what callers keep with stored responses
	// ([Stored.Memo]). Required, positive.
	MaxBytes int64
	// MaxObjectBytes bounds one stored body; a larger response streams
	// through without being buffered. Zero: DefaultMaxObjectBytes; at
	// most MaxBytes.
	MaxObjectBytes int64
	// CollapseTimeout bounds how long a request waits for a concurrent
	// fetch of the same URL before it asks the origin itself. Zero:
	// DefaultCollapseTimeout.
	CollapseTimeout time.Duration
	// Observer receives events for metrics. Nil: none.
	Observer Observer
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Cache is a shared HTTP cache (RFC 9111) in front of an http.RoundTripper.
// It is safe for concurrent use. Call Close when done with it: it waits for
// background revalidations.
type Cache struct {
	o     Options
	store *store

	mu      sync.Mutex
	flights map[string]*flight // fetches in progress, by URL

	wg sync.WaitGroup // background revalidations

	onJoin func() // tests: called when a request starts waiting for a flight
}

// flight is a fetch of one URL that concurrent requests may wait for.
type flight struct {
	ready chan struct{} // closed once the leader knows what it got
	// Set before ready closes. fill is nil when nothing can be shared:
	// waiters then look in the store again, then ask the origin.
	fill *fill
	obj  *object // the fill's response, body still streaming
	// stale is set when an unsafe request invalidated the URL meanwhile:
	// the fill must not be stored.
	stale bool
}

// New returns a cache. o.MaxBytes must be positive.
func New(o Options) *Cache {
	if o.MaxObjectBytes <= 0 {
		o.MaxObjectBytes = DefaultMaxObjectBytes
	}
	o.MaxObjectBytes = min(o.MaxObjectBytes, o.MaxBytes)
	if o.CollapseTimeout <= 0 {
		o.CollapseTimeout = DefaultCollapseTimeout
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache{o: o, flights: make(map[string]*flight)}
	c.store = newStore(o.MaxBytes, o.Observer)
	return c
}

// Close waits for background revalidations to end.
func (c *Cache) Close() { c.wg.Wait() }

// Usage returns the bytes and objects the store holds.
func (c *Cache) Usage() (bytes int64, objects int) { return c.store.usage() }

// Transport is an http.RoundTripper that answers from Cache what it can and
// sends the rest through Next.
type Transport struct {
	Cache *Cache
	Next  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.Cache.RoundTrip(req, t.Next)
}

// Detacher is implemented by a next RoundTripper whose requests carry a
// client's exchange in their context (its log record, its connection).
// Detach returns the context for a request the cache sends on its own after
// that exchange may have ended (a stale-while-revalidate refresh): what the
// RoundTripper needs to send it (the policy's decision), nothing tied to the
// client. A next that is not a Detacher gets context.WithoutCancel of the
// client's context.
type Detacher interface {
	Detach(ctx context.Context) context.Context
}

// RoundTrip answers req from storage when it may, and otherwise through
// next, storing what it may. Every response it returns carries X-Cache.
// Only GET and HEAD are answered from storage; unsafe methods invalidate
// what is stored for their URL.
func (c *Cache) RoundTrip(req *http.Request, next http.RoundTripper) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return c.passUnsafe(req, next)
	}
	key, ok := cacheKey(req.URL)
	if !ok || bypass(req.Header) {
		return c.pass(req, next)
	}
	rq := newRequestInfo(req, key)
	now := c.o.Now()
	var stale *object
	if o := c.selectVariant(key, req.Header); o != nil {
		switch c.reuse(o, rq, now) {
		case reuseFresh:
			return c.serve(rq, o, now, Hit, nil), nil
		case reuseStaleRevalidate:
			c.revalidateInBackground(req, rq, o, next)
			return c.serve(rq, o, now, Hit, nil), nil
		case reuseValidate:
			stale = o
		}
	}
	if rq.cc.onlyIfCached {
		return c.gatewayTimeout(req), nil
	}
	if rq.rangeSpec != "" && stale == nil || rq.conditional && stale == nil || req.Method == http.MethodHead && stale == nil {
		// Nothing stored to answer from: the origin answers this one
		// request as it asked (a range, a conditional, a HEAD), and a
		// full 200 is stored when it may be.
		return c.fetch(req, rq, nil, nil, next)
	}
	if !rq.collapsible() {
		return c.fetch(req, rq, stale, nil, next)
	}
	c.mu.Lock()
	if fl := c.flights[key]; fl != nil {
		c.mu.Unlock()
		if resp := c.join(req, rq, fl); resp != nil {
			return resp, nil
		}
		// Nothing to share, or the wait timed out: ask the origin
		// without collapsing again.
		return c.fetch(req, rq, c.staleCandidate(key, rq), nil, next)
	}
	fl := &flight{ready: make(chan struct{})}
	c.flights[key] = fl
	c.mu.Unlock()
	return c.fetch(req, rq, stale, fl, next)
}

// Stored is a stored response that answers a request as it is (see
// [Cache.Fresh]).
type Stored struct {
	o   *object
	s   *store
	now time.Time
}

// Fresh returns the stored response that answers a GET or HEAD of u with
// header as it is: fresh for this request, selected by its Vary, with
// nothing to ask the origin and no conditional or range to evaluate. It
// lets a caller answer a hit without building a response through
// RoundTrip; when ok is false, RoundTrip answers the request (it may still
// be answered from storage there).
func (c *Cache) Fresh(method string, u *url.URL, header http.Header) (Stored, bool) {
	if method != http.MethodGet && method != http.MethodHead {
		return Stored{}, false
	}
	key, ok := cacheKey(u)
	if !ok || bypass(header) {
		return Stored{}, false
	}
	rq := requestInfo{req: &http.Request{Method: method, Header: header}, key: key}
	rq.read()
	if rq.rangeSpec != "" || rq.conditional {
		return Stored{}, false
	}
	now := c.o.Now()
	o := c.selectVariant(key, header)
	if o == nil || c.reuse(o, &rq, now) != reuseFresh {
		return Stored{}, false
	}
	return Stored{o: o, s: c.store, now: now}, true
}

// Status is the stored response's status code.
func (h Stored) Status() int { return h.o.status }

// Header is the stored response's header fields; the caller sets Age,
// X-Cache and Content-Length, replacing any stored Age. It is shared:
// never modify it.
func (h Stored) Header() http.Header { return h.o.header }

// Age is the response's current age in seconds, for its Age field.
func (h Stored) Age() int64 { return int64(max(0, h.o.age(h.now)) / time.Second) }

// Body is the stored body. It is shared: never modify it.
func (h Stored) Body() []byte { return h.o.body }

// ContentLength is the Content-Length field value of the stored body. It
// is shared: never modify it.
func (h Stored) ContentLength() []string { return h.o.contentLength }

// Memo returns what build makes of this stored response, kept with it:
// build runs about once per stored response (callers racing on a new one
// may each run it; one result is kept), and a response refreshed by a
// revalidation is a new stored response with a memo of its own. build
// must depend on the stored response only, and returns the value with the
// heap bytes it holds: while the response stays stored, they count in
// max_bytes with it (and may evict others). The forward package keeps a
// hit's serialized header fields this way.
func (h Stored) Memo(build func(Stored) (v any, size int64)) any {
	slot := h.o.memo
	if slot == nil {
		v, _ := build(h)
		return v
	}
	old := slot.v.Load()
	if old != nil && old.owner == h.o {
		return old.v
	}
	v, size := build(h)
	if old != nil {
		return v // another object's memo: not ours to replace
	}
	if !slot.v.CompareAndSwap(nil, &memoValue{owner: h.o, v: v}) {
		if won := slot.v.Load(); won.owner == h.o {
			return won.v
		}
		return v
	}
	// Only the caller that kept its value charges it, once.
	h.s.charge(h.o, size+memoValueSize)
	return v
}

// memoSlot holds a stored response's Memo; memoValue.owner guards against
// a copy of the object (refresh, complete) reading its original's memo.
// charged is what the kept value adds to the object's size in the store,
// guarded by the store's lock; it lives here, not in the object, because
// objects are copied (refresh) while stored.
type memoSlot struct {
	v       atomic.Pointer[memoValue]
	charged int64
}

type memoValue struct {
	owner *object
	v     any
}

// memoValueSize is the heap a kept memoValue holds besides its value.
const memoValueSize = int64(unsafe.Sizeof(memoValue{}))

// Holds reports whether anything (any variant, fresh or not) is stored for
// u, without marking it used: a cheap test to make before the work a call
// of Fresh needs first (credentials, the policy).
func (c *Cache) Holds(u *url.URL) bool {
	key, ok := cacheKey(u)
	return ok && c.store.holds(key)
}

// HitValue is X-Cache: HIT as a field value, shared: never modify it.
var HitValue = []string{string(Hit)}

// requestInfo is what the cache reads from a request, once.
type requestInfo struct {
	req         *http.Request
	key         string
	cc          directives
	noCache     bool // Cache-Control: no-cache, or Pragma: no-cache alone
	authorized  bool // Authorization present
	conditional bool // If-None-Match or If-Modified-Since
	rangeSpec   string
}

func newRequestInfo(req *http.Request, key string) *requestInfo {
	rq := &requestInfo{req: req, key: key}
	rq.read()
	return rq
}

// read fills what rq says about its request.
func (rq *requestInfo) read() {
	req := rq.req
	rq.cc = parseCacheControl(req.Header)
	rq.noCache = rq.cc.noCache || rq.cc.noCacheQualified
	if len(req.Header.Values("Cache-Control")) == 0 {
		// RFC 9111 section 5.4: Pragma: no-cache counts only without
		// Cache-Control.
		for _, v := range req.Header.Values("Pragma") {
			parseDirectives(v, func(name, _ string, _, _ bool) {
				if name == "no-cache" {
					rq.noCache = true
				}
			})
		}
	}
	rq.authorized = len(req.Header.Values("Authorization")) > 0
	rq.conditional = len(req.Header.Values("If-None-Match")) > 0 || len(req.Header.Values("If-Modified-Since")) > 0
	if req.Method == http.MethodGet {
		rq.rangeSpec = req.Header.Get("Range")
	}
}

// collapsible reports whether the request may wait for another request's
// fetch of its URL and be answered from it: a plain GET that would take a
// stored response.
func (rq *requestInfo) collapsible() bool {
	return rq.req.Method == http.MethodGet && !rq.authorized && !rq.noCache && !rq.cc.noStore &&
		rq.cc.maxAge != 0 && rq.rangeSpec == "" && !rq.conditional
}

// bypass reports requests the cache neither answers nor stores for: the
// preconditions it does not evaluate.
func bypass(h http.Header) bool {
	return len(h.Values("If-Match")) > 0 || len(h.Values("If-Unmodified-Since")) > 0 ||
		len(h.Values("If-Range")) > 0 && len(h.Values("Range")) == 0
}

// cacheKey is the primary cache key of u: scheme, lowercased host without
// the scheme's default port, and the request target.
func cacheKey(u *url.URL) (string, bool) {
	if u == nil || u.Host == "" || u.Opaque != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	switch {
	case scheme == "http":
		host = strings.TrimSuffix(host, ":80")
	case scheme == "https":
		host = strings.TrimSuffix(host, ":443")
	default:
		return "", false
	}
	return scheme + "://" + host + u.RequestURI(), true
}

// pass sends a request the cache does not answer, marking the response a miss.
func (c *Cache) pass(req *http.Request, next http.RoundTripper) (*http.Response, error) {
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	c.mark(resp, Miss)
	return resp, nil
}

// passUnsafe sends a request with a method the cache does not answer; a
// non-error answer to an unsafe method invalidates the URL, and its
// Location and Content-Location when they are on the same origin
// (RFC 9111 section 4.4).
func (c *Cache) passUnsafe(req *http.Request, next http.RoundTripper) (*http.Response, error) {
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if !safeMethod(req.Method) && resp.StatusCode < 400 {
		if key, ok := cacheKey(req.URL); ok {
			c.invalidate(key)
			for _, f := range []string{"Location", "Content-Location"} {
				if v := resp.Header.Get(f); v != "" {
					if u, err := req.URL.Parse(v); err == nil && sameOrigin(u, req.URL) {
						if k, ok := cacheKey(u); ok {
							c.invalidate(k)
						}
					}
				}
			}
		}
	}
	c.mark(resp, Miss)
	return resp, nil
}

func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

func sameOrigin(a, b *url.URL) bool {
	ka, _ := cacheKey(&url.URL{Scheme: a.Scheme, Host: a.Host})
	kb, _ := cacheKey(&url.URL{Scheme: b.Scheme, Host: b.Host})
	return ka != "" && ka == kb
}

// invalidate drops what is stored for key and keeps a fetch in progress
// from storing its response.
func (c *Cache) invalidate(key string) {
	c.mu.Lock()
	if fl := c.flights[key]; fl != nil {
		fl.stale = true
		delete(c.flights, key)
	}
	c.mu.Unlock()
	c.store.invalidate(key)
}

// selectVariant returns the most recently stored response for key whose
// Vary matches the request, or nil.
func (c *Cache) selectVariant(key string, h http.Header) *object {
	return c.store.lookup(key, func(o *object) bool {
		return len(o.vary) == 0 || varyKey(h, o.vary) == o.varyKey
	})
}

// staleCandidate is a stored response the request could revalidate.
func (c *Cache) staleCandidate(key string, rq *requestInfo) *object {
	o := c.selectVariant(key, rq.req.Header)
	if o == nil || rq.authorized && !sharedWithAuthorization(o.cc) {
		return nil
	}
	return o
}

type reuse int

const (
	reuseNo              reuse = iota // do not use it; fetch anew
	reuseFresh                        // serve it as it is
	reuseStaleRevalidate              // serve it, and revalidate in the background
	reuseValidate                     // revalidate it first
)

// reuse decides whether a stored response may answer the request at now
// (RFC 9111 section 4 and the request directives of section 5.2.1).
func (c *Cache) reuse(o *object, rq *requestInfo, now time.Time) reuse {
	if rq.authorized && !sharedWithAuthorization(o.cc) {
		return reuseNo
	}
	if rq.rangeSpec != "" && o.status != http.StatusOK {
		return reuseNo
	}
	age := o.age(now)
	fresh := o.lifetime > age
	validate := o.cc.noCache || o.cc.noCacheQualified || rq.noCache
	// max-age=0 asks for a response that is not older than now: one
	// confirmed by the origin, whatever the rounding of ages to seconds.
	if rq.cc.maxAge == 0 || rq.cc.maxAge != unset && age > time.Duration(rq.cc.maxAge)*time.Second {
		validate = true
	}
	if rq.cc.minFresh != unset && o.lifetime-age < time.Duration(rq.cc.minFresh)*time.Second {
		validate = true
	}
	switch {
	case validate:
		return reuseValidate
	case fresh:
		return reuseFresh
	case o.revalidateWhenStale():
		return reuseValidate
	}
	staleness := age - o.lifetime
	if rq.cc.maxStaleAny || rq.cc.maxStale != unset && staleness <= time.Duration(rq.cc.maxStale)*time.Second {
		return reuseFresh
	}
	if o.cc.staleWhileRevalidate != unset && staleness <= time.Duration(o.cc.staleWhileRevalidate)*time.Second &&
		rq.req.Method == http.MethodGet {
		return reuseStaleRevalidate
	}
	return reuseValidate
}

// sharedWithAuthorization reports whether a response to a request with
// Authorization may be stored and reused by a shared cache (RFC 9111
// section 3.5).
func sharedWithAuthorization(cc directives) bool {
	return cc.public || cc.mustRevalidate || cc.sMaxAge != unset
}

// staleIfError reports whether o may answer in place of an error at now
// (RFC 5861 section 4): the response or the request allows it for long
// enough, and nothing forbids serving it stale.
func (c *Cache) staleIfError(o *object, rq *requestInfo, now time.Time) bool {
	if o == nil || o.revalidateWhenStale() || rq.noCache {
		return false
	}
	staleness := o.age(now) - o.lifetime
	window := max(o.cc.staleIfError, rq.cc.staleIfError)
	return window != unset && staleness <= time.Duration(window)*time.Second
}

// maxStaleDisconnected bounds how stale a response may be to answer when the
// origin cannot be reached at all.
const maxStaleDisconnected = 24 * time.Hour

// staleWhenDisconnected reports whether o may answer because the origin
// could not be reached (RFC 9111 section 4.2.4 allows a disconnected cache
// to serve stale responses): nothing forbids serving it stale, and it is
// stale by a day at most.
func (c *Cache) staleWhenDisconnected(o *object, rq *requestInfo, now time.Time) bool {
	if o == nil || o.revalidateWhenStale() || rq.noCache {
		return false
	}
	return o.age(now)-o.lifetime <= maxStaleDisconnected
}

// join waits for fl and answers the request from it, or returns nil.
func (c *Cache) join(req *http.Request, rq *requestInfo, fl *flight) *http.Response {
	if c.onJoin != nil {
		c.onJoin()
	}
	timer := time.NewTimer(c.o.CollapseTimeout)
	defer timer.Stop()
	select {
	case <-fl.ready:
	case <-timer.C:
		return nil
	case <-req.Context().Done():
		return nil
	}
	if fl.fill != nil && varyKey(req.Header, fl.obj.vary) == fl.obj.varyKey {
		if r := fl.fill.reader(req.Context()); r != nil {
			c.o.Observer.Collapsed()
			return c.serve(rq, fl.obj, c.o.Now(), Hit, r)
		}
	}
	// The leader revalidated, or stored what it got before this request
	// looked: take it from the store if it fits.
	if o := c.selectVariant(rq.key, req.Header); o != nil && c.reuse(o, rq, c.o.Now()) == reuseFresh {
		c.o.Observer.Collapsed()
		return c.serve(rq, o, c.o.Now(), Hit, nil)
	}
	return nil
}

// land ends fl's wait: waiters get fill (nil: nothing to share) and obj.
// The flight stays registered while the fill streams, so later requests
// join it too; it is removed when the fill ends or outgrows the limit.
func (c *Cache) land(key string, fl *flight, f *fill, obj *object) {
	if fl == nil {
		return
	}
	fl.fill, fl.obj = f, obj
	if f == nil {
		c.unregister(key, fl)
	}
	close(fl.ready)
}

func (c *Cache) unregister(key string, fl *flight) {
	c.mu.Lock()
	if c.flights[key] == fl {
		delete(c.flights, key)
	}
	c.mu.Unlock()
}

// fetch asks the origin: for stale, a conditional request with its
// validators; otherwise req as it is (without the client's validators when
// it would be collapsed: the response is for everyone). fl, when not nil,
// is the flight this request leads.
func (c *Cache) fetch(req *http.Request, rq *requestInfo, stale *object, fl *flight, next http.RoundTripper) (*http.Response, error) {
	out := req
	if stale != nil && stale.hasValidator() {
		out = req.Clone(req.Context())
		out.Header.Del("If-None-Match")
		out.Header.Del("If-Modified-Since")
		if stale.etag != "" {
			out.Header.Set("If-None-Match", stale.etag)
		}
		if lm := stale.header.Get("Last-Modified"); lm != "" && !stale.lastModified.IsZero() {
			out.Header.Set("If-Modified-Since", lm)
		}
	}
	requestTime := c.o.Now()
	resp, err := next.RoundTrip(out)
	responseTime := c.o.Now()
	if err != nil {
		c.land(rq.key, fl, nil, nil)
		if c.staleIfError(stale, rq, responseTime) || c.staleWhenDisconnected(stale, rq, responseTime) {
			return c.serve(rq, stale, responseTime, Hit, nil), nil
		}
		return nil, err
	}
	if resp.StatusCode == http.StatusNotModified && stale != nil && out != req {
		if fresh := c.refresh(stale, resp, requestTime, responseTime); fresh != nil {
			drain(resp)
			if keepable(fresh.header, fresh.cc, fresh.status) {
				c.store.put(fresh, stale)
			} else {
				// The 304 made the response one a shared cache must not
				// keep (it sets a cookie, or says private or no-store):
				// this client gets it, nobody else.
				c.store.remove(stale)
			}
			c.land(rq.key, fl, nil, nil)
			return c.serve(rq, fresh, responseTime, Revalidated, nil), nil
		}
		// A 304 for another response than the one stored: ask again
		// without validators.
		drain(resp)
		c.store.remove(stale)
		c.land(rq.key, fl, nil, nil)
		return c.fetch(req, rq, nil, nil, next)
	}
	if resp.StatusCode >= 500 && c.staleIfError(stale, rq, responseTime) {
		drain(resp)
		c.land(rq.key, fl, nil, nil)
		return c.serve(rq, stale, responseTime, Hit, nil), nil
	}
	return c.admit(req, rq, resp, fl, requestTime, responseTime), nil
}

// admit stores a response from the origin when it may, streaming its body to
// the client (and to the requests collapsed onto fl) as it arrives.
func (c *Cache) admit(req *http.Request, rq *requestInfo, resp *http.Response, fl *flight, requestTime, responseTime time.Time) *http.Response {
	cc := parseCacheControl(resp.Header)
	o := c.newObject(rq, resp, cc, requestTime, responseTime)
	if o == nil {
		c.land(rq.key, fl, nil, nil)
		c.mark(resp, Miss)
		return resp
	}
	f := newFill(resp.Body, o.length, c.o.MaxObjectBytes,
		func(body []byte) { c.complete(rq.key, fl, o, body) },
		func() {
			if fl != nil {
				c.unregister(rq.key, fl)
			}
		})
	leader := f.reader(req.Context())
	c.land(rq.key, fl, f, o)
	resp.Body = leader
	c.mark(resp, Miss)
	return resp
}

// complete ends a fill: it stores a body that arrived whole (body not nil)
// and lets later requests for the URL start a fetch of their own.
func (c *Cache) complete(key string, fl *flight, o *object, body []byte) {
	if fl != nil {
		defer c.unregister(key, fl)
	}
	c.mu.Lock()
	stale := fl != nil && fl.stale
	c.mu.Unlock()
	if stale || body == nil {
		return
	}
	if cap(body)-len(body) > 4<<10 && cap(body)-len(body) > len(body)/8 {
		body = append([]byte(nil), body...) // do not keep a grown buffer's slack
	}
	stored := *o
	stored.memo = new(memoSlot)
	stored.body = body
	stored.length = int64(len(body))
	stored.contentLength = []string{strconv.Itoa(len(body))}
	stored.size = objectSize(&stored)
	if stored.size > c.o.MaxBytes {
		return
	}
	c.store.put(&stored, nil)
}

// objectSize is what o holds on the heap besides a memo (see
// [Stored.Memo]): the fixed overhead, its keys, its body, its header map
// (headerSize) and the request field names its Vary lists (a long Vary of
// short names costs a string header each).
func objectSize(o *object) int64 {
	n := objectOverhead + int64(len(o.key)+len(o.varyKey)) + int64(cap(o.body)) + headerSize(o.header)
	n += int64(cap(o.vary)) * int64(unsafe.Sizeof(""))
	for _, v := range o.vary {
		n += int64(len(v))
	}
	return n
}

// newObject builds the object for a response the cache may store
// (RFC 9111 section 3), body not yet read; nil when it may not.
func (c *Cache) newObject(rq *requestInfo, resp *http.Response, cc directives, requestTime, responseTime time.Time) *object {
	req := rq.req
	if req.Method != http.MethodGet || rq.cc.noStore || rq.rangeSpec != "" {
		return nil
	}
	code := resp.StatusCode
	if code < 200 || code == http.StatusPartialContent || code == http.StatusNotModified {
		return nil
	}
	if cc.mustUnderstand && !understoodStatus(code) {
		return nil
	}
	if !keepable(resp.Header, cc, code) {
		return nil
	}
	if rq.authorized && !sharedWithAuthorization(cc) {
		return nil
	}
	names, star := varyNames(resp.Header)
	if star {
		return nil
	}
	if !explicitFreshness(resp.Header, cc) && !cc.public && !heuristicStatus(code) {
		return nil
	}
	length := resp.ContentLength
	if length > c.o.MaxObjectBytes {
		return nil
	}
	header := storedHeader(resp.Header, cc)
	header.Del("Content-Length")
	o := &object{
		key:          rq.key,
		vary:         names,
		varyKey:      varyKey(req.Header, names),
		status:       code,
		header:       header,
		length:       length,
		requestTime:  requestTime,
		responseTime: responseTime,
	}
	o.setMeta()
	if o.lifetime <= 0 && !o.hasValidator() && o.cc.staleIfError == unset {
		return nil // it could never be used
	}
	return o
}

// keepable reports whether a response with these fields may be kept by a
// shared cache at all: not no-store (unless must-understand with a status
// the cache knows), not private, not forbidden by CDN-Cache-Control, and
// without Set-Cookie: egressd's contract is that a response that sets a
// cookie is one client's, whatever its Cache-Control says.
func keepable(h http.Header, cc directives, code int) bool {
	if cc.noStore && !(cc.mustUnderstand && understoodStatus(code)) {
		return false
	}
	if cc.private {
		return false
	}
	if t := targetedDirectives(h); t.noStore || t.private {
		return false
	}
	return len(h.Values("Set-Cookie")) == 0 && len(h.Values("Set-Cookie2")) == 0
}

// setMeta derives the directives, date, age, lifetime and validators from
// o.header.
func (o *object) setMeta() {
	o.cc = parseCacheControl(o.header)
	o.date = responseDate(o.header, o.responseTime)
	o.ageValue, _ = parseAge(o.header)
	t := targetedDirectives(o.header)
	o.lifetime = freshnessLifetime(o.status, o.header, o.cc, o.date, t.maxAge)
	if t.maxAge != unset {
		o.lifetime = min(o.lifetime, time.Duration(t.maxAge)*time.Second)
	}
	o.cc.noCache = o.cc.noCache || t.noCache
	o.etag = ""
	if v := o.header.Values("Etag"); len(v) == 1 {
		o.etag = strings.TrimSpace(v[0])
	}
	o.lastModified, _ = lastModified(o.header)
}

// refresh returns stale updated by a 304 (RFC 9111 section 4.3.4), or nil
// when the 304 is about another response (a different strong validator).
func (c *Cache) refresh(stale *object, resp *http.Response, requestTime, responseTime time.Time) *object {
	if et := strings.TrimSpace(resp.Header.Get("Etag")); et != "" && stale.etag != "" && !strings.HasPrefix(et, "W/") &&
		et != stale.etag {
		return nil
	}
	h := stale.header.Clone()
	update := storedHeader(resp.Header, parseCacheControl(resp.Header))
	update.Del("Content-Length")
	for k, v := range update {
		h[k] = v
	}
	fresh := *stale
	fresh.memo = new(memoSlot)
	fresh.header = h
	fresh.requestTime = requestTime
	fresh.responseTime = responseTime
	fresh.setMeta()
	fresh.size = objectSize(&fresh)
	return &fresh
}

// revalidateInBackground refreshes o while a stale copy answers the client
// (stale-while-revalidate), unless a fetch of the URL is already running.
func (c *Cache) revalidateInBackground(req *http.Request, rq *requestInfo, o *object, next http.RoundTripper) {
	c.mu.Lock()
	if c.flights[rq.key] != nil {
		c.mu.Unlock()
		return
	}
	fl := &flight{ready: make(chan struct{})}
	c.flights[rq.key] = fl
	c.mu.Unlock()
	var ctx context.Context
	if d, ok := next.(Detacher); ok {
		ctx = d.Detach(req.Context())
	} else {
		ctx = context.WithoutCancel(req.Context())
	}
	ctx, cancel := context.WithTimeout(ctx, revalidateTimeout)
	bg := req.Clone(ctx)
	bg.Header.Del("If-None-Match")
	bg.Header.Del("If-Modified-Since")
	brq := newRequestInfo(bg, rq.key)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		resp, err := c.fetch(bg, brq, o, fl, next)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}

// serve answers rq from o at now: a 304 when the request's own conditions
// say the client has it, a 206 for a range of a complete body, else o
// itself; body, when not nil, streams o's body from a fill.
func (c *Cache) serve(rq *requestInfo, o *object, now time.Time, st Status, body *fillReader) *http.Response {
	req := rq.req
	h := o.header.Clone()
	age := int64(max(0, o.age(now)) / time.Second)
	h["Age"] = []string{strconv.FormatInt(age, 10)}
	h[HeaderXCache] = []string{string(st)}
	resp := &http.Response{
		Status:     strconv.Itoa(o.status) + " " + http.StatusText(o.status),
		StatusCode: o.status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Request:    req,
	}
	if notModified(req.Header, o) {
		if body != nil {
			body.Close()
		}
		for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Range"} {
			h.Del(k)
		}
		resp.StatusCode, resp.Status = http.StatusNotModified, "304 Not Modified"
		resp.Body = http.NoBody
		return resp
	}
	if body != nil {
		// Streaming from a fill: the length is the origin's, if it sent one.
		resp.ContentLength = o.length
		if o.length >= 0 {
			h["Content-Length"] = []string{strconv.FormatInt(o.length, 10)}
		}
		if req.Method == http.MethodHead {
			body.Close()
			resp.Body = http.NoBody
		} else {
			resp.Body = body
		}
		return resp
	}
	data := o.body
	if req.Method == http.MethodGet && rq.rangeSpec != "" && o.status == http.StatusOK {
		if first, last, ok := singleRange(rq.rangeSpec, int64(len(data)), req.Header, o); ok {
			h["Content-Range"] = []string{"bytes " + strconv.FormatInt(first, 10) + "-" +
				strconv.FormatInt(last, 10) + "/" + strconv.Itoa(len(data))}
			resp.StatusCode, resp.Status = http.StatusPartialContent, "206 Partial Content"
			data = data[first : last+1]
		}
	}
	resp.ContentLength = int64(len(data))
	h["Content-Length"] = []string{strconv.Itoa(len(data))}
	if req.Method == http.MethodHead {
		resp.Body = http.NoBody
		return resp
	}
	resp.Body = &bodyReader{data: data}
	return resp
}

// gatewayTimeout answers only-if-cached when nothing stored fits
// (RFC 9111 section 5.2.1.7).
func (c *Cache) gatewayTimeout(req *http.Request) *http.Response {
	return &http.Response{
		Status:     "504 Gateway Timeout",
		StatusCode: http.StatusGatewayTimeout,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Content-Length": {"0"},
			HeaderXCache:     {string(Miss)},
		},
		Body:    http.NoBody,
		Request: req,
	}
}

// mark sets X-Cache on a response from the origin.
func (c *Cache) mark(resp *http.Response, st Status) {
	if resp.Header == nil {
		resp.Header = make(http.Header)
	}
	resp.Header[HeaderXCache] = []string{string(st)}
}

// drain reads a little of a body the cache does not use, so its
// connection can be reused, and closes it.
func drain(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// bodyReader serves a stored body. It is its own type (not bytes.Reader
// with a no-op Close) so that a read after Close fails as it would on a
// network body.
type bodyReader struct {
	data   []byte
	off    int
	closed bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errClosed
	}
	if b.off >= len(b.data) {
		return 0, io.EOF
	}
	n := copy(p, b.data[b.off:])
	b.off += n
	return n, nil
}

func (b *bodyReader) Close() error {
	b.closed = true
	return nil
}

// WriteTo lets io.Copy hand the stored bytes to the writer in one call.
func (b *bodyReader) WriteTo(w io.Writer) (int64, error) {
	if b.closed {
		return 0, errClosed
	}
	n, err := w.Write(b.data[b.off:])
	b.off += n
	return int64(n), err
}

type nopObserver struct{}

func (nopObserver) Collapsed()        {}
func (nopObserver) Stored(int64, int) {}
func (nopObserver) Evicted(int)       {}
