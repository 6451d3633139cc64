package policy

import (
	"net/netip"
	"slices"
)

// specialRanges is the built-in special-purpose list behind
// `deny_ranges: [default]`, drawn from the IANA IPv4 and IPv6
// Special-Purpose Address Registries plus multicast and reserved space.
var specialRanges = []netip.Prefix{
	// IPv4
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network" (RFC 791)
	netip.MustParsePrefix("10.0.0.0/8"),         // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),      // shared address space, CGNAT (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),        // loopback
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local, cloud metadata (RFC 3927)
	netip.MustParsePrefix("172.16.0.0/12"),      // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),       // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("192.0.2.0/24"),       // TEST-NET-1 (RFC 5737)
	netip.MustParsePrefix("192.31.196.0/24"),    // AS112-v4 (RFC 7535)
	netip.MustParsePrefix("192.52.193.0/24"),    // AMT (RFC 7450)
	netip.MustParsePrefix("192.88.99.0/24"),     // 6to4 relay anycast, deprecated (RFC 7526)
	netip.MustParsePrefix("192.168.0.0/16"),     // private (RFC 1918)
	netip.MustParsePrefix("192.175.48.0/24"),    // direct delegation AS112 (RFC 7534)
	netip.MustParsePrefix("198.18.0.0/15"),      // benchmarking (RFC 2544)
	netip.MustParsePrefix("198.51.100.0/24"),    // TEST-NET-2 (RFC 5737)
	netip.MustParsePrefix("203.0.113.0/24"),     // TEST-NET-3 (RFC 5737)
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast
	netip.MustParsePrefix("240.0.0.0/4"),        // reserved (RFC 1112)
	netip.MustParsePrefix("255.255.255.255/32"), // limited broadcast
	// IPv6
	netip.MustParsePrefix("::/128"),          // unspecified
	netip.MustParsePrefix("::1/128"),         // loopback
	netip.MustParsePrefix("::/96"),           // IPv4-compatible, deprecated (RFC 4291)
	netip.MustParsePrefix("::ffff:0:0/96"),   // IPv4-mapped
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated, SIIT (RFC 6145)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 well-known prefix (RFC 6052)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // NAT64 local use (RFC 8215)
	netip.MustParsePrefix("100::/64"),        // discard-only (RFC 6666)
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments, incl. Teredo 2001::/32 (RFC 2928)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation (RFC 3849)
	netip.MustParsePrefix("2002::/16"),       // 6to4 (RFC 3056)
	netip.MustParsePrefix("3fff::/20"),       // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),       // SRv6 SIDs (RFC 9602)
	netip.MustParsePrefix("fc00::/7"),        // unique local (RFC 4193)
	netip.MustParsePrefix("fe80::/10"),       // link-local
	netip.MustParsePrefix("fec0::/10"),       // site-local, deprecated (RFC 3879)
	netip.MustParsePrefix("ff00::/8"),        // multicast
}

// SpecialRanges returns a copy of the built-in special-purpose list that
// `deny_ranges: [default]` expands to.
func SpecialRanges() []netip.Prefix { return slices.Clone(specialRanges) }

// prefixSet answers "longest prefix in the set containing a" with one map
// lookup per prefix length present, without allocating.
type prefixSet struct {
	set    map[netip.Prefix]struct{}
	lens4  []int // prefix lengths present, longest first
	lens6  []int
	sorted []netip.Prefix
	// first4 and first6 mark the first address bytes any prefix covers, so
	// most public addresses are answered without a map lookup.
	first4, first6 [4]uint64
}

func (s *prefixSet) markFirst(p netip.Prefix) {
	bm := &s.first6
	if p.Addr().Is4() {
		bm = &s.first4
	}
	b := p.Addr().AsSlice()[0]
	n := 1
	if p.Bits() < 8 {
		n = 1 << (8 - p.Bits())
	}
	for i := int(b); i < int(b)+n && i < 256; i++ {
		bm[i/64] |= 1 << (i % 64)
	}
}

func (s *prefixSet) coversFirst(a netip.Addr) bool {
	bm := &s.first6
	var b byte
	if a.Is4() {
		bm = &s.first4
		b = a.As4()[0]
	} else {
		b = a.As16()[0]
	}
	return bm[b/64]&(1<<(b%64)) != 0
}

func newPrefixSet(ps []netip.Prefix) prefixSet {
	s := prefixSet{set: make(map[netip.Prefix]struct{}, len(ps))}
	for _, p := range ps {
		if _, dup := s.set[p]; dup {
			continue
		}
		s.set[p] = struct{}{}
		s.sorted = append(s.sorted, p)
		s.markFirst(p)
		lens := &s.lens6
		if p.Addr().Is4() {
			lens = &s.lens4
		}
		if !slices.Contains(*lens, p.Bits()) {
			*lens = append(*lens, p.Bits())
		}
	}
	slices.SortFunc(s.lens4, func(a, b int) int { return b - a })
	slices.SortFunc(s.lens6, func(a, b int) int { return b - a })
	return s
}

