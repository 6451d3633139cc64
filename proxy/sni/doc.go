// Package sni reads the TLS ClientHello a client sends first on a tunnel and
// reports the server name (SNI), the ALPN protocols and whether the hello
// carries Encrypted Client Hello.
//
// It owns two things:
//
//   - [Parse], a pure parser of a TLS record stream prefix. It reassembles a
//     ClientHello that spans several handshake records (each record at most
//     16 KiB, the message at most 64 KiB) and never panics on any input; it is
//     fuzzed, including differentially against crypto/tls's own parser.
//   - [Peek], which reads a ClientHello from a connection under a size cap and
//     a deadline, and returns every byte it consumed so the caller can replay
//     them to the upstream before relaying.
//
// It does not own any policy: whether a missing or mismatching name is allowed
// is decided by package policy. It does not terminate TLS and never writes to
// the connection.
//
// Errors fail closed and are distinct, so a front end can map them to contract
// reasons: [ErrNotTLS] (the bytes are not a TLS handshake: protocol_mismatch),
// [ErrMalformed] (a TLS handshake record whose ClientHello does not parse:
// tls_hello_invalid), [ErrTooLarge] (the hello exceeds the caps:
// tls_hello_invalid), and [ErrIncomplete] (more bytes are needed; [Parse]
// only, carried by an [*IncompleteError] that says how many).
//
// Parse accepts nothing crypto/tls's server would reject before reading the
// name (a duplicate extension, a trailing dot, a malformed body of an
// extension crypto/tls parses), so whatever the guard relays, a TLS server
// reads the name the guard judged; FuzzParse and the guard's
// FuzzGuardRelaysOnlyWhatTLSReads (proxy/tunnel) hold it to that.
package sni
