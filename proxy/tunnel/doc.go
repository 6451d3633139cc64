// Package tunnel runs an allowed tunnel once both ends are connected: the
// first-bytes guard (the TLS ClientHello's SNI must name the host that was
// asked for, on policy.tls_ports), drain tracking, the active-tunnel gauge,
// the splice relay and the one access-log line at the end. CONNECT and SOCKS5
// both call Run, so a tunnel behaves the same whichever front end opened it.
//
// It does not dial and does not speak any proxy protocol: the front ends do
// that, then hand over the two TCP connections.
package tunnel
