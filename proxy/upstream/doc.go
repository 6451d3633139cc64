// Package upstream connects through parent proxies: the corporate proxies
// of upstream_proxies that rules with via (or policy.default_via) hand their
// allowed connections to.
//
// It owns:
//
//   - Dialer.Connect: a tunnel through a parent. It connects to the
//     parent's URLs in order (each within its connect_timeout; one that
//     does not accept is counted down and the next is tried, and for a
//     while, urlHealth, it is tried only after the others), sends
//     CONNECT host:port, by name, with Proxy-Authorization when
//     credentials are configured, and reads the parent's answer head with
//     plain reads: the returned *net.TCPConn is the tunnel, ready for the
//     splice relay and the SNI guard, and the bytes the parent sent in the
//     same segment after its answer (a server-first destination's banner)
//     come back as early bytes, for the caller to hand its client first. A
//     status that is no success is an *Error with the parent's status
//     (refused).
//   - Dialer.Dial: a connection to a parent for forwarded (absolute-URI)
//     requests, and the Proxy-Authorization value to send with them.
//   - Set: the parents of one config generation, swapped by Store on
//     reload; the Basic header is built once per parent.
//
// Every outcome is counted through Observe (egressd_upstream_proxy_requests_total).
// Credentials never appear in an error or a log: errors name the parent
// and its address. Parent addresses are trusted configuration: they are
// not checked against the deny ranges (the destination is, by the policy,
// before a parent is asked). It makes no policy choice and writes no log
// lines.
package upstream
