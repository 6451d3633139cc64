package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
)

// Engine is the Decider shared by every front end. It holds the current
// policy snapshot, which Store swaps atomically on reload.
type Engine struct {
	current  atomic.Pointer[Policy]
	resolver Resolver
}

var _ Decider = (*Engine)(nil)

// NewEngine returns an Engine deciding with p and resolving names with r.
// A nil p denies everything until Store is called; a nil r makes every
// name lookup fail with ReasonDNSError.
func NewEngine(p *Policy, r Resolver) *Engine {
	e := &Engine{resolver: r}
	e.current.Store(p)
	return e
}

// Load returns the current snapshot (nil if none was stored).
func (e *Engine) Load() *Policy { return e.current.Load() }

// Store replaces the snapshot. Requests already deciding keep the old one.
func (e *Engine) Store(p *Policy) { e.current.Store(p) }

var (
	errNoPolicy   = errors.New("no policy loaded")
	errNoResolver = errors.New("no resolver configured")
	errNoAddrs    = errors.New("no addresses")
)

// Decide makes the decision for r with one policy snapshot:
//
//  1. normalize the host; an unparseable host is Deny with ReasonNotAllowed
//     (nothing could ever allow it; the error is in MatchResult, not returned);
//  2. match rules, first match wins; a deny rule is Deny with
//     ReasonDeniedByRule in every mode; no match is not_allowed or
//     port_not_allowed, which the client's report mode turns into Verdict
//     Report (keeping the reason);
//  3. if there is something to dial, resolve the name (IP literals are not
//     resolved) and keep, in resolver order, the addresses that pass the range
//     check with the matched rule's exceptions;
//  4. if none pass, Deny with ReasonPrivateRange, in every mode.
//
// A passing request whose rule names an upstream proxy (via, else
// default_via) is not resolved: Decision.Via names the parent, which
// resolves the name and applies its own policy. An IP literal is still
// range-checked first (private_range), since the parent would dial it as
// given.
//
// A resolver failure returns a Decision with ReasonDNSError (Verdict Deny) and
// the wrapped error. Decide allocates only the Addrs slice for normalized hosts.
func (e *Engine) Decide(ctx context.Context, r Request) (Decision, error) {
	p := e.current.Load()
	if p == nil {
		return Decision{Reason: ReasonNotAllowed, Port: r.Port}, errNoPolicy
	}
	return p.decide(ctx, e.resolver, r)
}

func (p *Policy) decide(ctx context.Context, res Resolver, r Request) (Decision, error) {
	m := p.Match(r)
	d := Decision{
		Verdict: Allow,
		Reason:  m.Reason,
		Rule:    m.RuleName,
		DLP:     p.ruleDLP(m.Rule),
		Group:   m.Group,
		Mode:    m.Mode,
		Host:    m.Host,
		IsIP:    m.IsIP,
		Port:    r.Port,
		Policy:  p,
	}
	if m.Rule >= 0 && !p.rules[m.Rule].deny {
		d.Inspect, d.HTTP = p.rules[m.Rule].inspect, p.rules[m.Rule].http
	}
	if m.Err != nil || r.Port == 0 {
		d.Verdict, d.Reason = Deny, ReasonNotAllowed
		return d, nil
	}
	if m.Reason != ReasonNone {
		d.Verdict = enforce(m.Mode, m.Reason)
		if d.Verdict == Deny {
			return d, nil
		}
	}
	via := p.via(m.Rule)
	if m.Reason == ReasonPortNotAllowed {
		// Report mode: the host is one a rule sends through its parent
		// (a name only the parent may resolve), on a port it does not list.
		via = p.via(m.HostRule)
	}
	if m.IsIP {
		if !p.AddrAllowed(m.Addr, m.Rule) {
			d.Verdict, d.Reason = Deny, ReasonPrivateRange
			return d, nil
		}
		if via != "" {
			d.Via = via
			return d, nil
		}
		d.Addrs = []netip.AddrPort{netip.AddrPortFrom(m.Addr, r.Port)}
		return d, nil
	}
	if via != "" {
		d.Via = via
		return d, nil
	}
	if res == nil {
		d.Verdict, d.Reason = Deny, ReasonDNSError
		return d, fmt.Errorf("resolve %s: %w", m.Host, errNoResolver)
	}
	addrs, err := res.LookupNetIP(ctx, m.Host)
	if err == nil && len(addrs) == 0 {
		err = errNoAddrs
	}
	if err != nil {
		d.Verdict, d.Reason = Deny, ReasonDNSError
		return d, fmt.Errorf("resolve %s: %w", m.Host, err)
	}
	// Check each address once; remember the verdicts of the first few.
	var passed [32]bool
	n := 0
	for i, a := range addrs {
		// net.Resolver returns A records as IPv4-mapped IPv6; the record is IPv4.
		ok := p.AddrAllowed(a.Unmap(), m.Rule)
		if i < len(passed) {
			passed[i] = ok
		}
		if ok {
			n++
		}
	}
	if n == 0 {
		d.Verdict, d.Reason = Deny, ReasonPrivateRange
		return d, nil
	}
	d.Addrs = make([]netip.AddrPort, 0, n)
	for i, a := range addrs {
		a = a.Unmap()
		ok := i < len(passed) && passed[i] || i >= len(passed) && p.AddrAllowed(a, m.Rule)
		if !ok {
			continue
		}
		if ap := netip.AddrPortFrom(a, r.Port); !slices.Contains(d.Addrs, ap) {
			d.Addrs = append(d.Addrs, ap)
		}
	}
	return d, nil
}

