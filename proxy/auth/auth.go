package auth

import (
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"

	"github.com/egressd/egressd/cache"
)

// dummyHash is a bcrypt hash (default cost) of a random string, the decoy
// of a users file without users.
var dummyHash = []byte("$2a$10$tMlPJqkq/4hHHm77TeWdwOaSwszAzDbLoUwXnqMaNwn9G6mIzYEy6")

// Authenticator verifies credentials against the current [Users]. It is
// safe for concurrent use; [Authenticator.SetUsers] swaps the users in
// without locking out verifications in flight.
type Authenticator struct {
	users  atomic.Pointer[Users]
	cache  *cache.AuthCache // successes; nil: not remembered
	failed *cache.AuthCache // failures; nil: not remembered

	// compare is bcrypt.CompareHashAndPassword; tests count the calls.
	compare func(hash, pass []byte) error

	// Observe, when set (before the first Verify), is told of every
	// check: source "cache" (a remembered answer), "bcrypt" (checked now)
	// or "shared" (waited for the same check running), result "ok",
	// "fail" or "overload" (no bcrypt slot freed in time; see
	// SetCheckLimit). It feeds egressd_auth_checks_total.
	Observe func(source, result string)

	limit atomic.Pointer[checkLimit] // nil: bcrypt checks are not capped

	// flights collapses identical bcrypt checks running at once (by user,
	// password and hash): a client that opens many connections at once
	// with credentials not (or no longer) in the cache, as every client
	// does after a restart, a reload or a cache expiry, costs one check,
	// not one per connection.
	flights singleflight.Group
	// joinHook, when set (tests), is called once a check has joined its
	// flight.
	joinHook func()
}

// result is a check's outcome, named as egressd_auth_checks_total's result
// label.
type result string

const (
	resultOK       result = "ok"
	resultFail     result = "fail"
	resultOverload result = "overload" // no bcrypt slot within the wait: not an answer about the password
)

// checkLimit caps the bcrypt checks that run at once.
type checkLimit struct {
	slots chan struct{}
	wait  time.Duration
}

// acquire takes a slot, waiting up to l.wait for one.
func (l *checkLimit) acquire() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	if l.wait <= 0 {
		return false
	}
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (l *checkLimit) release() { <-l.slots }

// New returns an Authenticator over users, remembering successful
// verifications in ok and failed ones in failed (nil: not remembered; each
// such check runs bcrypt). The two are kept apart so that a flood of wrong
// passwords cannot push the successes out.
//
// Remembering a failure is as safe as remembering a success: the stored
// hash is part of the key, so a users file that changes the password (or
// adds the unknown user) makes a new key, and a client that corrects its
// password sends a new one. What it buys: a client that keeps a stale
// password after a rotation costs one bcrypt check (62 ms of CPU at cost
// 10) per TTL, not one per connection.
func New(users *Users, ok, failed *cache.AuthCache) *Authenticator {
	a := &Authenticator{cache: ok, failed: failed, compare: bcrypt.CompareHashAndPassword}
	a.users.Store(users)
	return a
}

// SetCheckLimit caps the bcrypt checks that run at once at n (n <= 0: no
// cap). A check that finds every slot taken waits up to wait for one, then
// fails with result "overload": the client is refused (407, RFC 1929
// failure) and nothing is remembered. bcrypt takes a core for tens of
// milliseconds, so without a cap a burst of new credentials would take
// every core from the tunnels. It may be called while checks run (a
// reload); those keep the slot they hold. An unchanged limit is kept.
func (a *Authenticator) SetCheckLimit(n int, wait time.Duration) {
	if n <= 0 {
		a.limit.Store(nil)
		return
	}
	if l := a.limit.Load(); l != nil && cap(l.slots) == n && l.wait == wait {
		return
	}
	a.limit.Store(&checkLimit{slots: make(chan struct{}, n), wait: wait})
}

// SetUsers replaces the users (a reload of the users file). Cached
// successes of users whose hash changed or who were removed stop counting
// at once.
func (a *Authenticator) SetUsers(u *Users) { a.users.Store(u) }

// Users returns the users in force.
func (a *Authenticator) Users() *Users { return a.users.Load() }

// Verify reports whether pass is user's password. Both answers are
// remembered, in the caches New was given.
func (a *Authenticator) Verify(user, pass string) bool {
	users := a.users.Load()
	hash, known := users.hash(user)
	if !known {
		// An unknown user name costs a bcrypt check at the file's
		// highest cost, at least what a wrong password of any user
		// costs, so response times do not tell which user names exist:
		// the decoy's check is remembered and shared exactly as a known
		// user's failure is. Its result is ignored.
		hash = dummyHash
		if users != nil && users.decoy != nil {
			hash = users.decoy
		}
	}
	// The stored hash is part of the key (all bcrypt hashes have the same
	// length, so the concatenation is unambiguous): a changed password
	// never matches an old entry.
	key := string(hash) + pass
	if known && a.cache.Seen(user, key) {
		a.observe("cache", true)
		return true
	}
	// A failure's key differs from a success's (bcrypt hashes start with
	// "$"), so one cache given for both could never turn a failure into a
	// success.
	failKey := "-" + key
	if a.failed.Seen(user, failKey) {
		a.observe("cache", false)
		return false
	}
	res, ran := a.check(user, key, hash, pass)
	source := "shared"
	if ran {
		source = "bcrypt"
	}
	if res == resultOverload {
		if a.Observe != nil {
			a.Observe(source, string(resultOverload))
		}
		return false // says nothing about the password: not remembered
	}
	ok := res == resultOK && known
	a.observe(source, ok)
	if !ok {
		a.failed.Add(user, failKey)
		return false
	}
	a.cache.Add(user, key)
	return true
}

func (a *Authenticator) observe(source string, ok bool) {
	if a.Observe == nil {
		return
	}
	result := "fail"
	if ok {
		result = "ok"
	}
	a.Observe(source, result)
}

// check runs bcrypt for user's pass against hash (ran is true), within the
// cap of SetCheckLimit, or joins the same check already running and takes
// its result. key is Verify's hash+pass. Nothing outlives the flight;
// Verify remembers the answer.
func (a *Authenticator) check(user, key string, hash []byte, pass string) (res result, ran bool) {
	// The user name is length-prefixed and bcrypt hashes have a fixed
	// length, so no two (user, hash, pass) share a flight.
	k := strconv.Itoa(len(user)) + ":" + user + key
	ch := a.flights.DoChan(k, func() (any, error) {
		ran = true // only the caller whose function runs; seen after the receive below
		if l := a.limit.Load(); l != nil {
			if !l.acquire() {
				return resultOverload, nil
			}
			defer l.release()
		}
		if a.compare(hash, []byte(pass)) == nil {
			return resultOK, nil
		}
		return resultFail, nil
	})
	if a.joinHook != nil {
		a.joinHook()
	}
	r := <-ch
	return r.Val.(result), ran
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
