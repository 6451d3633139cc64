package policy

import "net/netip"

// CheckSNI checks the first TLS ClientHello of a tunnel to a tls_ports port
// against the decision it was allowed by. It is only for a hello that
// parsed cleanly (see CheckInvalidHello for one that did not). present is
// false when the ClientHello carried no server_name extension; ech reports
// an encrypted_client_hello extension.
//
//   - ECH under `ech: deny`: ReasonECHRefused. Under `ech: allow` (the
//     default) the outer SNI is judged like any other;
//   - no SNI: ReasonSNIMissing when require_sni is on, except for IP-literal
//     destinations (clients never send an IP as SNI);
//   - an SNI that does not normalize to d.Host (or, for an IP destination,
//     to the same IP): ReasonSNIMismatch.
//
// The verdict is Allow with ReasonNone when the check passes, and otherwise
// follows the client's mode (Report in report mode). It judges only the SNI; the
// caller keeps d's own verdict.
func (p *Policy) CheckSNI(d Decision, sni string, present bool, ech bool) (Verdict, Reason) {
	if ech && p.ech == ECHDeny {
		return enforce(modeOf(d, p), ReasonECHRefused), ReasonECHRefused
	}
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

// CheckInvalidHello judges the first bytes of a tunnel to a tls_ports port
// that began a TLS handshake but gave no ClientHello that could be judged:
// it did not arrive whole within timeouts.handshake, did not parse (an SNI
// with a trailing dot or a byte outside printable ASCII, a duplicate
// extension...), or exceeded the guard's bound. The verdict is Deny with
// ReasonTLSHelloInvalid whatever the destination, require_sni or the mode:
// what the guard could not read, an upstream server might read as any name.
func (p *Policy) CheckInvalidHello() (Verdict, Reason) {
	return enforce(p.mode, ReasonTLSHelloInvalid), ReasonTLSHelloInvalid
}
