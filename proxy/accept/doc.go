// Package accept is the one way a client connection enters egressd: TCP
// accept, then the connection limits (package limits), then, with
// listen.proxy_protocol, the PROXY header from a trusted load balancer
// (package proxyproto). What comes out is one value, a [Conn]: the
// accepted *net.TCPConn itself (the splice relay needs it), the client it
// belongs to, the limit it exceeded if any, and the duty to release it
// once. It is handed to the front end that owns the port ([FrontEnd]:
// proxy/forward for HTTP and CONNECT, proxy/socks for SOCKS5; the in-line
// mode's transparent listener takes the same value).
//
// The client address is computed here and nowhere else: the PROXY header's
// source behind a trusted load balancer, the socket's peer otherwise,
// IPv4-mapped IPv6 unmapped.
//
// Refusals: a connection whose PROXY header is missing, forged or
// malformed is closed here without an answer (the bytes on it are not the
// front end's protocol) and logged to the diagnostics. A connection past a
// limit goes on to its front end with [Conn.Limit] set, and the front end
// refuses it in its own protocol and writes its access line; past
// Options.MaxRefusing refusals in progress its socket is closed first, so
// the refusal only logs it.
//
// Ownership: each connection runs on a goroutine of its own from accept
// until its front end returns (a front end that hands it on, to net/http or
// to the relay, returns early). Whoever ends the connection calls
// [Conn.Close] (or closes the socket and calls [Conn.Release]); the first
// release gives back its limits slot and its place in the [Server]'s set of
// open connections, which is what a drain waits for ([Server.Wait]) and
// what a hard stop cuts ([Server.CloseConns]).
package accept
