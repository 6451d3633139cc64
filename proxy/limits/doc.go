// Package limits owns egressd's connection limits: limits.max_connections
// (all client connections of the HTTP and SOCKS5 listeners together) and
// limits.max_connections_per_client (by client IP). A Limiter wraps each
// listener; a connection past a limit never reaches a front end: it gets a
// clear refusal (HTTP 503 with X-Egress-Error: limit; SOCKS5 reply 0x01, or
// method 0xFF when the client offers no method we could refuse it under),
// one access-log line with reason limit and a count in
// egressd_limit_rejections_total{listener,limit}, and is closed. A refusal
// never hangs: it is bounded in time, and in number (past MaxRefusing, more
// refused connections are closed without an answer).
//
// Accepted connections are handed on untouched: the front ends get the
// listener's own *net.TCPConn, which the splice relay needs. So a Limiter
// cannot see Close being called; instead it holds every connection it
// admitted and releases it exactly once, when the connection is really
// closed, by whoever closes it: the HTTP server (through ConnState, at
// once), goproxy after a refused CONNECT, the tunnel relay, the SOCKS5
// server. A closed connection is recognised by its descriptor refusing new
// references (syscall.RawConn.Control fails once Close has been called): no
// I/O, about 20 ns a connection. A sweep finds them every Options.Sweep, and
// at once for the client (or, rate-limited, the whole set) whose limit a new
// connection would exceed, so a decision never counts a connection that is
// already gone.
//
// It also gives the drain its exact end: Wait returns when every client
// connection, and every tunnel it became, has been closed.
package limits
