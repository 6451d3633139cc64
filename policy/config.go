package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Modes.
const (
	ModeEnforce = "enforce" // deny what no rule allows
	ModeReport  = "report"  // let it through as Verdict Report and log it; never relaxes private ranges
)

// Rule actions.
const (
	ActionAllow = "allow" // the default: the rule's destinations are allowed
	ActionDeny  = "deny"  // the rule's destinations are denied with ReasonDeniedByRule, in every mode
)

// DefaultRanges is the deny_ranges keyword that expands to SpecialRanges.
const DefaultRanges = "default"

// Values of the ech key: what the guard does with a ClientHello carrying
// the encrypted_client_hello extension.
const (
	ECHAllow = "allow" // judge the outer SNI like any other (GREASE ECH looks the same as real ECH)
	ECHDeny  = "deny"  // refuse it: ech_refused
)

// Config is the policy section of the config file, as written. Compile
// validates it and turns it into a *Policy. The zero value compiles to an
// enforcing policy with no rules and no range checks (Compile does not apply
// file defaults; proxy/config does).
type Config struct {
	Mode        string   `yaml:"mode"`         // enforce | report; "" means enforce
	DenyRanges  []string `yaml:"deny_ranges"`  // CIDRs, single IPs, or "default"
	AllowRanges []string `yaml:"allow_ranges"` // exceptions carved out of DenyRanges
	RequireSNI  bool     `yaml:"require_sni"`  // tunnels to TLSPorts must send an SNI
	TLSPorts    []int    `yaml:"tls_ports"`    // tunnels to these ports must carry TLS
	// HTTPPorts are the in-line mode's HTTP ports: on a connection the
	// transparent listener takes for one of them, each request's Host
	// decides. A port is not both a TLS and an HTTP port.
	HTTPPorts []int  `yaml:"http_ports"`
	ECH       string `yaml:"ech"` // allow | deny; "" means allow
	// NAT64Prefixes are IPv6 prefixes (RFC 6052 lengths) whose embedded
	// IPv4 address is checked against the deny ranges too. 64:ff9b::/96
	// is checked whether listed or not.
	NAT64Prefixes []string `yaml:"nat64_prefixes"`
	// DefaultVia names the upstream proxy (a key of the config's
	// upstream_proxies) for every passing request whose rule names none,
	// report-mode requests no rule matched included; "" means direct.
	DefaultVia string           `yaml:"default_via"`
	Groups     map[string]Group `yaml:"groups"` // client groups by name
	Rules      []Rule           `yaml:"rules"`  // first match wins
}

// Group is a set of clients: a client belongs to it when its address is in
// CIDRs or its authenticated user name is in Users. Mode, when set, replaces
// the policy's mode for the group's clients; a client in several groups is
// in report mode only when every one of them is.
type Group struct {
	CIDRs []string `yaml:"cidrs"`
	Users []string `yaml:"users"`
	Mode  string   `yaml:"mode"` // enforce | report; "" means the policy's mode
}

// Rule allows (or, with Action deny, denies) clients of Groups, or any
// client when empty, to reach Hosts or CIDRs on Ports.
type Rule struct {
	Name        string   `yaml:"name"`         // required, unique
	Action      string   `yaml:"action"`       // allow | deny; "" means allow
	Groups      []string `yaml:"groups"`       // empty: any client
	Hosts       []string `yaml:"hosts"`        // "example.com" or "*.example.com"
	CIDRs       []string `yaml:"cidrs"`        // IP-literal destinations; for allow rules also exceptions to deny ranges
	Ports       []int    `yaml:"ports"`        // 1..65535; required for allow rules, omitted on a deny rule: every port
	AllowRanges []string `yaml:"allow_ranges"` // deny-range exceptions for this rule's destinations (allow rules only)
	DLP         string   `yaml:"dlp"`          // dlp profile for this rule's HTTP requests; "" = dlp.default_profile
	// Inspect terminates this rule's tunnels (TLS with a leaf from
	// tls_inspection's CA) so that their HTTP requests are checked like
	// forwarded ones.
	Inspect bool `yaml:"inspect"`
	// Methods and Paths narrow the HTTP requests the rule allows (forwarded,
	// or inside inspected tunnels); empty: any. They need Inspect.
	Methods []string `yaml:"methods"`
	Paths   []string `yaml:"paths"`
	// RequestHeadersAdd sets these request header fields (replacing any the
	// client sent), with {group}, {user}, {client}, {rule} and {host}
	// filled in. Needs Inspect.
	RequestHeadersAdd map[string]string `yaml:"request_headers_add"`
	// Via names the parent proxy (upstream_proxies) this rule's allowed
	// requests go through; "" = policy.default_via (allow rules only).
	Via string `yaml:"via"`
}

