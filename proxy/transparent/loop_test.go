package transparent

import (
	"net/netip"
	"testing"
)

// TestLoop: a destination that is egressd itself (loopback, unspecified,
// one of its listening sockets, on a specific address or on any address
// of the host) is a loop; anything else, the same ports elsewhere
// included, is not.
func TestLoop(t *testing.T) {
	hostAddrs := map[netip.Addr]bool{
		netip.MustParseAddr("10.0.1.1"):      true,
		netip.MustParseAddr("fd00:0:0:1::1"): true,
	}
	f := New(Options{
		Own: []netip.AddrPort{
			netip.MustParseAddrPort("[::]:3130"),               // listen.transparent on every address
			netip.MustParseAddrPort("192.0.2.1:3128"),          // listen.http on one address
			netip.MustParseAddrPort("[::ffff:192.0.2.1]:1080"), // as a dual-stack socket reports it
		},
		Local: func(a netip.Addr) bool { return hostAddrs[a] },
	})
	for _, tc := range []struct {
		dst  string
		loop bool
	}{
		{"127.0.0.1:443", true},
		{"127.0.0.2:80", true},
		{"[::1]:443", true},
		{"0.0.0.0:80", true},
		{"[::]:80", true},
		{"10.0.1.1:3130", true},
		{"[fd00:0:0:1::1]:3130", true},
		{"192.0.2.1:3128", true},
		{"192.0.2.1:1080", true},
		{"203.0.113.10:3130", false}, // the same port on another host
		{"10.0.1.1:3128", false},     // listen.http is on 192.0.2.1 only
		{"192.0.2.1:443", false},
		{"203.0.113.10:443", false},
	} {
		if got := f.loop(netip.MustParseAddrPort(tc.dst)); got != tc.loop {
			t.Errorf("loop(%s) = %v, want %v", tc.dst, got, tc.loop)
		}
	}
}
