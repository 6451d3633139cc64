package policy

import (
	"net/netip"
	"slices"
)

// MatchResult is the outcome of matching a Request against the rules, before
// mode, DNS and ranges are applied.
type MatchResult struct {
	Host     string     // normalized host ("" when Err is set)
	Addr     netip.Addr // the address when IsIP
	IsIP     bool       // Host is an IP literal
	Rule     int        // index of the deciding rule (allow or deny), -1 when none
	RuleName string     // name of the deciding rule
	Group    string     // group through which the rule applied; otherwise the group Mode comes from ("" when none)
	Mode     string     // the client's mode: ModeEnforce or ModeReport
	Reason   Reason     // "" (a rule allows it), ReasonDeniedByRule, ReasonNotAllowed or ReasonPortNotAllowed
	// HostRule is, with ReasonPortNotAllowed, the first allow rule for
	// this client that matched the host on other ports; -1 otherwise.
	HostRule int
	Err      error // the host could not be normalized (Reason is ReasonNotAllowed)
}

// Match finds the first rule (lowest index) that matches r: an allow rule
// allows it, a deny rule denies it with ReasonDeniedByRule. It normalizes
// r.Host, does no DNS, and does not allocate for normalized ASCII hosts and
// canonical IPs. Its cost depends on the number of labels in the host and the
// rules sharing a pattern, not on the number of rules.
//
// When no rule matches r, Reason is ReasonPortNotAllowed if some allow rule
// for this client matches the host (or IP) on other ports, else
// ReasonNotAllowed.
func (p *Policy) Match(r Request) MatchResult {
	client := r.Client
	client.Addr = client.Addr.Unmap()
	mode, modeGroup := p.clientMode(client)
	host, addr, isIP, err := NormalizeHost(r.Host)
	if err != nil {
		return MatchResult{Rule: -1, HostRule: -1, Reason: ReasonNotAllowed, Err: err, Mode: mode, Group: modeGroup}
	}
	m := MatchResult{Host: host, Addr: addr, IsIP: isIP, Rule: -1, HostRule: -1, Mode: mode, Group: modeGroup}
	ms := matchState{p: p, client: client, port: r.Port, best: -1, hostRule: -1}
	if isIP {
		ms.ip(addr)
		if addr.Is4In6() {
			ms.ip(addr.Unmap())
		}
	} else {
		ms.consider(p.exact[host])
		for i := 0; i < len(host); i++ {
			if host[i] == '.' {
				ms.consider(p.wildcard[host[i+1:]])
			}
		}
	}
	switch {
	case ms.best >= 0:
		m.Rule, m.RuleName = ms.best, p.rules[ms.best].name
		if ms.group != "" {
			m.Group = ms.group
		}
		if p.rules[ms.best].deny {
			m.Reason = ReasonDeniedByRule
		}
	case ms.hostMatched:
		m.Reason = ReasonPortNotAllowed
		m.HostRule = ms.hostRule
	default:
		m.Reason = ReasonNotAllowed
	}
	return m
}

type matchState struct {
	p           *Policy
	client      Client
	port        uint16
	best        int
	group       string
	hostMatched bool
	hostRule    int // the lowest allow rule that matched the host on other ports
}

// consider looks at the rules (sorted indexes) whose pattern matched the host.
func (ms *matchState) consider(rules []int32) {
	for _, ri := range rules {
		if ms.best >= 0 && int(ri) >= ms.best {
			return
		}
		ms.try(int(ri))
	}
}

func (ms *matchState) ip(a netip.Addr) {
	for _, e := range ms.p.cidrRules {
		if ms.best >= 0 && int(e.rule) >= ms.best {
			return
		}
		if e.prefix.Contains(a) {
			ms.try(int(e.rule))
		}
	}
}

// try records rule i if it applies to the client and covers the port. Rules
// arrive in increasing order per list, so the first hit of a list is its best.
// Only allow rules make a port mismatch port_not_allowed.
func (ms *matchState) try(i int) bool {
	r := &ms.p.rules[i]
	g, ok := ms.p.applies(r, ms.client)
	if !ok {
		return false
	}
	if r.deny {
		if len(r.ports) > 0 {
			if _, found := slices.BinarySearch(r.ports, ms.port); !found {
				return false
			}
		}
	} else {
		ms.hostMatched = true
		if _, found := slices.BinarySearch(r.ports, ms.port); !found {
			if ms.hostRule < 0 || i < ms.hostRule {
				ms.hostRule = i
			}
			return false
		}
	}
	if ms.best < 0 || i < ms.best {
		ms.best, ms.group = i, g
	}
	return true
}

// applies reports whether rule r covers client c, and through which group.
func (p *Policy) applies(r *rule, c Client) (string, bool) {
	if len(r.groups) == 0 {
		return "", true
	}
	for _, gi := range r.groups {
		g := &p.groups[gi]
		if g.contains(c) {
			return g.name, true
		}
	}
	return "", false
}

func (g *group) contains(c Client) bool {
	if c.User != "" {
		if _, ok := g.users[c.User]; ok {
			return true
		}
	}
	if c.Addr.IsValid() {
		for _, pr := range g.cidrs {
			if pr.Contains(c.Addr) {
				return true
			}
		}
	}
	return false
}

// clientMode returns the mode for client c (its address already unmapped)
// and the group it comes from: the first enforcing group c is in (groups are
// sorted by name), else the first of its groups, all in report mode; a client
// in no group has the policy's mode.
func (p *Policy) clientMode(c Client) (mode, group string) {
	first := -1
	for i := range p.groups {
		g := &p.groups[i]
		if !g.contains(c) {
			continue
		}
		if g.mode != ModeReport {
			return ModeEnforce, g.name
		}
		if first < 0 {
			first = i
		}
	}
	if first >= 0 {
		return ModeReport, p.groups[first].name
	}
	return p.mode, ""
}

// ClientMode returns the mode that applies to client c and the group it
// comes from, as Decide records them when no group rule applied (see
// Decision.Mode and Decision.Group).
func (p *Policy) ClientMode(c Client) (mode, group string) {
	c.Addr = c.Addr.Unmap()
	return p.clientMode(c)
}

// Groups returns the names of the groups client c belongs to, sorted.
func (p *Policy) Groups(c Client) []string {
	c.Addr = c.Addr.Unmap()
	var out []string
	for i := range p.groups {
		if p.groups[i].contains(c) {
			out = append(out, p.groups[i].name)
		}
	}
	return out
}
