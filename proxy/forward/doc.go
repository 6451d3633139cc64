// Package forward is egressd's HTTP front end: CONNECT tunnels and
// absolute-URI forward proxying. It is the only package that imports
// github.com/elazarl/goproxy.
//
// One file per step:
//
//   - serve.go: Serve takes each connection of the HTTP listener from the
//     accept pipeline (package accept) and peeks at its first bytes. A
//     plain CONNECT head (connecthead.go, fuzzed against http.ReadRequest)
//     goes straight to serveConnect; with the HTTP cache on, a plain
//     absolute-form GET or HEAD head (hithead.go, fuzzed the same way)
//     goes to the hit path; every other connection goes, untouched, to
//     the Handler's own http.Server. A connection past a limit gets 503
//     limit here.
//   - hit.go: the hit path, serveHits. A request the cache answers fresh
//     is checked as ServeHTTP and serveStored would (credentials, the one
//     decision, no DLP profile or HTTP checks on the rule), then its head
//     is consumed and the stored response written in net/http's bytes
//     (the fields serialized once per stored response), with the same
//     access line; the connection then waits for its next request
//     (timeouts.idle; Shutdown closes it). The first request that is not
//     such a hit goes to net/http as the client sent it (the first head of
//     a connection is only peeked; later ones are read and replayed ahead
//     of the socket, replayConn, with the credentials check the hit path
//     made of it, so that it is checked once).
//   - takeback.go: takeBack gives a connection back to the hit path
//     (resumeHits) once net/http has answered a request on it and nothing
//     of the exchange is left in net/http's state (no body, a response of
//     known length written in full, no close, not draining): flushed,
//     hijacked, with the bytes net/http had read past the request replayed
//     to the hit path. A connection may go back and forth any number of
//     times (a turn that declines its first request backs off: resume);
//     one that does not qualify stays with net/http.
//   - inline.go: ServeInline takes the in-line listener's connections to
//     policy.http_ports (proxy/transparent) to the same http.Server, where
//     each request's Host decides (inlineTarget); one past a limit gets
//     serve.go's 503 limit, with the transparent listener's access line.
//   - connect.go: serveConnect, the one CONNECT handler, whichever parser
//     read the head (a CONNECT net/http read is hijacked to it by
//     ServeHTTP): credentials once, the policy once, one answer (407, 400,
//     403, 502, or 200), the pinned dial, then the tunnel (proxy/tunnel:
//     SNI guard, splice relay, access line).
//   - answer.go: egressd's own answers (X-Egress-Denied, X-Egress-Error),
//     one description written three ways: on a raw connection, as goproxy's
//     *http.Response, through a ResponseWriter.
//   - handler.go: absolute-URI requests, through goproxy: decide, DLP
//     (proxy/dlp), the HTTP cache (cache/httpcache), then out through
//     forwarded.go and upstream.go. upgrade.go forwards a WebSocket
//     handshake itself, and the upgraded connection becomes one of
//     egressd's tunnels; goproxy never relays one.
//
// forward makes no policy choice of its own: it builds a policy.Request
// from what the client asked for, asks the shared Decider, and dials only
// the addresses the decision pinned (proxy/egress). Forwarded requests go
// out through one http.Transport per set of pinned addresses (upstream.go),
// so a pooled origin connection only ever carries requests whose own
// decision allows its address; a reload retires them all. timeouts.idle
// bounds every wait of a forwarded request (the client's body, the
// origin's answer, a client that stopped reading). With Options.Cache set,
// an allowed absolute-URI request goes through the HTTP cache on its way
// out: the decision comes first, so a stored response reaches only clients
// the policy allows that host now. Interim responses (1xx) from the origin
// are forwarded.
//
// A CONNECT whose rule inspects it (tunnel.Runner.Inspects) is not
// dialed: serveConnect answers 200, runs the guard and hands the tunnel to
// proxy/inspect (inspectConnect) instead of the relay. The requests inside
// inspected tunnels, from CONNECT or SOCKS5, come to ServeInspected,
// which sends them through the same chain as absolute-URI requests
// (onRequest, goproxy, onResponse): decided again, Host against the SNI,
// the rule's methods and paths (admit), DLP, request_headers_add, the
// HTTP cache, the pools; https origins are dialed through
// dialTLSFromContext and verified for the name (upstream_tls).
//
// A decision with a parent proxy (policy.Decision.Via) is carried by it:
// tunnels through the parent's CONNECT (the egress Dialer), forwarded
// requests through a pool of that parent's own (upstream.go, parent.go),
// http URLs in absolute form with its credentials, https URLs through its
// tunnel. A parent's failure is 502 with X-Egress-Error: upstream_proxy;
// its 407 to a forwarded request is never passed on as egressd's own.
//
// It does not own the policy, the dialer, the relay or the access line
// (policy, proxy/egress, proxy/tunnel, proxy/accesslog).
package forward
