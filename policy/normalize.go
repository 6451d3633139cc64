package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// maxHostLen is the longest DNS name in presentation form, without the trailing dot.
const maxHostLen = 253

// Normalization errors. Every error NormalizeHost returns wraps ErrBadHost.
var (
	ErrBadHost = errors.New("invalid host")

	errEmptyHost  = fmt.Errorf("%w: empty", ErrBadHost)
	errZone       = fmt.Errorf("%w: IPv6 zone not allowed", ErrBadHost)
	errBadIPv6    = fmt.Errorf("%w: bad IPv6 literal", ErrBadHost)
	errBadIPv4    = fmt.Errorf("%w: ends in a number but is not an IPv4 address", ErrBadHost)
	errTooLong    = fmt.Errorf("%w: longer than 253 characters", ErrBadHost)
	errEmptyLabel = fmt.Errorf("%w: empty label", ErrBadHost)
	errBrackets   = fmt.Errorf("%w: brackets only allowed around IPv6", ErrBadHost)
)

// idnaProfile maps names the way a lookup does (UTS #46 non-transitional,
// STD3 rules, hyphen and joiner checks, Bidi rule, DNS length limits).
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.VerifyDNSLength(true),
)

// NormalizeHost turns a raw destination host into its canonical form.
//
// Names are lowercased, lose one trailing dot and are converted to punycode;
// names that are not valid IDNA lookups (empty labels, bad characters, labels
// over 63 or names over 253 octets) are rejected. IP literals are accepted in
// every spelling inet_aton(3) accepts (2852039166, 0xa9fea9fe,
// 0251.0376.0251.0376, 127.1) and as IPv6 with or without brackets; zones are
// rejected, and IPv4-mapped IPv6 becomes its IPv4 address. A name whose last label is a
// number but that is not an IPv4 address is rejected rather than resolved.
// For an IP, host is the canonical text of addr.
//
// The common case (a lowercase ASCII name or a canonical IP) does not allocate.
func NormalizeHost(raw string) (host string, addr netip.Addr, isIP bool, err error) {
	if raw == "" {
		return "", netip.Addr{}, false, errEmptyHost
	}
	if raw[0] == '[' {
		if len(raw) < 2 || raw[len(raw)-1] != ']' {
			return "", netip.Addr{}, false, errBrackets
		}
		inner := raw[1 : len(raw)-1]
		if !strings.Contains(inner, ":") {
			return "", netip.Addr{}, false, errBrackets
		}
		return normalizeIPv6(inner)
	}
	if strings.IndexByte(raw, ':') >= 0 {
		return normalizeIPv6(raw)
	}
	if len(raw) > 1 && raw[len(raw)-1] == '.' {
		raw = raw[:len(raw)-1]
	}
	switch asciiClass(raw) {
	case classLower:
		return normalizeASCII(raw)
	case classUpper:
		return normalizeASCII(strings.ToLower(raw))
	}
	mapped, err := idnaProfile.ToASCII(raw)
	if err != nil {
		return "", netip.Addr{}, false, fmt.Errorf("%w: %q: %v", ErrBadHost, raw, err)
	}
	if len(mapped) > 1 && mapped[len(mapped)-1] == '.' {
		mapped = mapped[:len(mapped)-1]
	}
	// Mapping can produce an IP (fullwidth digits and dots), so check again.
	if asciiClass(mapped) != classLower {
		return "", netip.Addr{}, false, fmt.Errorf("%w: %q", ErrBadHost, raw)
	}
	return normalizeASCII(mapped)
}

type charClass uint8

const (
	classLower charClass = iota // only a-z 0-9 - .
	classUpper                  // also A-Z
	classOther                  // anything else: needs IDNA mapping or is invalid
)

func asciiClass(s string) charClass {
	c := classLower
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9', b == '-', b == '.':
		case b >= 'A' && b <= 'Z':
			c = classUpper
		default:
			return classOther
		}
	}
	return c
}

// normalizeASCII handles a lowercase name of [a-z0-9.-] without a trailing dot.
func normalizeASCII(s string) (string, netip.Addr, bool, error) {
	if s == "" || s == "." {
		return "", netip.Addr{}, false, errEmptyHost
	}
	if endsInNumber(s) {
		a, ok := parseIPv4(s)
		if !ok {
			return "", netip.Addr{}, false, errBadIPv4
		}
		return canonicalIP(s, a), a, true, nil
	}
	if len(s) > maxHostLen {
		return "", netip.Addr{}, false, errTooLong
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			continue
		}
		if err := checkLabel(s[start:i]); err != nil {
			return "", netip.Addr{}, false, err
		}
		start = i + 1
	}
	return s, netip.Addr{}, false, nil
}

// checkLabel validates one lowercase ASCII label. Labels that are, or look
// like, punycode go through IDNA so that invalid A-labels are rejected.
func checkLabel(l string) error {
	switch {
	case l == "":
		return errEmptyLabel
	case len(l) > 63:
		return fmt.Errorf("%w: label longer than 63 characters", ErrBadHost)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("%w: label %q starts or ends with a hyphen", ErrBadHost, l)
	case len(l) >= 4 && l[2] == '-' && l[3] == '-':
		if !strings.HasPrefix(l, "xn--") {
			return fmt.Errorf("%w: label %q has hyphens in the third and fourth positions", ErrBadHost, l)
		}
		u, err := idnaProfile.ToUnicode(l)
		if err != nil {
			return fmt.Errorf("%w: label %q: bad punycode", ErrBadHost, l)
		}
		if a, err := idnaProfile.ToASCII(u); err != nil || a != l {
			return fmt.Errorf("%w: label %q: bad punycode", ErrBadHost, l)
		}
	}
	return nil
}

func normalizeIPv6(s string) (string, netip.Addr, bool, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return "", netip.Addr{}, false, errZone
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return "", netip.Addr{}, false, errBadIPv6
	}
	if a.Is4In6() {
		// An IPv4-mapped literal is the IPv4 address on the wire (the
		// kernel dials it over IPv4), so it is that address for matching
		// and range checks too.
		a = a.Unmap()
		return a.String(), a, true, nil
	}
	return canonicalIP(s, a), a, true, nil
}

// canonicalIP returns raw when it already is the canonical text of a, so the
// common case does not allocate.
func canonicalIP(raw string, a netip.Addr) string {
	var buf [64]byte
	if string(a.AppendTo(buf[:0])) == raw {
		return raw
	}
	return a.String()
}

// endsInNumber reports whether the last label is a decimal or 0x-hex number,
// which makes the whole host an IPv4 literal (as in the WHATWG URL standard).
func endsInNumber(s string) bool {
	last := s[strings.LastIndexByte(s, '.')+1:]
	if last == "" {
		return false
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		for i := 2; i < len(last); i++ {
			if !isHex(last[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

// parseIPv4 parses s the way inet_aton(3) does: one to four parts, each
// decimal, octal (leading 0) or hex (0x); the last part fills the remaining bytes.
func parseIPv4(s string) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for {
		if n == 4 {
			return netip.Addr{}, false
		}
		i := strings.IndexByte(s, '.')
		part := s
		if i >= 0 {
			part = s[:i]
		}
		v, ok := parseIPv4Part(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	lastBits := 32 - 8*(n-1)
	if parts[n-1] >= 1<<lastBits {
		return netip.Addr{}, false
	}
	v |= parts[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func parseIPv4Part(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is zero, as in inet_aton and WHATWG
		}
	case len(p) >= 2 && p[0] == '0':
		base, p = 8, p[1:]
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		c := p[i]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}
