// Package inspect terminates the tunnels of rules with inspect: true (TLS
// inspection). It owns the operator's CA (loaded with its key file's
// permissions checked), the leaf certificates issued for each name
// (ECDSA P-256, valid for hours, cached in an LRU and issued once under
// concurrency), the tls_inspection.bypass list, the client-side TLS
// handshake (TLS 1.2 at least, ALPN h2 and http/1.1), the net/http server
// that reads the requests inside, and the client config for origins
// (verified against the system's roots plus upstream_ca_file, with the
// tunnel's name as server name).
//
// It does not judge or forward requests: each inner request goes to the
// Chain it is given (proxy/forward's, the same chain forwarded requests
// take: policy, methods and paths, DLP, HTTP cache, pinned upstream),
// which finds its tunnel with TunnelFrom. It does not decide which tunnels
// to inspect beyond Inspects (the decision's rule and the bypass list), and
// it neither dials nor speaks a proxy protocol: proxy/tunnel hands it an
// allowed tunnel after the SNI guard, with a done callback that writes the
// tunnel's own line and releases it.
//
// goproxy's MITM is not used: egressd's CONNECT handler is its own and
// SOCKS5 never reaches goproxy, while both must inspect the same way.
package inspect
