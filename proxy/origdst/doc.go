// Package origdst owns the kernel side of egressd's in-line (transparent)
// mode: the listening socket that nftables hands redirected connections to,
// and the destination each such connection's client actually dialed.
//
// Two nftables statements deliver a connection to a local listener:
//
//   - redirect (a destination NAT to a local address): the accepted
//     socket's local address is the gateway's own; conntrack remembers the
//     original destination, read with getsockopt SO_ORIGINAL_DST (IPv4) or
//     IP6T_SO_ORIGINAL_DST (IPv6).
//   - tproxy: nothing is rewritten; the socket's local address is the
//     original destination. The listener must be IP_TRANSPARENT /
//     IPV6_TRANSPARENT (CAP_NET_RAW or CAP_NET_ADMIN), and packets need the
//     policy routing that deployments/nftables/egressd-transparent.nft's
//     loader sets up.
//
// [Destination] answers for both without being told which: it asks
// conntrack first (under tproxy conntrack's original destination is the
// local address), and falls back to the local address when conntrack has
// no entry. A redirected connection without an entry then reports the
// gateway's own listener, which the front end refuses as a redirect loop:
// the fallback fails closed.
//
// The package is Linux-only; elsewhere [Listen] and [Destination] return
// [ErrUnsupported]. It has no policy and does no I/O on the connection.
package origdst
