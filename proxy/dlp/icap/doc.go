// Package icap is an ICAP (RFC 3507) REQMOD client: it asks an external
// content-adaptation service (a DLP engine, c-icap, an antivirus gateway)
// what to do with an HTTP request before egressd forwards it.
//
// It owns the wire protocol only: OPTIONS (Methods, Preview, ISTag,
// Max-Connections, Options-TTL, refreshed when the TTL runs out or a
// response carries another ISTag), REQMOD with Preview, "Allow: 204" and
// "100 Continue", the Encapsulated framing and ICAP chunked bodies, and a
// pool of persistent connections bounded by the service's Max-Connections.
// Every transaction is bounded by one timeout and every size the service
// sends is bounded, so a slow, broken or hostile service costs a bounded
// wait and bounded memory, never a hang.
//
// It does not own what the answers mean for the product (the failure
// policy, findings, the block answer to the client): proxy/dlp adapts the
// Client as one of its inspectors. The icaptest subpackage is an in-process
// ICAP server for tests.
package icap
