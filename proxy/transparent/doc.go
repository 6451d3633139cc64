// Package transparent is the in-line mode's front end: it serves the
// connections nftables redirected (or tproxied) to listen.transparent,
// from clients that never asked for a proxy. It takes each connection from
// the accept pipeline (proxy/accept) like every front end, asks
// proxy/origdst where the client was going, and then:
//
//   - on a policy.http_ports port, hands the connection to proxy/forward
//     (Handler.ServeInline): each request's Host decides, and the request
//     is forwarded as an absolute-URI request is;
//   - on a policy.tls_ports port, reads the ClientHello first (sni.Peek,
//     the guard's reader and bound): its SNI is the host the policy
//     decides on, egressd resolves it and dials the address it checked,
//     never the address the client chose. Without an SNI (or without a
//     hello that parsed) only cidrs rules on the original destination can
//     allow it. The guard's judgement of the hello (tunnel.JudgeHello:
//     tls_hello_invalid, ech, protocol_mismatch) is CONNECT's;
//   - on any other port, only cidrs rules on the original destination
//     address and port decide.
//
// An allowed connection is dialed by egress.Dialer and relayed by
// tunnel.Runner, as CONNECT and SOCKS5 tunnels are, or, when its rule
// inspects it, terminated by the inspector (tunnel.Runner.Inspect) with
// each request inside decided again; its access line has listener
// "transparent" and orig_dst. A refused connection is closed
// without an answer (there is no protocol to answer in; HTTP requests get
// forward's answers), after its access line. A connection past a limit on
// an http_ports port goes to proxy/forward too, which answers it 503 as
// it answers one on listen.http.
//
// A connection whose original destination is egressd itself (one of its
// own listening sockets, or a loopback or unspecified address) is a
// redirect loop, or a client addressing the listener directly: it is
// refused as bad_request before anything is read or dialed.
package transparent
