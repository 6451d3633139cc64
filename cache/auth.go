package cache

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// AuthCache remembers credential verifications (bcrypt checks are
// deliberately slow) for a bounded time: it is a set of keys, and the
// caller decides what being in it means (proxy/auth keeps successes and
// failures in two). It stores only a salted SHA-256 of the user name and
// the key, never the secret itself.
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

// key hashes the salt and the length-prefixed user name, then the password,
// so that ("ab", "c") and ("a", "bc") differ.
func (a *AuthCache) key(user, pass string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(a.salt[:])
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(user)))])
	h.Write([]byte(user))
	h.Write([]byte(pass))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// Seen reports whether user and pass were verified successfully within the
// cache's TTL.
func (a *AuthCache) Seen(user, pass string) bool {
	if a == nil {
		return false
	}
	_, ok := a.c.Get(a.key(user, pass))
	return ok
}

// Add records that user and pass were verified successfully. Call it only
// after a successful check.
func (a *AuthCache) Add(user, pass string) {
	if a == nil {
		return
	}
	a.c.Add(a.key(user, pass), struct{}{}, a.ttl)
}
