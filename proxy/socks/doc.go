// Package socks is egressd's SOCKS5 front end (RFC 1928 CONNECT, RFC 1929
// username/password), built on github.com/armon/go-socks5. It is the only
// package that imports go-socks5.
//
// go-socks5 has been unmaintained since 2016 and its defaults are hostile to
// an egress proxy: it resolves names before its RuleSet runs, permits all,
// has no deadlines, and Server.Serve returns on the first Accept error. So
// this package runs its own accept loop with handshake deadlines, builds one
// go-socks5 Server per connection whose hooks close over that connection's
// access-log record, passes names through its Resolver unresolved so the
// policy decides on the name, dials only the decision's pinned addresses,
// and takes the relay over from go-socks5 (through the io.WriterTo its copy
// loops call) so SOCKS5 tunnels get the same SNI guard and splice relay as
// CONNECT.
//
// go-socks5 also picks the authentication method in the client's order of
// preference, and clients with credentials (curl, golang.org/x/net/proxy)
// offer "no authentication" first; with optional authentication the server
// reorders the offered methods so that username/password wins and the user's
// groups apply. The client address comes from Options.ClientAddr, which a
// PROXY-protocol listener (package proxyproto) feeds from the header.
//
// A fast path (fast.go) serves the common exchange itself (a greeting, RFC
// 1929 credentials when users are configured, then a CONNECT) through the
// same credential check, decide, dial, guard and relay code, without
// go-socks5's per-connection server, buffer and goroutines. It also refuses
// every other version 5 request itself (BIND and UDP ASSOCIATE 0x07, with an
// access line; unknown commands 0x07; unknown address types 0x08), so no
// go-socks5 version can turn a command on. Anything else (a greeting it
// does not serve, a request that is not version 5) is handed to go-socks5
// with the bytes read so far replayed. A
// differential test and fuzz target hold both paths to the same bytes on
// the wire and the same access lines, with and without users.
package socks
