// Package tunnel runs an allowed tunnel once both ends are connected, the
// same way whichever front end opened it (CONNECT, SOCKS5, and the
// transparent listener and WebSocket upgrades that take the same steps):
//
//   - [Runner.GuardSNI], the first-bytes guard: on policy.tls_ports a
//     ClientHello read whole, parsed cleanly, whose SNI names the host that
//     was decided on; anything it cannot read is denied tls_hello_invalid
//     and never relayed. Elsewhere the policy's protocol check.
//   - [Runner.Start]: drain tracking, the active-tunnel gauge, the splice
//     relay (package egress; bytes already read from either side, such as
//     a parent proxy's early bytes, go first), and at the end the one
//     access-log line and the release of the client connection (package
//     accept).
//
// A tunnel whose rule inspects it (Runner.Inspects) is not relayed: after
// the guard, Runner.Inspect hands it to the Inspector (proxy/inspect),
// with the same drain tracking, gauge and line.
//
// It does not dial and does not speak any proxy protocol: the front ends do
// that, then hand over the two TCP connections.
package tunnel
