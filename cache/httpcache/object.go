package httpcache

import (
	"net/http"
	"strings"
	"time"
)

// object is one stored response (a variant of a URL). It is immutable once
// built: a revalidation that refreshes its header fields stores a new
// object sharing the body, so readers never lock.
type object struct {
	key     string   // primary key (the URL)
	vary    []string // request fields the response varies on
	varyKey string   // their normalized values in the request that stored it
	status  int
	header  http.Header // stored fields: hop-by-hop and excluded fields removed
	body    []byte      // complete body; nil while it streams in (see fill)
	length  int64       // body length, -1 while unknown
	// contentLength is the Content-Length value of a complete body.
	contentLength []string

	requestTime  time.Time // when the request that got it was sent
	responseTime time.Time // when its header fields arrived
	date         time.Time // its Date, or responseTime when that is missing or invalid
	ageValue     int64     // its Age, seconds
	lifetime     time.Duration
	cc           directives
	etag         string
	lastModified time.Time // zero when absent or invalid

	size int64 // bytes accounted to the store

	memo *memoSlot // Stored.Memo's; nil: nothing is kept
}

// age is the current age of o at now (RFC 9111 section 4.2.3).
func (o *object) age(now time.Time) time.Duration {
	apparent := max(0, o.responseTime.Sub(o.date))
	delay := o.responseTime.Sub(o.requestTime)
	corrected := time.Duration(o.ageValue)*time.Second + delay
	initial := max(apparent, corrected)
	return initial + now.Sub(o.responseTime)
}

// revalidateWhenStale reports whether o must not be served stale at all by
// a shared cache: must-revalidate, proxy-revalidate and s-maxage (RFC 9111
// sections 5.2.2.2, 5.2.2.8 and 5.2.2.10), and no-cache.
func (o *object) revalidateWhenStale() bool {
	return o.cc.mustRevalidate || o.cc.proxyRevalidate || o.cc.sMaxAge != unset || o.cc.noCache || o.cc.noCacheQualified
}

// hasValidator reports whether a conditional request can revalidate o.
func (o *object) hasValidator() bool { return o.etag != "" || !o.lastModified.IsZero() }

// freshnessLifetime is the freshness lifetime of a response for a shared
// cache (RFC 9111 section 4.2.1): s-maxage, then max-age, then Expires minus
// Date, then a heuristic where section 4.2.2 allows one: the max-age of
// CDN-Cache-Control (targetMaxAge; unset when absent), else 10% of the time
// since Last-Modified, at most maxHeuristic.
func freshnessLifetime(status int, h http.Header, cc directives, date time.Time, targetMaxAge int64) time.Duration {
	switch {
	case cc.sMaxAge != unset:
		return time.Duration(cc.sMaxAge) * time.Second
	case cc.maxAge != unset:
		return time.Duration(cc.maxAge) * time.Second
	}
	if exp := h.Values("Expires"); len(exp) > 0 {
		// An invalid Expires (or more than one) is a time in the past
		// (RFC 9111 section 5.3).
		if len(exp) != 1 {
			return 0
		}
		t, ok := parseHTTPDate(strings.TrimSpace(exp[0]))
		if !ok {
			return 0
		}
		return max(0, t.Sub(date))
	}
	if !heuristicStatus(status) && !cc.public {
		return 0
	}
	if targetMaxAge != unset {
		return min(time.Duration(targetMaxAge)*time.Second, maxHeuristic)
	}
	lm, ok := lastModified(h)
	if !ok || !lm.Before(date) {
		return 0
	}
	return min(date.Sub(lm)/10, maxHeuristic)
}

// maxHeuristic caps heuristic freshness (10% of the time since
// Last-Modified, RFC 9111 section 4.2.2): a day, so package indexes and
// other files that change without notice are asked for again daily at most.
const maxHeuristic = 24 * time.Hour

// heuristicStatus lists the status codes that are heuristically cacheable
// (RFC 9110 section 15.1).
func heuristicStatus(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus lists the status codes whose caching rules this cache
// implements, for must-understand (RFC 9111 section 5.2.2.3).
func understoodStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// explicitFreshness reports whether a response says how long it is fresh.
func explicitFreshness(h http.Header, cc directives) bool {
	return cc.maxAge != unset || cc.sMaxAge != unset || len(h.Values("Expires")) > 0
}

func lastModified(h http.Header) (time.Time, bool) {
	v := h.Values("Last-Modified")
	if len(v) != 1 {
		return time.Time{}, false
	}
	return parseHTTPDate(strings.TrimSpace(v[0]))
}

// responseDate is the Date of a response, or received when it has none
// that parses.
func responseDate(h http.Header, received time.Time) time.Time {
	v := h.Values("Date")
	if len(v) == 1 {
		if t, ok := parseHTTPDate(strings.TrimSpace(v[0])); ok {
			return t
		}
	}
	return received
}

// excludedFields are never stored or forwarded from storage: the hop-by-hop
// fields (RFC 9110 section 7.6.1, RFC 9111 section 3.1) and the cache's own
// status field, which the cache sets on every response it returns.
var excludedFields = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding",
	"Upgrade", "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization",
	HeaderXCache,
}

// storedHeader copies the fields of h a shared cache may store: no
// hop-by-hop fields (nor those Connection names), none that a qualified
// private names (RFC 9111 section 5.2.2.7).
func storedHeader(h http.Header, cc directives) http.Header {
	out := h.Clone()
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				out.Del(name)
			}
		}
	}
	for _, k := range excludedFields {
		out.Del(k)
	}
	for _, k := range cc.privateFields {
		out.Del(k)
	}
	return out
}

// headerSize estimates the heap bytes a stored header map holds: the map
// (a group of slots per 8 keys), each key, each value slice and value.
// TestMemoryBoundedUnderFlood checks the estimate against the heap.
func headerSize(h http.Header) int64 {
	n := int64(48 + 320*((len(h)+7)/8))
	for k, vs := range h {
		n += int64(len(k)) + 24
		for _, v := range vs {
			n += int64(len(v)) + 32
		}
	}
	return n
}

// objectOverhead is what an object costs besides its key, header and body:
// the struct with its parsed directives and times, and the store's map
// slot, list element and variant slice (measured with the heap, see
// TestMemoryBoundedUnderFlood).
const objectOverhead = 1024
