package policy

import (
	"context"
	"net/netip"
)

// Listener names the front end a request arrived on. The values are wire
// tokens: they appear in the access log and as metric labels.
type Listener string

// Front ends.
const (
	ListenerHTTP    Listener = "http"
	ListenerConnect Listener = "connect"
	ListenerSOCKS5  Listener = "socks5"
	// ListenerTransparent is the in-line mode: connections nftables
	// redirected, decided by their SNI, Host or original destination.
	ListenerTransparent Listener = "transparent"
	ListenerCheck       Listener = "check" // egressd check
)

// Verdict is the outcome of a decision.
type Verdict uint8

// Verdicts. The zero value denies: a Decision that was never filled in fails closed.
const (
	Deny   Verdict = iota // refuse
	Allow                 // a rule allowed it
	Report                // policy would deny, but mode is report: let it through and log
)

// String returns the wire token used in the access log (deny|allow|report).
func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Report:
		return "report"
	default:
		return "deny"
	}
}

// Passes reports whether traffic may flow under this verdict.
func (v Verdict) Passes() bool { return v == Allow || v == Report }

// Reason is a contract token explaining a denial (or, with Report, the denial
// that report mode waived). The empty reason means allowed by a rule.
type Reason string

// Contract reasons: other tools parse these from logs and the X-Egress-Denied header.
const (
	ReasonNone             Reason = ""
	ReasonNotAllowed       Reason = "not_allowed"
	ReasonPortNotAllowed   Reason = "port_not_allowed"
	ReasonDeniedByRule     Reason = "denied_by_rule" // a rule with action: deny matched first
	ReasonPrivateRange     Reason = "private_range"
	ReasonSNIMismatch      Reason = "sni_mismatch"
	ReasonSNIMissing       Reason = "sni_missing"
	ReasonTLSHelloInvalid  Reason = "tls_hello_invalid" // a ClientHello that could not be read whole, parsed, or within the bound
	ReasonECHRefused       Reason = "ech_refused"       // an Encrypted Client Hello under policy.ech: deny
	ReasonProtocolMismatch Reason = "protocol_mismatch"
	ReasonAuthRequired     Reason = "auth_required"
	ReasonDLP              Reason = "dlp"
	// ReasonHostMismatch: a request inside an inspected tunnel whose Host
	// names another host than the tunnel's SNI (domain fronting).
	ReasonHostMismatch Reason = "host_mismatch"
	// ReasonUpstreamTLS: the origin of an inspected tunnel did not present
	// a certificate valid for the name (or its TLS handshake failed); the
	// client gets 502, never the origin's answer.
	ReasonUpstreamTLS Reason = "upstream_tls"
)

// Failure reasons: not denials, but why an allowed request could not be served.
// They appear in the access log's reason field and the metrics' reason label.
const (
	ReasonBadRequest Reason = "bad_request" // malformed destination
	ReasonDNSError   Reason = "dns_error"   // the name did not resolve
	ReasonDialError  Reason = "dial_error"  // no pinned address answered
	// ReasonUpstreamProxy: the parent proxy of a rule's via could not be
	// reached (no URL accepted the connection) or refused the request.
	ReasonUpstreamProxy Reason = "upstream_proxy"
	ReasonLimit         Reason = "limit" // a connection limit refused it
	// ReasonDLPUnavailable: a DLP inspector (the ICAP service) could not
	// judge the request and dlp.icap.failure is closed (503).
	ReasonDLPUnavailable Reason = "dlp_unavailable"
	ReasonTimeout        Reason = "timeout" // a forwarded request stalled past timeouts.idle
)

// DenyReasons lists every contract denial reason, in documentation order.
var DenyReasons = []Reason{
	ReasonNotAllowed, ReasonPortNotAllowed, ReasonDeniedByRule, ReasonPrivateRange, ReasonSNIMismatch,
	ReasonSNIMissing, ReasonTLSHelloInvalid, ReasonECHRefused, ReasonProtocolMismatch, ReasonAuthRequired, ReasonDLP,
	ReasonHostMismatch, ReasonUpstreamTLS,
}

// Client identifies who is asking.
type Client struct {
	Addr netip.Addr // source address (from the socket, or a trusted PROXY header)
	User string     // authenticated user name, "" when anonymous
}

// Request is one destination a client asks for, exactly as received. The
// policy package owns normalization, so front ends pass raw strings.
type Request struct {
	Listener Listener
	Client   Client
	Host     string // raw host: a name, an IP literal in any spelling, with or without brackets
	Port     uint16
}

// Decision is the policy's answer for one Request.
type Decision struct {
	Verdict Verdict
	Reason  Reason           // "" when allowed by a rule
	Rule    string           // matched rule name (an allow rule, or the deny rule that denied it), "" when none matched
	DLP     string           // the matched rule's dlp profile, "" when it names none
	Inspect bool             // the matched rule has inspect: its tunnels are terminated and their HTTP requests checked
	HTTP    *HTTPRule        // the matched rule's methods, paths and request_headers_add; nil when it has none
	Group   string           // the group the rule applied through; otherwise the client's group whose mode applied ("" when in none)
	Mode    string           // the client's mode, ModeEnforce or ModeReport; "" means the policy's
	Host    string           // normalized host (punycode, lowercase, no trailing dot; IPs in canonical form)
	IsIP    bool             // Host is an IP literal
	Port    uint16           //
	Addrs   []netip.AddrPort // pinned, range-checked addresses to dial; empty when Verdict is Deny or Via is set
	// Via names the upstream proxy (a key of upstream_proxies) that
	// carries a passing request instead of a direct dial: the rule's via,
	// else policy.default_via. With Via the host is not resolved (the
	// parent resolves it) and Addrs is empty; "" means direct.
	Via    string
	Policy *Policy // the snapshot this decision was made with (SNI checks use it too)
}

// Resolver looks up the addresses of a host name. cache.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// Decider is the one decision path shared by every front end and `egressd check`.
// An error means no decision could be made (DNS failure); it is never a denial.
type Decider interface {
	Decide(ctx context.Context, r Request) (Decision, error)
}