// longest returns the length of the longest prefix containing a, or -1.
func (s *prefixSet) longest(a netip.Addr) int {
	if !s.coversFirst(a) {
		return -1
	}
	lens := s.lens6
	if a.Is4() {
		lens = s.lens4
	}
	for _, l := range lens {
		p, err := a.Prefix(l)
		if err != nil {
			continue
		}
		if _, ok := s.set[p]; ok {
			return l
		}
	}
	return -1
}

func (s *prefixSet) has(p netip.Prefix) bool {
	_, ok := s.set[p]
	return ok
}

// overlaps reports whether p lies inside some (shorter) prefix of the set.
func (s *prefixSet) overlaps(p netip.Prefix) bool {
	for _, q := range s.sorted {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// denied applies the range rule to one address: the longest matching prefix
// between the deny ranges and the allow exceptions (global allow_ranges plus
// the extra prefixes) wins, and a tie is denied.
func (p *Policy) denied(a netip.Addr, extra []netip.Prefix) bool {
	d := p.deny.longest(a)
	if d < 0 {
		return false
	}
	al := p.allow.longest(a)
	for _, e := range extra {
		if e.Bits() > al && e.Contains(a) {
			al = e.Bits()
		}
	}
	return d >= al
}

// AddrAllowed reports whether a may be dialed for the rule with index rule
// (-1 for none: only the global allow_ranges apply). An IPv6 address that
// embeds an IPv4 address is denied when either of them is.
func (p *Policy) AddrAllowed(a netip.Addr, rule int) bool {
	var extra []netip.Prefix
	if rule >= 0 && rule < len(p.rules) {
		extra = p.rules[rule].allow
	}
	if !a.IsValid() || a.Zone() != "" || p.denied(a, extra) {
		return false
	}
	if v4, ok := EmbeddedIPv4(a); ok && p.denied(v4, extra) {
		return false
	}
	if a.Is6() {
		for _, n := range p.nat64 {
			if n.Contains(a) && p.denied(NAT64IPv4(a, n.Bits()), extra) {
				return false
			}
		}
	}
	return true
}

var (
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")
	prefixNAT64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	prefixSIIT       = netip.MustParsePrefix("::ffff:0:0:0/96")
	prefix6to4       = netip.MustParsePrefix("2002::/16")
	prefixTeredo     = netip.MustParsePrefix("2001::/32")
	prefixCompat     = netip.MustParsePrefix("::/96")
)

// nat64Lengths are the prefix lengths RFC 6052 section 2.2 defines.
var nat64Lengths = []int{32, 40, 48, 56, 64, 96}

// NAT64IPv4 returns the IPv4 address embedded in a by an RFC 6052 prefix of
// length bits (32, 40, 48, 56, 64 or 96; any other length gives the /96
// layout). The address fills the 32 bits after the prefix, skipping bits
// 64-71 (the "u" octet): with /40 it is bytes 5-7 and 9, with /48 bytes 6-7
// and 9-10, with /56 bytes 7 and 9-11, with /64 bytes 9-12.
func NAT64IPv4(a netip.Addr, bits int) netip.Addr {
	b := a.As16()
	var v4 [4]byte
	switch bits {
	case 32:
		copy(v4[:], b[4:8])
	case 40:
		v4 = [4]byte{b[5], b[6], b[7], b[9]}
	case 48:
		v4 = [4]byte{b[6], b[7], b[9], b[10]}
	case 56:
		v4 = [4]byte{b[7], b[9], b[10], b[11]}
	case 64:
		copy(v4[:], b[9:13])
	default:
		copy(v4[:], b[12:16])
	}
	return netip.AddrFrom4(v4)
}

// EmbeddedIPv4 returns the IPv4 address carried inside an IPv6 address:
// IPv4-mapped (::ffff:0:0/96), IPv4-translated (SIIT, ::ffff:0:0:0/96),
// IPv4-compatible (::/96 except :: and ::1), NAT64 (64:ff9b::/96), 6to4
// (2002::/16, bits 16-47) and Teredo (2001::/32, the client address in the
// last 32 bits, inverted). Operator NAT64 prefixes (nat64_prefixes) are
// unwrapped by AddrAllowed with NAT64IPv4.
func EmbeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	if a.Is4In6() {
		return a.Unmap(), true
	}
	b := a.As16()
	last := [4]byte{b[12], b[13], b[14], b[15]}
	switch {
	case prefixCompat.Contains(a):
		if last == [4]byte{} || last == [4]byte{0, 0, 0, 1} {
			return netip.Addr{}, false
		}
		return netip.AddrFrom4(last), true
	case prefixNAT64.Contains(a), prefixSIIT.Contains(a):
		return netip.AddrFrom4(last), true
	case prefix6to4.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case prefixTeredo.Contains(a):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}
