// Package forward is egressd's HTTP front end: absolute-URI forward proxying
// and CONNECT tunnels, built on github.com/elazarl/goproxy. It is the only
// package that imports goproxy.
//
// forward makes no policy choice of its own: it builds a policy.Request from
// what the client asked for, asks the shared Decider, and dials only the
// addresses the decision pinned (proxy/egress). CONNECT tunnels are relayed by
// egressd's own splice relay (goproxy's ConnectHijack), after the TLS
// ClientHello has been checked against the CONNECT host.
//
// With Options.Cache set, an allowed absolute-URI request goes through the
// HTTP cache (cache/httpcache) on its way to the Transport: the decision
// comes first, so a stored response reaches only clients the policy allows
// that host now. Interim responses (1xx) from the origin are forwarded.
//
// Forwarded requests go out through one http.Transport per set of pinned
// addresses (upstream.go), so a pooled origin connection only ever carries
// requests whose own decision allows its address; a reload retires them
// all. timeouts.idle bounds every wait of a forwarded request (the client's
// body, the origin's answer, a client that stopped reading). A WebSocket
// handshake is forwarded by egressd itself (upgrade.go), and the upgraded
// connection becomes one of its tunnels; goproxy never relays one.
//
// It does not own the policy, the dialer, the relay or the access line
// (policy, proxy/egress, proxy/tunnel, proxy/accesslog).
package forward
