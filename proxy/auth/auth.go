package auth

import (
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"

	"github.com/egressd/egressd/cache"
)

// dummyHash is a bcrypt hash (default cost) of a random string, the decoy
// of a users file without users.
var dummyHash = []byte("$2a$10$tMlPJqkq/4hHHm77TeWdwOaSwszAzDbLoUwXnqMaNwn9G6mIzYEy6")

// Authenticator verifies credentials against the current [Users]. It is
// safe for concurrent use; [Authenticator.SetUsers] swaps the users in
// without locking out verifications in flight.
type Authenticator struct {
	users atomic.Pointer[Users]
	cache *cache.AuthCache // nil: no caching
}

// New returns an Authenticator over users, remembering successful
// verifications in c (nil: none are remembered; every check runs bcrypt).
func New(users *Users, c *cache.AuthCache) *Authenticator {
	a := &Authenticator{cache: c}
	a.users.Store(users)
	return a
}

// SetUsers replaces the users (a reload of the users file). Cached
// successes of users whose hash changed or who were removed stop counting
// at once.
func (a *Authenticator) SetUsers(u *Users) { a.users.Store(u) }

// Users returns the users in force.
func (a *Authenticator) Users() *Users { return a.users.Load() }

// Verify reports whether pass is user's password. A success is cached; a
// failure never is.
func (a *Authenticator) Verify(user, pass string) bool {
	users := a.users.Load()
	hash, ok := users.hash(user)
	if !ok {
		// An unknown user name costs a bcrypt check at the file's own
		// cost, as a wrong password does, so response times do not tell
		// which user names exist. The result is ignored.
		decoy := dummyHash
		if users != nil && users.decoy != nil {
			decoy = users.decoy
		}
		bcrypt.CompareHashAndPassword(decoy, []byte(pass))
		return false
	}
	// The stored hash is part of the key (all bcrypt hashes have the same
	// length, so the concatenation is unambiguous): a changed password
	// never matches an old entry.
	key := string(hash) + pass
	if a.cache.Seen(user, key) {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	a.cache.Add(user, key)
	return true
}

// VerifyHeader checks a Proxy-Authorization header value (Basic scheme)
// and returns the authenticated user. It fits forward.Options.Auth.
func (a *Authenticator) VerifyHeader(header string) (user string, ok bool) {
	user, pass, ok := ParseBasic(header)
	if !ok || !a.Verify(user, pass) {
		return "", false
	}
	return user, true
}
