// Package proxyproto identifies clients that reach egressd through a load
// balancer that does not preserve client addresses: it reads PROXY protocol
// v1 (text) and v2 (binary) headers (HAProxy's proxy-protocol.txt) and
// tells the front ends the real client address.
//
// It owns two things:
//
//   - [ParseHeader], a pure parser of a header at the start of a byte slice.
//     It never panics (it is fuzzed), never reads past the header, and
//     distinguishes "not a header", "a header, but incomplete so far" and
//     "malformed".
//   - [Listener], a net.Listener for listen.proxy_protocol. A connection from
//     a trusted source (listen.trusted_proxies) must start with a header,
//     else it is closed; a connection from any other source must not (a
//     forged header is refused: the connection is closed) and is a direct
//     client known by its socket address.
//
// # Why the Listener does not wrap connections
//
// The relay splices (splice(2)) between two *net.TCPConn; a wrapping conn
// would send every byte through user space. So the Listener hands the front
// ends the accepted *net.TCPConn itself: it reads exactly the header's
// bytes off the socket (it peeks with MSG_PEEK to find the header's length,
// then consumes that many bytes) and leaves everything after it in the
// kernel's buffer for the front end. The client address it found is kept in
// a map keyed by the conn until the front end takes it with
// [Listener.Client], which each front end does right after Accept, before
// anything can close the conn (the HTTP listener's fast path, the SOCKS5
// accept loop): an entry nobody takes would live as long as the Listener.
//
// # Why headers are read off the accept path
//
// A load balancer connection that is slow to send its header must not stall
// the accept loop of the HTTP server, which calls Accept serially. So the
// Listener runs its own accept loop and reads each header in a goroutine of
// its own, under the handshake deadline; Accept returns connections whose
// header is done, from a channel. Close stops the loop, closes connections
// still in their header, and waits for every goroutine it started.
package proxyproto
