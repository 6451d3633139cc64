// Package proxyproto identifies clients that reach egressd through a load
// balancer that does not preserve client addresses: it reads PROXY protocol
// v1 (text) and v2 (binary) headers (HAProxy's proxy-protocol.txt).
//
// It owns two things:
//
//   - [ParseHeader], a pure parser of a header at the start of a byte slice.
//     It never panics (it is fuzzed), never reads past the header, and
//     distinguishes "not a header", "a header, but incomplete so far" and
//     "malformed".
//   - [Identify], what listen.proxy_protocol asks of one accepted
//     connection: from a trusted source (listen.trusted_proxies) it must
//     start with a header, whose source is the client; from any other
//     source it must not (a forged header is refused) and the socket's peer
//     is the client. The accept pipeline (package accept) calls it on each
//     connection's own goroutine, so a slow load balancer never stalls the
//     accept loop, and closes refused connections without an answer.
//
// # Why Identify does not wrap connections
//
// The relay splices (splice(2)) between two *net.TCPConn; a wrapping conn
// would send every byte through user space. So Identify works on the
// accepted *net.TCPConn itself: it peeks (MSG_PEEK) to find the header's
// length, then consumes exactly that many bytes, and leaves everything
// after it in the kernel's buffer for the front end.
package proxyproto
