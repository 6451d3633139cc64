// Package auth owns proxy authentication for both front ends: the users
// file (htpasswd format, bcrypt hashes only), verification of a user name
// and password against it, and parsing of the Basic credentials an HTTP
// client sends in Proxy-Authorization. The SOCKS5 front end passes the RFC
// 1929 user name and password it read to [Authenticator.Verify]; the HTTP
// front end passes the header value to [Authenticator.VerifyHeader].
//
// bcrypt is slow on purpose (tens of milliseconds at the default cost), and
// an HTTP client authenticates on every request. Verifications are
// therefore remembered for a short time, successes and failures in two
// cache.AuthCache values, keyed by a salted hash of the user name, the
// stored hash and the password, so a busy client, or one that keeps a stale
// password, pays bcrypt once per TTL; identical checks that arrive together
// share one run. Because the stored hash is part of the key, a password
// changed in the users file (and reloaded) invalidates a remembered success
// or failure at once, a user removed from the file is refused before the
// cache is consulted, and a user added is checked afresh.
//
// bcrypt checks are capped ([Authenticator.SetCheckLimit]): past the cap a
// check waits for a slot, and one that gets none in time is refused as an
// overload and not remembered. An unknown user name is checked against the
// file's costliest hash, so answer times do not tell which names exist.
//
// The users file is read whole into an immutable [Users] value; a reload
// builds a new one and swaps it in, so a file that fails to load leaves the
// old users in force. Secrets never leave this package: errors name the file,
// the line and the user, never a password or a hash.
package auth
