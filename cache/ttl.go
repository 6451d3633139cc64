package cache

import (
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// TTL is a size-bounded LRU cache whose entries each expire at their own
// time. It is safe for concurrent use. The zero value is not usable; call
// [NewTTL].
type TTL[K comparable, V any] struct {
	lru    *expirable.LRU[K, ttlEntry[V]]
	maxTTL time.Duration
	now    func() time.Time // tests replace it; nil means time.Now
}

// ttlEntry is what the LRU stores: the value and its own expiry.
type ttlEntry[V any] struct {
	v         V
	expiresAt time.Time
}

// NewTTL returns a cache holding at most size entries (size <= 0 means
// unbounded), none of which lives longer than maxTTL. maxTTL must be
// positive: it is also the LRU's reclaim bound.
func NewTTL[K comparable, V any](size int, maxTTL time.Duration) *TTL[K, V] {
	if maxTTL <= 0 {
		maxTTL = time.Minute
	}
	return &TTL[K, V]{
		lru:    expirable.NewLRU[K, ttlEntry[V]](size, nil, maxTTL),
		maxTTL: maxTTL,
	}
}

func (c *TTL[K, V]) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Get returns the value stored under k if it has not expired.
func (c *TTL[K, V]) Get(k K) (V, bool) {
	e, ok := c.lru.Get(k)
	if !ok {
		var zero V
		return zero, false
	}
	if !c.clock().Before(e.expiresAt) {
		c.lru.Remove(k)
		var zero V
		return zero, false
	}
	return e.v, true
}

// Add stores v under k for ttl, capped at the cache's maximum TTL. A ttl of
// zero or less stores nothing and removes any existing entry for k.
func (c *TTL[K, V]) Add(k K, v V, ttl time.Duration) {
	if ttl <= 0 {
		c.lru.Remove(k)
		return
	}
	if ttl > c.maxTTL {
		ttl = c.maxTTL
	}
	c.lru.Add(k, ttlEntry[V]{v: v, expiresAt: c.clock().Add(ttl)})
}

// Remove deletes k from the cache.
func (c *TTL[K, V]) Remove(k K) { c.lru.Remove(k) }

// Len returns the number of stored entries, including expired ones not yet
// reclaimed.
func (c *TTL[K, V]) Len() int { return c.lru.Len() }

// Purge empties the cache.
func (c *TTL[K, V]) Purge() { c.lru.Purge() }
