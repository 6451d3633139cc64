// Package tunnel runs an allowed tunnel once both ends are connected: the
// first-bytes guard (on policy.tls_ports, a ClientHello read whole, parsed
// cleanly, whose SNI names the host that was asked for; anything it cannot
// read is denied tls_hello_invalid and never relayed), drain tracking, the
// active-tunnel gauge,
// the splice relay and the one access-log line at the end. CONNECT and SOCKS5
// both call Run, so a tunnel behaves the same whichever front end opened it.
//
// It does not dial and does not speak any proxy protocol: the front ends do
// that, then hand over the two TCP connections.
package tunnel
