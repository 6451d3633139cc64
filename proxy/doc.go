// Package proxy assembles egressd: it owns the listeners (HTTP/CONNECT,
// SOCKS5, admin), the policy snapshot in force, readiness, reload and the
// drain on shutdown. Protocol work lives in proxy/forward and proxy/socks,
// the data path in proxy/egress, decisions in package policy.
package proxy
