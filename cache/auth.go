package cache

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// AuthCache remembers credential checks (bcrypt is deliberately slow) for
// a bounded time. It is a set of (user, key) pairs, and the caller decides
// what being in it means: proxy/auth keys a check by the stored hash and
// the password, and keeps the successes in one AuthCache and the failures
// in another. It stores only a salted SHA-256 of the user name and the
// key, never the password itself.
//
// A nil *AuthCache is valid and caches nothing.
type AuthCache struct {
	c    *TTL[[sha256.Size]byte, struct{}]
	ttl  time.Duration
	salt [16]byte
}

// NewAuthCache returns a cache of at most size verifications, each
// remembered for ttl. A ttl of zero or less returns nil, which caches
// nothing.
func NewAuthCache(size int, ttl time.Duration) *AuthCache {
	if ttl <= 0 {
		return nil
	}
	a := &AuthCache{c: NewTTL[[sha256.Size]byte, struct{}](size, ttl), ttl: ttl}
	rand.Read(a.salt[:]) // never returns an error (crypto/rand, Go 1.24+)
	return a
}

// hash hashes the salt and the length-prefixed user name, then the key, so
// that ("ab", "c") and ("a", "bc") differ.
func (a *AuthCache) hash(user, key string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(a.salt[:])
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(user)))])
	h.Write([]byte(user))
	h.Write([]byte(key))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// Seen reports whether key was added for user within the cache's TTL.
func (a *AuthCache) Seen(user, key string) bool {
	if a == nil {
		return false
	}
	_, ok := a.c.Get(a.hash(user, key))
	return ok
}

// Add remembers key for user for the cache's TTL.
func (a *AuthCache) Add(user, key string) {
	if a == nil {
		return
	}
	a.c.Add(a.hash(user, key), struct{}{}, a.ttl)
}
