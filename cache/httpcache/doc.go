// Package httpcache is egressd's shared HTTP response cache (RFC 9111): an
// http.RoundTripper-shaped layer in front of the transport that reaches
// origins. It stores responses to GET in memory, bounded in bytes and
// evicted least recently used (hashicorp/golang-lru/v2's simplelru under
// the cache's own byte accounting), and answers later requests from them
// while they are fresh, revalidating with ETag and Last-Modified when they
// are not. Concurrent misses for one URL make one request to the origin;
// the others wait (up to a bound) and read its body as it arrives.
//
// The package knows nothing about policy, proxies or goproxy: whoever
// calls [Cache.RoundTrip] has decided that this client may reach this
// origin, and the next RoundTripper it passes dials only what was decided.
// That is what keeps a stored response from reaching a client the current
// policy denies: the decision comes first, on every request.
//
// What it follows and where it departs from the RFC on purpose:
//   - Freshness from s-maxage, max-age, Expires, then 10% of the time since
//     Last-Modified (at most a day) for the status codes RFC 9110 calls
//     heuristically cacheable or with public; Age on every stored response
//     it serves; request max-age, min-fresh, max-stale, no-cache, no-store
//     and only-if-cached; stale-while-revalidate and stale-if-error
//     (RFC 5861).
//   - Not stored: no-store (unless must-understand with a status it
//     knows), private, responses to requests with Authorization unless
//     public, must-revalidate or s-maxage allow it, Vary: *, partial
//     content, bodies past the per-object bound (they stream through), and
//     responses with Set-Cookie: egressd serves many clients, and a cookie
//     set for one must never reach another.
//   - Vary: a URL keeps up to 16 variants, selected by the request fields
//     the response named, compared after joining lines and trimming list
//     members (Accept-Language also ignores case and order).
//   - Unsafe methods that succeed invalidate their URL and the
//     same-origin Location and Content-Location.
//   - Only GET responses are stored; HEAD is answered from a stored GET.
package httpcache
