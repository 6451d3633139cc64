package testenv

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Inline is the in-line gateway topology: three namespaces joined by two
// veth pairs, as a private subnet whose default route points at a gateway
// instance.
//
//	Client  eth0 10.0.1.10/24, fd00:0:0:1::10/64   default via the gateway's lan0
//	   |
//	Gateway lan0 10.0.1.1/24,  fd00:0:0:1::1/64    (faces the clients)
//	        wan0 192.0.2.1/24, 2001:db8:ffff::1/64  default via the internet's eth0
//	   |
//	Internet eth0 192.0.2.2/24, 2001:db8:ffff::2/64 route back to the client subnet
//	        lo   169.254.169.254, 10.0.0.5 (honeypot addresses) and the test's own
//
// Everything is routed, nothing is translated: the internet namespace has a
// route back to the client subnet through the gateway, as a VPC's routing
// would. The gateway does not forward (net.ipv4.ip_forward and IPv6
// forwarding are off, as on a fresh instance): a client reaches nothing
// beyond the gateway until the test sets up what the gateway does (nftables
// redirect or tproxy to a local listener, or forwarding). Interfaces are
// created inside their namespaces, so their fixed names cannot collide;
// the namespaces have random names and are deleted on cleanup.
type Inline struct {
	Client, Gateway, Internet *Netns

	// Interface names, each inside its own namespace.
	ClientIface, GatewayLAN, GatewayWAN, InternetIface string

	// ClientPrefix4 and ClientPrefix6 are the client subnet.
	ClientPrefix4, ClientPrefix6 netip.Prefix
	// ClientAddr4 and ClientAddr6 are the client's addresses.
	ClientAddr4, ClientAddr6 netip.Addr
	// GatewayLAN4 and GatewayLAN6 are the gateway's addresses on the client
	// subnet: the client's default routers.
	GatewayLAN4, GatewayLAN6 netip.Addr
	// GatewayWAN4 and GatewayWAN6 are the gateway's addresses towards the
	// internet: what a process on the gateway dials from.
	GatewayWAN4, GatewayWAN6 netip.Addr
	// InternetRouter4 and InternetRouter6 are the internet's end of the WAN
	// link: the gateway's default routers.
	InternetRouter4, InternetRouter6 netip.Addr

	// Metadata (169.254.169.254) and Private (10.0.0.5) are on the
	// internet namespace's loopback, for honeypots: a client or a gateway
	// that reaches them has reached what it must not.
	Metadata, Private netip.Addr
}

