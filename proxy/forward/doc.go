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
package forward