// FieldError is one validation error in a Config. Path is relative to the
// policy section, for example "rules[2].hosts[0]".
type FieldError struct {
	Path string
	Msg  string
}

// Error returns "path: message".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Policy is a compiled, immutable policy. It is safe for concurrent use; swap
// whole snapshots with Engine.Store.
type Policy struct {
	mode       string
	requireSNI bool
	ech        string
	tlsPorts   []uint16
	httpPorts  []uint16
	defaultVia string

	deny  prefixSet
	allow prefixSet
	nat64 []netip.Prefix // operator NAT64 prefixes besides the well-known one (EmbeddedIPv4)

	groups []group
	rules  []rule

	exact     map[string][]int32 // normalized host -> sorted rule indexes
	wildcard  map[string][]int32 // suffix of "*.suffix" -> sorted rule indexes
	cidrRules []cidrEntry        // in rule order
}

type group struct {
	name  string
	mode  string // effective: the group's own, or the policy's
	cidrs []netip.Prefix
	users map[string]struct{}
}

type rule struct {
	name    string
	deny    bool
	dlp     string
	inspect bool
	via     string    // "" = the policy's defaultVia
	http    *HTTPRule // nil: no methods, paths or headers
	groups  []int
	ports   []uint16       // sorted; empty on a deny rule means every port
	allow   []netip.Prefix // allow_ranges and cidrs: exceptions to the deny ranges
}

type cidrEntry struct {
	prefix netip.Prefix
	rule   int32
}

type compiler struct {
	errs []error
}