// waivable lists the reasons report mode turns into Verdict Report.
// private_range, denied_by_rule, tls_hello_invalid, auth_required, dlp,
// upstream_tls and the failure reasons always deny.
func waivable(r Reason) bool {
	switch r {
	case ReasonNotAllowed, ReasonPortNotAllowed, ReasonSNIMismatch, ReasonSNIMissing, ReasonECHRefused, ReasonProtocolMismatch,
		ReasonHostMismatch:
		return true
	}
	return false
}

// enforce is the one place report mode acts: it maps a denial reason to the
// verdict under mode.
func enforce(mode string, r Reason) Verdict {
	switch {
	case r == ReasonNone:
		return Allow
	case mode == ModeReport && waivable(r):
		return Report
	default:
		return Deny
	}
}

// Enforce returns the verdict for denial reason r under this policy's mode:
// Allow for ReasonNone, Report when the mode is report and r is a policy
// reason report mode waives, otherwise Deny.
func (p *Policy) Enforce(r Reason) Verdict { return enforce(p.mode, r) }

// Mode returns the policy's mode, ModeEnforce or ModeReport (groups may set
// their own).
func (p *Policy) Mode() string { return p.mode }

// modeOf returns the mode a later check of d (SNI, protocol) follows: the
// client's, recorded by Decide; a hand-made Decision without one has its
// policy's.
func modeOf(d Decision, p *Policy) string {
	if d.Mode != "" {
		return d.Mode
	}
	if p != nil {
		return p.mode
	}
	return ModeEnforce
}

// RequireSNI reports whether tunnels to TLS ports must send an SNI.
func (p *Policy) RequireSNI() bool { return p.requireSNI }

// IsTLSPort reports whether port is in tls_ports.
func (p *Policy) IsTLSPort(port uint16) bool {
	_, ok := slices.BinarySearch(p.tlsPorts, port)
	return ok
}

// IsHTTPPort reports whether port is in http_ports (the in-line mode's
// HTTP ports).
func (p *Policy) IsHTTPPort(port uint16) bool {
	_, ok := slices.BinarySearch(p.httpPorts, port)
	return ok
}

// TLSPorts returns the sorted tls_ports.
func (p *Policy) TLSPorts() []uint16 { return slices.Clone(p.tlsPorts) }

// RuleNames returns the rule names in order (for metric label sets).
func (p *Policy) RuleNames() []string {
	out := make([]string, len(p.rules))
	for i := range p.rules {
		out[i] = p.rules[i].name
	}
	return out
}

// via is the upstream proxy of a request decided by rule i (-1: no rule
// matched, report mode; with port_not_allowed, the rule that matched the
// host): the rule's via, else default_via.
func (p *Policy) via(i int) string {
	if i >= 0 && i < len(p.rules) && p.rules[i].via != "" {
		return p.rules[i].via
	}
	return p.defaultVia
}

// Vias returns the upstream proxy names the policy refers to (rules' via
// and default_via), each once, in order of first mention.
func (p *Policy) Vias() []string {
	var out []string
	add := func(v string) {
		if v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	add(p.defaultVia)
	for i := range p.rules {
		add(p.rules[i].via)
	}
	return out
}

// ruleDLP is rule i's dlp profile ("" for none or no rule).
func (p *Policy) ruleDLP(i int) string {
	if i < 0 || i >= len(p.rules) {
		return ""
	}
	return p.rules[i].dlp
}