// NewInline builds the in-line topology. internetAddrs (such as
// "203.0.113.10", "2001:db8:1::10" or prefixes with a length) are added to
// the internet namespace's loopback for origins, DNS servers and honeypots;
// use documentation ranges (192.0.2.0/24 is the WAN link, so 198.51.100.0/24,
// 203.0.113.0/24 and 2001:db8::/32 outside 2001:db8:ffff::/64).
func NewInline(t testing.TB, internetAddrs ...string) *Inline {
	t.Helper()
	in := &Inline{
		ClientIface: "eth0", GatewayLAN: "lan0", GatewayWAN: "wan0", InternetIface: "eth0",

		ClientPrefix4:   netip.MustParsePrefix("10.0.1.0/24"),
		ClientPrefix6:   netip.MustParsePrefix("fd00:0:0:1::/64"),
		ClientAddr4:     netip.MustParseAddr("10.0.1.10"),
		ClientAddr6:     netip.MustParseAddr("fd00:0:0:1::10"),
		GatewayLAN4:     netip.MustParseAddr("10.0.1.1"),
		GatewayLAN6:     netip.MustParseAddr("fd00:0:0:1::1"),
		GatewayWAN4:     netip.MustParseAddr("192.0.2.1"),
		GatewayWAN6:     netip.MustParseAddr("2001:db8:ffff::1"),
		InternetRouter4: netip.MustParseAddr("192.0.2.2"),
		InternetRouter6: netip.MustParseAddr("2001:db8:ffff::2"),
		Metadata:        netip.MustParseAddr("169.254.169.254"),
		Private:         netip.MustParseAddr("10.0.0.5"),
	}
	in.Client = NewNetns(t)
	in.Gateway = NewNetns(t)
	in.Internet = NewNetns(t, append([]string{in.Metadata.String(), in.Private.String()}, internetAddrs...)...)

	// No duplicate address detection on the links: addresses are usable at
	// once, including the link-local ones neighbour discovery starts from.
	for _, ns := range []*Netns{in.Client, in.Gateway, in.Internet} {
		ns.Sysctl(t, "net.ipv6.conf.default.accept_dad", "0")
	}

	ip := lookTool(t, "ip")
	// Each pair is created with both ends inside their namespaces: the host
	// never sees these names. Deleting a namespace deletes its ends.
	runTool(t, ip, "-n", in.Client.Name, "link", "add", in.ClientIface, "type", "veth", "peer", "name", in.GatewayLAN, "netns", in.Gateway.Name)
	runTool(t, ip, "-n", in.Gateway.Name, "link", "add", in.GatewayWAN, "type", "veth", "peer", "name", in.InternetIface, "netns", in.Internet.Name)

	link := func(ns *Netns, dev string, addrs ...string) {
		for _, a := range addrs {
			if strings.Contains(a, ":") {
				runTool(t, ip, "-n", ns.Name, "-6", "addr", "add", a, "dev", dev, "nodad")
			} else {
				runTool(t, ip, "-n", ns.Name, "addr", "add", a, "dev", dev)
			}
		}
		runTool(t, ip, "-n", ns.Name, "link", "set", dev, "up")
	}
	link(in.Client, in.ClientIface, "10.0.1.10/24", "fd00:0:0:1::10/64")
	link(in.Gateway, in.GatewayLAN, "10.0.1.1/24", "fd00:0:0:1::1/64")
	link(in.Gateway, in.GatewayWAN, "192.0.2.1/24", "2001:db8:ffff::1/64")
	link(in.Internet, in.InternetIface, "192.0.2.2/24", "2001:db8:ffff::2/64")

	// The kernel turns a link's carrier on asynchronously (linkwatch, up to
	// a second later); until then IPv6 drops what the link would send, and
	// a client's first SYN waits for its retransmission. Wait for it.
	in.waitUp(t, ip, map[*Netns]string{in.Client: in.ClientIface, in.Internet: in.InternetIface})
	in.waitUp(t, ip, map[*Netns]string{in.Gateway: in.GatewayLAN})
	in.waitUp(t, ip, map[*Netns]string{in.Gateway: in.GatewayWAN})

	route := func(ns *Netns, dst, via string) {
		fam := "-4"
		if strings.Contains(via, ":") {
			fam = "-6"
		}
		runTool(t, ip, "-n", ns.Name, fam, "route", "add", dst, "via", via)
	}
	route(in.Client, "default", in.GatewayLAN4.String())
	route(in.Client, "default", in.GatewayLAN6.String())
	route(in.Gateway, "default", in.InternetRouter4.String())
	route(in.Gateway, "default", in.InternetRouter6.String())
	route(in.Internet, in.ClientPrefix4.String(), in.GatewayWAN4.String())
	route(in.Internet, in.ClientPrefix6.String(), in.GatewayWAN6.String())
	return in
}

// Forwarding turns the gateway's routing of other hosts' packets on or
// off, for both families (net.ipv4.ip_forward,
// net.ipv6.conf.all.forwarding).
func (in *Inline) Forwarding(t testing.TB, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	in.Gateway.Sysctl(t, "net.ipv4.ip_forward", v)
	in.Gateway.Sysctl(t, "net.ipv6.conf.all.forwarding", v)
}

// waitUp waits until each namespace's link reports operational state UP.
func (in *Inline) waitUp(t testing.TB, ip string, links map[*Netns]string) {
	t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ns, dev := range links {
		for {
			out, err := exec.Command(ip, "-n", ns.Name, "-o", "link", "show", "dev", dev).CombinedOutput()
			if err != nil {
				t.Fatalf("ip -n %s link show %s: %v: %s", ns.Name, dev, err, out)
			}
			if strings.Contains(string(out), "state UP") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s is not up: %s", dev, ns.Name, out)
			}
			<-tick.C
		}
	}
}