func (c *compiler) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Compile validates c and builds a Policy. The error joins one *FieldError per
// problem found (errors.Join), so every mistake is reported at once.
func Compile(c Config) (*Policy, error) {
	var cc compiler
	p := &Policy{
		mode:       c.Mode,
		requireSNI: c.RequireSNI,
		defaultVia: c.DefaultVia,
		exact:      make(map[string][]int32),
		wildcard:   make(map[string][]int32),
	}
	switch c.Mode {
	case "":
		p.mode = ModeEnforce
	case ModeEnforce, ModeReport:
	default:
		cc.errorf("mode", "%q: must be enforce or report", c.Mode)
	}
	switch c.ECH {
	case "":
		p.ech = ECHAllow
	case ECHAllow, ECHDeny:
		p.ech = c.ECH
	default:
		cc.errorf("ech", "%q: must be allow or deny", c.ECH)
	}
	p.tlsPorts = cc.ports("tls_ports", c.TLSPorts, false)
	p.httpPorts = cc.ports("http_ports", c.HTTPPorts, false)
	for i, v := range c.HTTPPorts {
		if v >= 1 && v <= 65535 && p.IsTLSPort(uint16(v)) {
			cc.errorf(fmt.Sprintf("http_ports[%d]", i), "%d: also in tls_ports; a port is either TLS (the SNI decides) or HTTP (the Host decides)", v)
		}
	}
	p.nat64 = cc.nat64Prefixes(c.NAT64Prefixes)

	var deny, allow []netip.Prefix
	for i, s := range c.DenyRanges {
		if s == DefaultRanges {
			deny = append(deny, SpecialRanges()...)
			continue
		}
		if pr, ok := cc.prefix(fmt.Sprintf("deny_ranges[%d]", i), s); ok {
			deny = append(deny, pr)
		}
	}
	for i, s := range c.AllowRanges {
		if pr, ok := cc.prefix(fmt.Sprintf("allow_ranges[%d]", i), s); ok {
			allow = append(allow, pr)
		}
	}
	p.deny = newPrefixSet(deny)
	p.allow = newPrefixSet(allow)
	for i, pr := range allow {
		path := fmt.Sprintf("allow_ranges[%d]", i)
		cc.checkException(path, pr, p.deny)
		cc.checkNAT64Exception(path, pr, p.nat64)
	}

	groupIndex := make(map[string]int, len(c.Groups))
	names := make([]string, 0, len(c.Groups))
	for name := range c.Groups {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		g := c.Groups[name]
		path := "groups." + name
		if name == "" {
			cc.errorf(path, "group name must not be empty")
		}
		cg := group{name: name, mode: p.mode, users: make(map[string]struct{}, len(g.Users))}
		switch g.Mode {
		case "":
		case ModeEnforce, ModeReport:
			cg.mode = g.Mode
		default:
			cc.errorf(path+".mode", "%q: must be enforce or report", g.Mode)
		}
		for i, s := range g.CIDRs {
			if pr, ok := cc.prefix(fmt.Sprintf("%s.cidrs[%d]", path, i), s); ok {
				cg.cidrs = append(cg.cidrs, pr)
			}
		}
		for i, u := range g.Users {
			if u == "" {
				cc.errorf(fmt.Sprintf("%s.users[%d]", path, i), "user name must not be empty")
			}
			cg.users[u] = struct{}{}
		}
		groupIndex[name] = len(p.groups)
		p.groups = append(p.groups, cg)
	}

	seen := make(map[string]int, len(c.Rules))
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		idx := int32(i)
		cr := rule{name: r.Name, dlp: r.DLP, via: r.Via}
		switch r.Action {
		case "", ActionAllow:
		case ActionDeny:
			cr.deny = true
		default:
			cc.errorf(path+".action", "%q: must be allow or deny", r.Action)
		}
		switch prev, dup := seen[r.Name]; {
		case r.Name == "":
			cc.errorf(path+".name", "required")
		case dup:
			cc.errorf(path+".name", "%q: duplicate rule name (also rules[%d])", r.Name, prev)
		default:
			seen[r.Name] = i
		}
		for j, g := range r.Groups {
			gi, ok := groupIndex[g]
			if !ok {
				cc.errorf(fmt.Sprintf("%s.groups[%d]", path, j), "%q: no such group", g)
				continue
			}
			if !slices.Contains(cr.groups, gi) {
				cr.groups = append(cr.groups, gi)
			}
		}
		if len(r.Hosts) == 0 && len(r.CIDRs) == 0 {
			cc.errorf(path, "rule matches nothing: set hosts or cidrs")
		}
		for j, s := range r.Hosts {
			hp, err := ParseHostPattern(s)
			if err != nil {
				cc.errorf(fmt.Sprintf("%s.hosts[%d]", path, j), "%q: %v", s, err)
				continue
			}
			m := p.exact
			if hp.Wildcard {
				m = p.wildcard
			}
			if l := m[hp.Name]; len(l) == 0 || l[len(l)-1] != idx {
				m[hp.Name] = append(l, idx)
			}
		}
		for j, s := range r.CIDRs {
			jp := fmt.Sprintf("%s.cidrs[%d]", path, j)
			if pr, ok := cc.prefix(jp, s); ok {
				cc.checkNAT64Exception(jp, pr, p.nat64)
				p.cidrRules = append(p.cidrRules, cidrEntry{prefix: pr, rule: idx})
				if !cr.deny {
					cr.allow = append(cr.allow, pr)
				}
			}
		}
		if cr.deny && r.Via != "" {
			cc.errorf(path+".via", "a deny rule sends nothing anywhere: via belongs on allow rules")
		}
		if cr.deny && len(r.AllowRanges) > 0 {
			cc.errorf(path+".allow_ranges", "a deny rule allows nothing: allow_ranges belong on allow rules")
		}
		for j, s := range r.AllowRanges {
			jp := fmt.Sprintf("%s.allow_ranges[%d]", path, j)
			if pr, ok := cc.prefix(jp, s); ok {
				cc.checkException(jp, pr, p.deny)
				cc.checkNAT64Exception(jp, pr, p.nat64)
				cr.allow = append(cr.allow, pr)
			}
		}
		cr.ports = cc.ports(path+".ports", r.Ports, !cr.deny)
		cr.inspect = r.Inspect
		cr.http = cc.httpRule(path, r)
		switch {
		case cr.deny && r.Inspect:
			cc.errorf(path+".inspect", "a deny rule lets nothing through to inspect")
		case cr.deny && cr.http != nil:
			cc.errorf(path, "a deny rule allows nothing: methods, paths and request_headers_add belong on allow rules")
		case cr.http != nil && !r.Inspect:
			cc.errorf(path+".inspect", "methods, paths and request_headers_add need inspect: true (without it the rule's tunnels are opaque, and they could not be checked there)")
		}
		p.rules = append(p.rules, cr)
	}
	if len(cc.errs) > 0 {
		return nil, errors.Join(cc.errs...)
	}
	return p, nil
}

