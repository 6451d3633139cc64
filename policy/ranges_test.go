package policy

import (
	"context"
	"net/netip"
	"testing"
)

func rangesPolicy(t *testing.T, c Config) *Policy {
	t.Helper()
	p, err := Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultRanges(t *testing.T) {
	t.Parallel()
	p := rangesPolicy(t, Config{DenyRanges: []string{DefaultRanges}})
	tests := []struct {
		addr  string
		allow bool
	}{
		{"8.8.8.8", true},
		{"93.184.216.34", true},
		{"1.1.1.1", true},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"10.1.2.3", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"100.128.0.1", true},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"169.254.169.254", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"172.32.0.1", true},
		{"192.0.0.8", false},
		{"192.0.2.1", false},
		{"192.88.99.1", false},
		{"192.168.1.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.51.100.7", false},
		{"203.0.113.9", false},
		{"224.0.0.251", false},
		{"239.255.255.250", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::", false},
		{"::1", false},
		{"fe80::1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"ff02::1", false},
		{"2001:db8::1", false},
		{"100::1", false},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001::200e", true},
		// embedded IPv4 forms: the embedding prefixes are themselves denied
		{"::ffff:8.8.8.8", false},
		{"::ffff:169.254.169.254", false},
		{"::a9fe:a9fe", false},
		{"64:ff9b::a9fe:a9fe", false},
		{"64:ff9b::808:808", false},
		{"64:ff9b:1::1", false},
		{"::ffff:0:808:808", false},
		{"2002:a9fe:a9fe::1", false},
		{"2001:0:4136:e378:8000:63bf:5601:5601", false},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := p.AddrAllowed(a, -1); got != tt.allow {
			t.Errorf("AddrAllowed(%s) = %v, want %v", a, got, tt.allow)
		}
	}
}

func TestEmbeddedIPv4(t *testing.T) {
	t.Parallel()
	// Deny only the metadata range, so the embedding prefixes themselves are
	// not denied and the unwrapped IPv4 decides.
	p := rangesPolicy(t, Config{DenyRanges: []string{"169.254.0.0/16", "10.0.0.0/8"}})
	tests := []struct {
		name     string
		addr     string
		embedded string
		allow    bool
	}{
		{"mapped metadata", "::ffff:169.254.169.254", "169.254.169.254", false},
		{"mapped hex", "::ffff:a9fe:a9fe", "169.254.169.254", false},
		{"mapped public", "::ffff:8.8.8.8", "8.8.8.8", true},
		{"compatible metadata", "::169.254.169.254", "169.254.169.254", false},
		{"compatible public", "::808:808", "8.8.8.8", true},
		{"nat64 metadata", "64:ff9b::169.254.169.254", "169.254.169.254", false},
		{"nat64 private", "64:ff9b::a01:203", "10.1.2.3", false},
		{"nat64 public", "64:ff9b::808:808", "8.8.8.8", true},
		{"6to4 metadata", "2002:a9fe:a9fe::1", "169.254.169.254", false},
		{"6to4 private", "2002:a01:203:1::5", "10.1.2.3", false},
		{"6to4 public", "2002:808:808::1", "8.8.8.8", true},
		{"teredo metadata", "2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254", false},
		{"teredo private", "2001:0:4136:e378:8000:63bf:f5fe:fdfc", "10.1.2.3", false},
		{"teredo public", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", "8.8.8.8", true},
		{"siit metadata", "::ffff:0:a9fe:a9fe", "169.254.169.254", false},
		{"siit public", "::ffff:0:808:808", "8.8.8.8", true},
		{"unspecified is not compatible", "::", "", true},
		{"loopback is not compatible", "::1", "", true},
		{"plain ipv6", "2606:4700::1", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := netip.MustParseAddr(tt.addr)
			v4, ok := EmbeddedIPv4(a)
			got := ""
			if ok {
				got = v4.String()
			}
			if got != tt.embedded {
				t.Errorf("EmbeddedIPv4(%s) = %q, want %q", a, got, tt.embedded)
			}
			if allow := p.AddrAllowed(a, -1); allow != tt.allow {
				t.Errorf("AddrAllowed(%s) = %v, want %v", a, allow, tt.allow)
			}
		})
	}
}

// TestMappedPrefixDoesNotCollapse guards against smokescreen bug #289, where
// ::ffff:0:0/96 parsed through net.IP became 0.0.0.0/0 and denied all IPv4.
func TestMappedPrefixDoesNotCollapse(t *testing.T) {
	t.Parallel()
	p := rangesPolicy(t, Config{DenyRanges: []string{"::ffff:0:0/96"}})
	for addr, want := range map[string]bool{
		"8.8.8.8":        true,
		"0.0.0.1":        true,
		"::ffff:8.8.8.8": false,
		"::ffff:0:1":     false,
		"2606:4700::1":   true,
	} {
		if got := p.AddrAllowed(netip.MustParseAddr(addr), -1); got != want {
			t.Errorf("AddrAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
	pr, err := ParsePrefix("::ffff:0:0/96")
	if err != nil || pr.Bits() != 96 || !pr.Addr().Is6() {
		t.Errorf("ParsePrefix(::ffff:0:0/96) = %v, %v", pr, err)
	}
}

func TestMostSpecificWins(t *testing.T) {
	t.Parallel()
	p := rangesPolicy(t, Config{
		DenyRanges:  []string{"10.0.0.0/8", "10.1.2.3", "fd00::/8"},
		AllowRanges: []string{"10.1.0.0/16", "fd00:1::/32"},
		Rules: []Rule{
			{Name: "git", Hosts: []string{"git.corp.example"}, AllowRanges: []string{"10.50.0.0/16"}, Ports: []int{443}},
			{Name: "api", CIDRs: []string{"10.20.0.0/16"}, Ports: []int{8443}},
			{Name: "tie", CIDRs: []string{"10.0.0.0/8"}, Ports: []int{1}},
		},
	})
	tests := []struct {
		name  string
		addr  string
		rule  int
		allow bool
	}{
		{"allowed /16 inside denied /8", "10.1.9.9", -1, true},
		{"denied /32 inside allowed /16", "10.1.2.3", -1, false},
		{"rest of /8 denied", "10.2.0.1", -1, false},
		{"outside every range", "8.8.8.8", -1, true},
		{"ipv6 exception", "fd00:1::5", -1, true},
		{"ipv6 denied", "fd00:2::5", -1, false},
		{"rule allow_ranges apply to the rule", "10.50.1.1", 0, true},
		{"rule allow_ranges not for other rules", "10.50.1.1", 1, false},
		{"rule allow_ranges not without rule", "10.50.1.1", -1, false},
		{"rule cidrs are exceptions", "10.20.3.4", 1, true},
		{"rule cidrs only for the rule", "10.20.3.4", 0, false},
		{"tie is deny", "10.9.9.9", 2, false},
		{"exception does not beat a more specific deny", "10.1.2.3", 0, false},
		{"mapped form of an allowed address", "::ffff:10.1.9.9", -1, true},
		{"mapped form of a denied address", "::ffff:10.1.2.3", -1, false},
		{"invalid address", "", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var a netip.Addr
			if tt.addr != "" {
				a = netip.MustParseAddr(tt.addr)
			}
			if got := p.AddrAllowed(a, tt.rule); got != tt.allow {
				t.Errorf("AddrAllowed(%s, %d) = %v, want %v", tt.addr, tt.rule, got, tt.allow)
			}
		})
	}
}

func TestSpecialRangesCanonical(t *testing.T) {
	t.Parallel()
	for _, p := range SpecialRanges() {
		if p.Masked() != p {
			t.Errorf("%s is not masked", p)
		}
	}
	must := []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96",
		"::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "fc00::/7",
		"fe80::/10", "ff00::/8"}
	have := map[netip.Prefix]bool{}
	for _, p := range SpecialRanges() {
		have[p] = true
	}
	for _, s := range must {
		if !have[netip.MustParsePrefix(s)] {
			t.Errorf("SpecialRanges lacks %s", s)
		}
	}
}

func TestShortPrefixes(t *testing.T) {
	t.Parallel()
	p := rangesPolicy(t, Config{
		DenyRanges:  []string{"0.0.0.0/0", "2000::/3", "fe00::/7"},
		AllowRanges: []string{"93.184.216.0/24", "2606:4700::/32"},
	})
	for addr, want := range map[string]bool{
		"8.8.8.8":              false,
		"255.1.1.1":            false,
		"93.184.216.34":        true,
		"2001:4860::8888":      false,
		"3fff:ffff::1":         false,
		"2606:4700::1111":      true,
		"4000::1":              true,
		"fe80::1":              false,
		"ff02::1":              false,
		"fd00::1":              true,
		"::ffff:8.8.8.8":       false, // embedded IPv4 denied by 0.0.0.0/0
		"::ffff:93.184.216.34": true,
	} {
		if got := p.AddrAllowed(netip.MustParseAddr(addr), -1); got != want {
			t.Errorf("AddrAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
}

// rfc6052Embed is the reference for NAT64IPv4: it writes v4's 32 bits into
// prefix (an RFC 6052 length) bit by bit after the prefix, skipping bits
// 64-71, with a zero suffix.
func rfc6052Embed(prefix netip.Prefix, v4 netip.Addr) netip.Addr {
	b := prefix.Addr().As16()
	src := v4.As4()
	pos := prefix.Bits()
	for i := 0; i < 32; i++ {
		if pos == 64 {
			pos = 72
		}
		if src[i/8]&(0x80>>(i%8)) != 0 {
			b[pos/8] |= 0x80 >> (pos % 8)
		}
		pos++
	}
	return netip.AddrFrom16(b)
}

// TestNAT64IPv4 checks the extraction against RFC 6052 section 2.4's
// examples and the bit-by-bit reference.
func TestNAT64IPv4(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ prefix, addr string }{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"},
	} {
		pr, a := netip.MustParsePrefix(tt.prefix), netip.MustParseAddr(tt.addr)
		if got := NAT64IPv4(a, pr.Bits()); got != netip.MustParseAddr("192.0.2.33") {
			t.Errorf("NAT64IPv4(%s, /%d) = %s, want 192.0.2.33", a, pr.Bits(), got)
		}
		if got := rfc6052Embed(pr, netip.MustParseAddr("192.0.2.33")); got != a {
			t.Errorf("reference embeds 192.0.2.33 in %s as %s, RFC 6052 says %s", pr, got, a)
		}
	}
}

// TestNAT64Prefixes: the IPv4 address inside an operator's NAT64 prefix is
// checked against the deny ranges at every RFC 6052 length, even when the
// prefix itself is opened in allow_ranges (RFC 8215 local use), so the
// metadata address cannot be reached through the NAT64 gateway.
func TestNAT64Prefixes(t *testing.T) {
	t.Parallel()
	meta, public := netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("8.8.8.8")
	prefixes := []string{"64:ff9b:1:abcd::/96", "2a00:64::/32", "2a00:65:ab00::/40", "2a00:66:ab::/48",
		"2a00:67:ab:cd00::/56", "2a00:68:ab:cd::/64"}
	p := rangesPolicy(t, Config{
		DenyRanges:    []string{DefaultRanges},
		AllowRanges:   []string{"64:ff9b:1:abcd::/96"},
		NAT64Prefixes: append([]string{"64:ff9b::/96"}, prefixes...),
		Rules:         []Rule{{Name: "nat64", CIDRs: []string{"64:ff9b:1:abcd::/96", "2a00::/16"}, Ports: []int{443}}},
	})
	e := NewEngine(p, nil)
	for _, s := range prefixes {
		pr := netip.MustParsePrefix(s)
		for v4, want := range map[netip.Addr]Verdict{meta: Deny, public: Allow} {
			a := rfc6052Embed(pr, v4)
			d, err := e.Decide(context.Background(), Request{Host: a.String(), Port: 443})
			if err != nil || d.Verdict != want || want == Deny && d.Reason != ReasonPrivateRange {
				t.Errorf("%s (%s inside %s): %v %s %v, want %v", a, v4, pr, d.Verdict, d.Reason, err, want)
			}
		}
	}
	// The example, spelled as the operator would see it.
	d, _ := e.Decide(context.Background(), Request{Host: "64:ff9b:1:abcd::a9fe:a9fe", Port: 443})
	if d.Verdict != Deny || d.Reason != ReasonPrivateRange {
		t.Errorf("64:ff9b:1:abcd::a9fe:a9fe: %v %s, want deny private_range", d.Verdict, d.Reason)
	}
}

// FuzzNAT64IPv4 holds the extraction to the bit-by-bit reference, and the
// range check to it: an address under a NAT64 prefix whose embedded IPv4
// is denied is never allowed.
func FuzzNAT64IPv4(f *testing.F) {
	f.Add([]byte("2001:db8:122:344::192.0.2.33 ___"), uint8(5), uint32(0xa9fea9fe))
	f.Add(make([]byte, 16), uint8(0), uint32(0x0a000001))
	f.Fuzz(func(t *testing.T, raw []byte, which uint8, v4 uint32) {
		var b [16]byte
		copy(b[:], raw)
		bits := nat64Lengths[int(which)%len(nat64Lengths)]
		pr, err := netip.AddrFrom16(b).Prefix(bits)
		if err != nil || pr.Addr().Is4In6() {
			return
		}
		want := netip.AddrFrom4([4]byte{byte(v4 >> 24), byte(v4 >> 16), byte(v4 >> 8), byte(v4)})
		a := rfc6052Embed(pr, want)
		if got := NAT64IPv4(a, bits); got != want {
			t.Fatalf("NAT64IPv4(%s, /%d) = %s, want %s", a, bits, got, want)
		}
		p, err := Compile(Config{DenyRanges: []string{"169.254.0.0/16", "10.0.0.0/8"}, NAT64Prefixes: []string{pr.String()}})
		if err != nil {
			t.Fatalf("nat64_prefixes [%s]: %v", pr, err)
		}
		if denied := want.As4()[0] == 10 || want.As4()[0] == 169 && want.As4()[1] == 254; denied && p.AddrAllowed(a, -1) {
			t.Fatalf("%s (%s inside %s) allowed", a, want, pr)
		}
	})
}
