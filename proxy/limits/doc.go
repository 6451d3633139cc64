// Package limits counts client connections against limits.max_connections
// (all client connections of the HTTP and SOCKS5 listeners together) and
// limits.max_connections_per_client (by client IP), and keeps the
// egressd_client_connections gauge.
//
// It is a pair of counters behind one lock: the accept pipeline (package
// accept) asks [Limiter.Admit] for each new connection and gets a [Slot],
// or the name of the limit the connection would exceed; behind a load
// balancer it first counts the connection only against max_connections and
// moves it to its client with [Limiter.Claim] once the PROXY header has
// named that client. Whoever ends the connection releases its slot, once
// ([Limiter.Release]).
//
// It speaks no protocol and writes no access line: a connection past a
// limit goes on to its front end, which refuses it in its own protocol
// (HTTP 503 with X-Egress-Error: limit, the SOCKS5 general failure) and
// logs the refusal.
package limits
