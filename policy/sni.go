package policy

import "net/netip"

// CheckSNI checks the first TLS ClientHello of a tunnel to a tls_ports port
// against the decision it was allowed by. present is false when the
// ClientHello carried no server_name; ech reports an Encrypted Client Hello,
// whose outer SNI is judged like any other (ECH is logged, never relaxed).
//
//   - no SNI: ReasonSNIMissing when require_sni is on, except for IP-literal
//     destinations (clients never send an IP as SNI);
//   - an SNI that does not normalize to d.Host (or, for an IP destination,
//     to the same IP): ReasonSNIMismatch.
//
// The verdict is Allow with ReasonNone when the check passes, and otherwise
// follows the client's mode (Report in report mode). It judges only the SNI; the
// caller keeps d's own verdict.
func (p *Policy) CheckSNI(d Decision, sni string, present bool, ech bool) (Verdict, Reason) {
	_ = ech
	if !present || sni == "" {
		if d.IsIP || !p.requireSNI {
			return Allow, ReasonNone
		}
		return enforce(modeOf(d, p), ReasonSNIMissing), ReasonSNIMissing
	}
	host, addr, isIP, err := NormalizeHost(sni)
	switch {
	case err != nil:
	case d.IsIP && isIP:
		if da, derr := netip.ParseAddr(d.Host); derr == nil && addr.Unmap() == da.Unmap() {
			return Allow, ReasonNone
		}
	case !d.IsIP && !isIP && host == d.Host:
		return Allow, ReasonNone
	}
	return enforce(modeOf(d, p), ReasonSNIMismatch), ReasonSNIMismatch
}

// CheckProtocol checks the first bytes of a tunnel: on a tls_ports port they
// must be a TLS ClientHello (isTLS), otherwise ReasonProtocolMismatch (Report
// in report mode). Other ports carry anything.
func (p *Policy) CheckProtocol(d Decision, isTLS bool) (Verdict, Reason) {
	if isTLS || !p.IsTLSPort(d.Port) {
		return Allow, ReasonNone
	}
	return enforce(modeOf(d, p), ReasonProtocolMismatch), ReasonProtocolMismatch
}