func (c *compiler) ports(path string, in []int, required bool) []uint16 {
	if required && len(in) == 0 {
		c.errorf(path, "required: list at least one port")
	}
	out := make([]uint16, 0, len(in))
	for i, v := range in {
		if v < 1 || v > 65535 {
			c.errorf(fmt.Sprintf("%s[%d]", path, i), "%d: port must be 1..65535", v)
			continue
		}
		out = append(out, uint16(v))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (c *compiler) prefix(path, s string) (netip.Prefix, bool) {
	p, err := ParsePrefix(s)
	if err != nil {
		c.errorf(path, "%q: %v", s, err)
		return netip.Prefix{}, false
	}
	return p, true
}

// checkException rejects allow entries that cannot change a decision: ones
// outside every deny range, and ones equal to a deny range (a tie is denied).
func (c *compiler) checkException(path string, p netip.Prefix, deny prefixSet) {
	if deny.has(p) {
		c.errorf(path, "%s: equals a deny range, and a tie is denied: use a more specific prefix", p)
		return
	}
	if !deny.overlaps(p) {
		c.errorf(path, "%s: not inside any deny range, so it has no effect", p)
	}
}

// nat64Prefixes parses nat64_prefixes: IPv6 prefixes of an RFC 6052 length
// (section 2.2). The well-known prefix is dropped: EmbeddedIPv4 always
// unwraps it.
func (c *compiler) nat64Prefixes(in []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range in {
		path := fmt.Sprintf("nat64_prefixes[%d]", i)
		pr, ok := c.prefix(path, s)
		switch {
		case !ok:
		case !pr.Addr().Is6() || pr.Addr().Is4In6():
			c.errorf(path, "%q: a NAT64 prefix is IPv6", s)
		case !slices.Contains(nat64Lengths, pr.Bits()):
			c.errorf(path, "%q: a NAT64 prefix is /32, /40, /48, /56, /64 or /96 (RFC 6052)", s)
		case pr != prefixNAT64 && !slices.Contains(out, pr):
			out = append(out, pr)
		}
	}
	return out
}

// checkNAT64Exception rejects an allow entry that opens part of the NAT64
// local-use prefix 64:ff9b:1::/48 (RFC 8215) without a nat64_prefixes
// entry there: the IPv4 address inside such an address could be anything,
// the metadata address included, and only a declared prefix says where it
// sits.
func (c *compiler) checkNAT64Exception(path string, p netip.Prefix, nat64 []netip.Prefix) {
	if !p.Overlaps(prefixNAT64Local) {
		return
	}
	for _, n := range nat64 {
		if n.Overlaps(p) {
			return
		}
	}
	c.errorf(path, "%s: inside the NAT64 local-use prefix %s (RFC 8215): list your NAT64 prefix in policy.nat64_prefixes, so the IPv4 address inside is checked against the deny ranges", p, prefixNAT64Local)
}

// ParsePrefix parses a CIDR or a single IP (as a /32 or /128). Zones and
// prefixes with host bits set are rejected; IPv4-mapped IPv6 prefixes stay
// IPv6 (::ffff:0:0/96 never turns into 0.0.0.0/0).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR or IP address")
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not a CIDR or IP address")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("host bits set: did you mean %s", m)
	}
	return p, nil
}
