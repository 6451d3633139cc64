// Package cache owns egressd's caches: a generic size-bounded cache whose
// entries each carry their own expiry ([TTL]), the caching DNS [Resolver]
// that the policy layer uses to turn allowed names into addresses, and the
// [AuthCache] that remembers credential checks (proxy/auth keeps one for
// successes and one for failures; it stores salted hashes, never a
// password).
//
// The shared HTTP response cache is its own package, cache/httpcache.
//
// The package knows nothing about policy. [Resolver] satisfies
// policy.Resolver structurally; policy depends only on that interface.
//
// # Resolver
//
// The Resolver asks DNS servers itself (github.com/miekg/dns): the
// configured ones, or those of /etc/resolv.conf ([ParseResolvConf]: its
// nameserver lines and options timeout, attempts and rotate; no search
// list, no ndots), re-read when the file changes. So every path has real
// TTLs, one cache, negative caching and collapsed concurrent lookups.
//
// # Expiry
//
// Every cache is built on github.com/hashicorp/golang-lru/v2/expirable.
// The LRU's own TTL is only an upper bound used to reclaim memory; the real
// expiry of each entry is stored in the value and checked on every read, so
// DNS answers live exactly as long as their record TTL says (raised to
// MinTTL, capped by MaxTTL), negative answers live for NegativeTTL, and
// with no MinTTL an answer with TTL 0 is never stored. Caching answers does
// not open a DNS rebinding hole: the policy layer range-checks whatever
// addresses a lookup returns and pins them for the dial. With StaleTTL, a
// positive answer stays in the LRU that much longer and is served when its
// refresh fails (RFC 8767).
//
// expirable.LRU v2.0.7 starts a cleanup goroutine per cache that cannot be
// stopped, so caches are long-lived: create one per purpose in main.
package cache
