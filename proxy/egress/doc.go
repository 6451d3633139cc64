// Package egress is the data path every front end shares once a request is
// allowed.
//
// It owns:
//
//   - Dialer: connects only to the addresses a policy.Decision pinned, in
//     order, each with its own timeout, never resolving a name, and checks
//     again at the socket (ControlContext) that the address is in the
//     decision. A dialer given no passing decision refuses. A decision
//     with a parent proxy (Via) is not dialed: the parent is asked for a
//     tunnel to the destination by name (proxy/upstream).
//   - Relay: carries a tunnel's bytes between two *net.TCPConn. On Linux it
//     splices socket to pipe to socket with splice(2), borrowing a pipe from
//     a small shared PipePool only while bytes flow, so an idle tunnel costs
//     two descriptors and two parked goroutines. It half-closes properly,
//     enforces an idle timeout (without a timer goroutine: the waits' own
//     deadlines, checked against a shared last-activity time) and a maximum
//     duration, counts bytes live, and replays the bytes read during the SNI
//     peek first. Where splice is unavailable it copies with pooled buffers.
//   - Registry: tracks live tunnels so a drain can wait for them and then
//     cut what is left.
//
// It makes no policy choice: it is handed a decision, or bytes to move. It
// does not parse protocols (see package sni) and writes no log lines.
package egress
