package forward

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

func aps(s ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range s {
		out = append(out, netip.MustParseAddrPort(a))
	}
	return out
}

// TestSetKey: a pool is keyed by the set of pinned addresses: order,
// duplicates and IPv4-mapped spellings do not matter; any other difference
// does.
func TestSetKey(t *testing.T) {
	key := func(s ...string) string { return string(setKey(nil, aps(s...))) }
	same := [][2]string{
		{key("10.0.0.1:80", "10.0.0.2:80"), key("10.0.0.2:80", "10.0.0.1:80")},
		{key("10.0.0.1:80"), key("10.0.0.1:80", "10.0.0.1:80")},
		{key("10.0.0.1:80"), key("[::ffff:10.0.0.1]:80")},
	}
	for i, p := range same {
		if p[0] != p[1] {
			t.Errorf("pair %d: keys differ", i)
		}
	}
	differ := [][2]string{
		{key("10.0.0.1:80", "10.0.0.2:80"), key("10.0.0.1:80")},
		{key("10.0.0.1:80"), key("10.0.0.1:81")},
		{key("10.0.0.1:80"), key("[2001:db8::1]:80")},
	}
	for i, p := range differ {
		if p[0] == p[1] {
			t.Errorf("pair %d: keys equal", i)
		}
	}
	many := make([]string, 20) // more than setKey's stack arrays hold
	for i := range many {
		many[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 443).String()
	}
	if got := len(key(many...)); got != 20*keyAddrLen {
		t.Errorf("20 addresses: key of %d bytes", got)
	}
}

// TestUpstreams: one pool per set; a retired pool serves no new request.
func TestUpstreams(t *testing.T) {
	built := 0
	u := newUpstreams(func() *http.Transport { built++; return &http.Transport{} })
	a, b := aps("10.0.0.1:80", "10.0.0.2:80"), aps("10.0.0.2:80")
	p1 := u.get(a)
	p2 := u.get(aps("10.0.0.2:80", "10.0.0.1:80"))
	p3 := u.get(b)
	if p1 != p2 || p1 == p3 || built != 2 {
		t.Fatalf("pools: same set %v, other set %v, built %d", p1 == p2, p1 == p3, built)
	}
	u.release(p1)
	u.release(p2)
	u.release(p3)
	u.retireAll()
	if !p1.retired.Load() || !p3.retired.Load() {
		t.Fatal("retireAll left a pool serving")
	}
	if p := u.get(a); p == p1 || p.retired.Load() {
		t.Fatal("a retired pool served a new request")
	}
	if testing.AllocsPerRun(100, func() { u.release(u.get(a)) }) != 0 {
		t.Error("taking and releasing an existing pool allocates")
	}
}

// FuzzNormalizedAuthority: the authority a forwarded request goes out with
// carries exactly the host the policy normalized, and the URI's port.
func FuzzNormalizedAuthority(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.com:8080", "bücher.test", "b\u00fccher.test:81", "[::1]:80",
		"[::ffff:127.0.0.1]", "2130706433:80", "0x7f.1", "a.", "[fe80::1%25eth0]:80", ":80", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, authority string) {
		host, port, err := net.SplitHostPort(authority)
		hasPort := err == nil
		if !hasPort {
			host = trimBrackets(authority)
		}
		norm, _, _, err := policy.NormalizeHost(host)
		if err != nil {
			return
		}
		out := normalizedAuthority(authority, policy.Decision{Host: norm})
		if hasPort {
			h, p, err := net.SplitHostPort(out)
			if err != nil || h != norm || p != port {
				t.Fatalf("%q -> %q: host %q port %q (%v), want %q %q", authority, out, h, p, err, norm, port)
			}
			return
		}
		if trimBrackets(out) != norm || strings.Contains(norm, ":") != (len(out) > 0 && out[0] == '[') {
			t.Fatalf("%q -> %q, want host %q", authority, out, norm)
		}
		if bytes.ContainsAny([]byte(trimBrackets(out)), "[]") {
			t.Fatalf("%q -> %q: stray brackets", authority, out)
		}
	})
}
