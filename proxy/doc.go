// Package proxy assembles egressd: it binds the listeners (HTTP/CONNECT,
// SOCKS5, admin), runs one accept pipeline per proxy listener (package
// accept: limits, PROXY header) that hands each connection to its front
// end (proxy/forward, proxy/socks), and owns the policy snapshot in force,
// readiness, reload and the drain on shutdown. Decisions live in package
// policy, the way out in proxy/egress, the tunnel's last steps in
// proxy/tunnel.
package proxy
