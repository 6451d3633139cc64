// Package cache owns egressd's caches: a generic size-bounded cache whose
// entries each carry their own expiry ([TTL]), the caching DNS [Resolver]
// that the policy layer uses to turn allowed names into addresses, and the
// [AuthCache] of successful credential verifications.
//
// The package knows nothing about policy. [Resolver] satisfies
// policy.Resolver structurally; policy depends only on that interface.
//
// # Expiry
//
// Every cache is built on github.com/hashicorp/golang-lru/v2/expirable.
// The LRU's own TTL is only an upper bound used to reclaim memory; the real
// expiry of each entry is stored in the value and checked on every read, so
// DNS answers live exactly as long as their record TTL says (capped by
// MaxTTL), negative answers live for NegativeTTL, and an answer with TTL 0
// is never stored. The latter matters for DNS rebinding: a name that
// answers with TTL 0 is asked again on every lookup, and the policy layer
// pins whatever address that one lookup returned.
//
// expirable.LRU v2.0.7 starts a cleanup goroutine per cache that cannot be
// stopped, so caches are long-lived: create one per purpose in main.
package cache
