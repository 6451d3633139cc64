package deployments

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/origdst"
	"github.com/egressd/egressd/test/testenv"
	"github.com/miekg/dns"
)

// The in-line gateway's packet rules (nftables/egressd-transparent.nft,
// loaded by nftables/egressd-transparent.sh), loaded for real into the
// gateway namespace of testenv.Inline, with a stand-in for egressd's
// transparent listener that answers each HTTP request with the original
// destination origdst reports.

const (
	rulesetPath = "nftables/egressd-transparent.nft"
	loaderPath  = "nftables/egressd-transparent.sh"
)

// The internet namespace's addresses.
var (
	web4, web6           = netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:1::10")
	realOrigin4          = netip.MustParseAddr("203.0.113.20")
	resolver4, resolver6 = netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("2001:db8:53::53")
	otherDNS4, otherDNS6 = netip.MustParseAddr("203.0.113.53"), netip.MustParseAddr("2001:db8:1::53")
	metadata6            = netip.MustParseAddr("fd00:ec2::254")
)

// standIn stands in for egressd's transparent listener: an HTTP server on
// an origdst listener that answers "origdst=<address the client dialed>".
type standIn struct {
	ln   *net.TCPListener
	srv  *http.Server
	done chan struct{}

	mu   sync.Mutex
	seen []netip.AddrPort // the original destination of each connection
}

type origDstKey struct{}

func startStandIn(t *testing.T, ns *testenv.Netns) *standIn {
	t.Helper()
	s := &standIn{done: make(chan struct{})}
	// tproxy=true: the same listener serves redirected and tproxied
	// connections.
	err := ns.Do(func() (err error) {
		s.ln, err = origdst.Listen(context.Background(), "[::]:0", true)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			d, err := origdst.Destination(c.(*net.TCPConn))
			if err != nil {
				t.Errorf("Destination: %v", err)
			}
			s.mu.Lock()
			s.seen = append(s.seen, d)
			s.mu.Unlock()
			return context.WithValue(ctx, origDstKey{}, d)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "origdst=%s", r.Context().Value(origDstKey{}))
		}),
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(s.ln)
	}()
	t.Cleanup(func() {
		s.srv.Close()
		<-s.done
	})
	return s
}

func (s *standIn) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *standIn) destinations() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// rules runs the loader with action inside the gateway, with settings on
// top of the test gateway's: clients are its client subnet, DNS may be
// routed to the resolvers.
func rules(t *testing.T, ns *testenv.Netns, action string, settings ...string) (string, int) {
	t.Helper()
	ruleset, err := filepath.Abs(rulesetPath)
	if err != nil {
		t.Fatal(err)
	}
	loader, _ := filepath.Abs(loaderPath)
	args := append([]string{"EGRESSD_TRANSPARENT_RULESET=" + ruleset}, settings...)
	stdout, stderr, exit := ns.Run(t, "env", append(args, "sh", loader, action)...)
	return stdout + stderr, exit
}

func mustRules(t *testing.T, ns *testenv.Netns, action string, settings ...string) {
	t.Helper()
	if out, exit := rules(t, ns, action, settings...); exit != 0 {
		t.Fatalf("transparent-rules %s: exit %d\n%s", action, exit, out)
	}
}

// dialFails dials each address from the client at once and fails the
// test for each connection that is made.
func dialFails(t *testing.T, in *testenv.Inline, addrs ...string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if c, err := in.Client.DialContext(ctx, "tcp", a); err == nil {
				c.Close()
				t.Errorf("the client connected to %s through the gateway", a)
			}
		})
	}
	wg.Wait()
}

// dnsQuery asks server for web.test from the client; ok is false when no
// answer came within timeout.
func dnsQuery(t *testing.T, in *testenv.Inline, network string, server netip.Addr, timeout time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := in.Client.DialContext(ctx, network, netip.AddrPortFrom(server, 53).String())
	if err != nil {
		return false
	}
	defer c.Close()
	dc := &dns.Conn{Conn: c}
	dc.SetDeadline(time.Now().Add(timeout))
	m := new(dns.Msg)
	m.SetQuestion("web.test.", dns.TypeA)
	if err := dc.WriteMsg(m); err != nil {
		return false
	}
	resp, err := dc.ReadMsg()
	return err == nil && len(resp.Answer) == 1
}

// TestTransparentGateway: with the rules loaded in the gateway, a client
// with no proxy settings reaches the stand-in on TCP 80, 443 and the extra
// redirected port, over IPv4 and IPv6, with the destination it dialed
// reported; QUIC is refused; DNS is routed to the resolver only; the
// metadata address, other ports and the gateway's own listeners are out of
// reach; the gateway's own connections are untouched. Reloading keeps it
// so; stopping routes nothing. Both families run in both modes.
func TestTransparentGateway(t *testing.T) {
	for _, modes := range []struct{ ipv4, ipv6 string }{{"redirect", "tproxy"}, {"tproxy", "redirect"}} {
		t.Run("ipv4 "+modes.ipv4+", ipv6 "+modes.ipv6, func(t *testing.T) {
			t.Parallel()
			addrs := []string{web4.String(), web6.String(), realOrigin4.String(), resolver4.String(), resolver6.String(),
				otherDNS4.String(), otherDNS6.String(), metadata6.String()}
			in := testenv.NewInline(t, addrs...)
			hp := in.Internet.Honeypot(t,
				netip.AddrPortFrom(web4, 80).String(), netip.AddrPortFrom(web4, 443).String(), netip.AddrPortFrom(web4, 8443).String(), netip.AddrPortFrom(web4, 22).String(),
				netip.AddrPortFrom(web6, 80).String(), netip.AddrPortFrom(web6, 443).String(), netip.AddrPortFrom(web6, 22).String(),
				netip.AddrPortFrom(in.Metadata, 80).String(), netip.AddrPortFrom(metadata6, 80).String(),
				netip.AddrPortFrom(in.Private, 443).String(), netip.AddrPortFrom(in.Private, 22).String())
			origin := testenv.HTTPOriginIn(t, in.Internet, realOrigin4.String(), "origin.test")
			quic := map[netip.Addr]net.PacketConn{}
			for _, a := range []netip.Addr{web4, web6} {
				pc, err := in.Internet.ListenPacket("udp", netip.AddrPortFrom(a, 443).String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				quic[a] = pc
			}
			servers := map[netip.Addr]*testenv.DNSServer{}
			for _, a := range []netip.Addr{resolver4, resolver6, otherDNS4, otherDNS6} {
				s, err := testenv.StartDNSServerAt(t, in.Internet, netip.AddrPortFrom(a, 53).String())
				if err != nil {
					t.Fatal(err)
				}
				s.Set("web.test", 60, web4)
				servers[a] = s
			}
			egressd := startStandIn(t, in.Gateway)
			admin := in.Gateway.Honeypot(t, "[::]:0") // egressd's admin (or proxy) listener
			_, adminPort, _ := net.SplitHostPort(admin.Addrs()[0])

			settings := []string{
				"EGRESSD_CLIENT_CIDRS=" + in.ClientPrefix4.String() + "," + in.ClientPrefix6.String(),
				fmt.Sprintf("EGRESSD_TRANSPARENT_PORT=%d", egressd.port()),
				"EGRESSD_REDIRECT_PORTS=80 443 8443",
				"EGRESSD_IPV4_MODE=" + modes.ipv4,
				"EGRESSD_IPV6_MODE=" + modes.ipv6,
				"EGRESSD_DNS_RESOLVERS=" + resolver4.String() + " " + resolver6.String(),
			}
			mustRules(t, in.Gateway, "start", settings...)
			// A reload replaces the table in one transaction.
			mustRules(t, in.Gateway, "start", settings...)

			// Redirected: curl with no proxy settings, both families.
			for _, tc := range []struct {
				url  string
				want netip.AddrPort
			}{
				{"http://203.0.113.10/", netip.AddrPortFrom(web4, 80)},
				{"http://203.0.113.10:443/", netip.AddrPortFrom(web4, 443)},
				{"http://203.0.113.10:8443/", netip.AddrPortFrom(web4, 8443)},
				{"http://[2001:db8:1::10]/", netip.AddrPortFrom(web6, 80)},
				{"http://[2001:db8:1::10]:443/", netip.AddrPortFrom(web6, 443)},
				{"http://203.0.113.20/", netip.AddrPortFrom(realOrigin4, 80)},
				// A private address on a redirected port is egressd's to refuse.
				{"http://10.0.0.5:443/", netip.AddrPortFrom(in.Private, 443)},
			} {
				stdout, stderr, exit := in.Client.Curl(t, "-sS", "--max-time", "10", tc.url)
				if exit != 0 {
					t.Errorf("client curl %s: exit %d: %s", tc.url, exit, stderr)
					continue
				}
				if want := "origdst=" + tc.want.String(); stdout != want {
					t.Errorf("client curl %s: %q, want %q", tc.url, stdout, want)
				}
			}

			// QUIC: refused at the gateway (ICMP port unreachable), both families.
			for a, pc := range quic {
				c, err := in.Client.DialContext(context.Background(), "udp", netip.AddrPortFrom(a, 443).String())
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("quic initial"))
				_, err = c.Read(make([]byte, 64))
				c.Close()
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("QUIC to %v: %v, want connection refused (ICMP port unreachable)", a, err)
				}
				pc.SetReadDeadline(time.Now())
				if n, from, err := pc.ReadFrom(make([]byte, 64)); err == nil {
					t.Errorf("QUIC to %v: %d bytes from %v reached the internet", a, n, from)
				}
			}

			// DNS: routed to the resolver (UDP and TCP), to nothing else.
			for _, network := range []string{"udp", "tcp"} {
				for _, r := range []netip.Addr{resolver4, resolver6} {
					if !dnsQuery(t, in, network, r, 5*time.Second) {
						t.Errorf("DNS over %s to the resolver %v: no answer", network, r)
					}
				}
			}
			var wg sync.WaitGroup
			for _, network := range []string{"udp", "tcp"} {
				for _, r := range []netip.Addr{otherDNS4, otherDNS6} {
					wg.Go(func() {
						if dnsQuery(t, in, network, r, time.Second) {
							t.Errorf("DNS over %s to %v (not the resolver) was answered", network, r)
						}
					})
				}
			}
			wg.Wait()
			for _, r := range []netip.Addr{otherDNS4, otherDNS6} {
				if n := servers[r].TotalQueries(); n != 0 {
					t.Errorf("%v got %d queries through the gateway", r, n)
				}
			}

			// Out of reach: other ports, the metadata address (even on a
			// redirected port: never handed to egressd either), and the
			// gateway's own listeners, the transparent port included (a loop).
			dialFails(t, in,
				netip.AddrPortFrom(web4, 22).String(), netip.AddrPortFrom(web6, 22).String(), netip.AddrPortFrom(in.Private, 22).String(),
				netip.AddrPortFrom(in.Metadata, 80).String(), netip.AddrPortFrom(metadata6, 80).String(),
				net.JoinHostPort(in.GatewayLAN4.String(), adminPort), net.JoinHostPort(in.GatewayLAN6.String(), adminPort),
				netip.AddrPortFrom(in.GatewayLAN4, uint16(egressd.port())).String(), netip.AddrPortFrom(in.GatewayLAN6, uint16(egressd.port())).String())
			hp.AssertNone(t)
			admin.AssertNone(t)
			for _, d := range egressd.destinations() {
				if d.Addr() == in.Metadata || d.Addr() == metadata6 || d.Addr() == in.GatewayLAN4 || d.Addr() == in.GatewayLAN6 || d.Port() == 22 {
					t.Errorf("the transparent listener got a connection for %v", d)
				}
			}
			if origin.Count() != 0 {
				t.Errorf("the origin answered %d requests meant for egressd", origin.Count())
			}

			// The gateway's own connections (egressd's upstream side) are untouched.
			if _, stderr, exit := in.Gateway.Curl(t, "-sS", "--max-time", "10", origin.URL); exit != 0 || origin.Count() != 1 {
				t.Errorf("the gateway's own request to the origin: exit %d, %d requests: %s", exit, origin.Count(), stderr)
			}

			// Stopped: nothing is redirected or routed; policy routing is gone.
			mustRules(t, in.Gateway, "stop", settings...)
			seen := len(egressd.destinations())
			dialFails(t, in, netip.AddrPortFrom(web4, 443).String(), netip.AddrPortFrom(web6, 443).String())
			if dnsQuery(t, in, "udp", resolver4, time.Second) {
				t.Errorf("DNS was routed through a stopped gateway")
			}
			hp.AssertNone(t)
			if n := len(egressd.destinations()); n != seen {
				t.Errorf("the transparent listener got %d connections after stop", n-seen)
			}
			if out := in.Gateway.MustRun(t, "nft", "list", "tables"); strings.Contains(out, "egressd_transparent") {
				t.Errorf("the table is still loaded after stop:\n%s", out)
			}
			for _, fam := range []string{"-4", "-6"} {
				if out := in.Gateway.MustRun(t, "ip", fam, "rule"); strings.Contains(out, "fwmark") {
					t.Errorf("ip %s rule after stop:\n%s", fam, out)
				}
			}
		})
	}
}

// TestTransparentGatewayWithoutResolvers: with no DNS resolvers the gateway
// forwards nothing at all (forwarding stays off), and the redirected ports
// still reach egressd.
func TestTransparentGatewayWithoutResolvers(t *testing.T) {
	in := testenv.NewInline(t, web4.String(), resolver4.String())
	hp := in.Internet.Honeypot(t, netip.AddrPortFrom(web4, 443).String(), netip.AddrPortFrom(web4, 22).String())
	dnsSrv, err := testenv.StartDNSServerAt(t, in.Internet, netip.AddrPortFrom(resolver4, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	dnsSrv.Set("web.test", 60, web4)
	in.Forwarding(t, true) // the loader must turn it off
	egressd := startStandIn(t, in.Gateway)
	mustRules(t, in.Gateway, "start", "EGRESSD_CLIENT_CIDRS="+in.ClientPrefix4.String()+" "+in.ClientPrefix6.String(),
		fmt.Sprintf("EGRESSD_TRANSPARENT_PORT=%d", egressd.port()))

	for key, want := range map[string]string{"/proc/sys/net/ipv4/ip_forward": "0", "/proc/sys/net/ipv6/conf/all/forwarding": "0"} {
		if got := strings.TrimSpace(in.Gateway.MustRun(t, "cat", key)); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if stdout, stderr, exit := in.Client.Curl(t, "-sS", "--max-time", "10", "http://203.0.113.10:443/"); exit != 0 || stdout != "origdst=203.0.113.10:443" {
		t.Errorf("client curl: exit %d, %q %s", exit, stdout, stderr)
	}
	if dnsQuery(t, in, "udp", resolver4, time.Second) || dnsSrv.TotalQueries() != 0 {
		t.Errorf("DNS was routed with no resolver set (%d queries)", dnsSrv.TotalQueries())
	}
	dialFails(t, in, netip.AddrPortFrom(web4, 22).String())
	hp.AssertNone(t)
}

// TestTransparentRulesSettings: `check` validates the settings and the
// ruleset (nft -c) without loading anything; bad settings are refused with
// the variable named, before anything changes.
func TestTransparentRulesSettings(t *testing.T) {
	ns := testenv.NewNetns(t)
	good := []string{"EGRESSD_CLIENT_CIDRS=10.0.0.0/16, 10.1.0.0/16 2600:1f18:abcd:1200::/56", "EGRESSD_DNS_RESOLVERS=10.0.0.2 fd00:ec2::253"}
	if out, exit := rules(t, ns, "check", good...); exit != 0 || !strings.Contains(out, "are valid") {
		t.Errorf("check with good settings: exit %d\n%s", exit, out)
	}
	for _, mode := range []string{"tproxy", "off"} {
		if out, exit := rules(t, ns, "check", append(good, "EGRESSD_IPV4_MODE="+mode, "EGRESSD_IPV6_MODE="+mode, "EGRESSD_REDIRECT_PORTS=80,443,22,5432")...); exit != 0 {
			t.Errorf("check with %s: exit %d\n%s", mode, exit, out)
		}
	}
	for _, tt := range []struct {
		name, setting, message string
	}{
		{"no clients", "EGRESSD_CLIENT_CIDRS=", "EGRESSD_CLIENT_CIDRS is empty"},
		{"the internet as clients", "EGRESSD_CLIENT_CIDRS=10.0.0.0/16 0.0.0.0/0", "0.0.0.0/0 is the whole address space"},
		{"the IPv6 internet as clients", "EGRESSD_CLIENT_CIDRS=::/0", "::/0 is the whole address space"},
		{"no prefix length", "EGRESSD_CLIENT_CIDRS=10.0.0.0", "10.0.0.0 has no prefix length"},
		{"not a prefix", "EGRESSD_CLIENT_CIDRS=10.0.0.0/16;reboot", "is not a prefix"},
		{"a prefix nft refuses", "EGRESSD_CLIENT_CIDRS=10.0.0.0/99", "Error"},
		{"transparent port", "EGRESSD_TRANSPARENT_PORT=70000", "EGRESSD_TRANSPARENT_PORT: 70000 is not a port"},
		{"redirect port", "EGRESSD_REDIRECT_PORTS=80 https", "EGRESSD_REDIRECT_PORTS: https is not a port"},
		{"no redirect ports", "EGRESSD_REDIRECT_PORTS=,", "EGRESSD_REDIRECT_PORTS is empty"},
		{"mode", "EGRESSD_IPV6_MODE=nat", "EGRESSD_IPV6_MODE: nat is not redirect, tproxy or off"},
		{"resolver", "EGRESSD_DNS_RESOLVERS=dns.google", "EGRESSD_DNS_RESOLVERS: dns.google is not an address"},
		{"mark", "EGRESSD_TPROXY_MARK=0", "EGRESSD_TPROXY_MARK"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, action := range []string{"check", "start"} {
				out, exit := rules(t, ns, action, append(good, tt.setting)...)
				if exit == 0 || !strings.Contains(out, tt.message) {
					t.Errorf("%s with %s: exit %d, want a failure saying %q:\n%s", action, tt.setting, exit, tt.message, out)
				}
			}
			if out := ns.MustRun(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
				t.Errorf("rules were loaded:\n%s", out)
			}
		})
	}
}

// TestTransparentRulesetHasNoStrayDefines: every $name the ruleset uses is
// passed by the loader, and the loader passes nothing the ruleset does not
// use.
func TestTransparentRulesetHasNoStrayDefines(t *testing.T) {
	used := definesIn(t, rulesetPath, `\$([a-z0-9_]+)`)
	passed := definesIn(t, loaderPath, `-D "([a-z0-9_]+)=`)
	if !slices.Equal(used, passed) {
		t.Errorf("the ruleset uses %q, the loader defines %q", used, passed)
	}
}

func definesIn(t *testing.T, path, pattern string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(string(data), -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestTransparentUnit: egressd-transparent.service runs the packaged
// loader with the packaged settings, before egressd and the network, with
// CAP_NET_ADMIN only; the loader's default ruleset is the packaged one.
func TestTransparentUnit(t *testing.T) {
	u := parseUnit(t, "systemd/egressd-transparent.service")
	for _, c := range []struct{ section, key, value string }{
		{"Service", "Type", "oneshot"},
		{"Service", "RemainAfterExit", "yes"},
		{"Service", "ExecStart", "/usr/lib/egressd/transparent-rules start"},
		{"Service", "ExecReload", "/usr/lib/egressd/transparent-rules start"},
		{"Service", "ExecStop", "/usr/lib/egressd/transparent-rules stop"},
		{"Service", "EnvironmentFile", "/etc/default/egressd-transparent"},
		{"Service", "CapabilityBoundingSet", "CAP_NET_ADMIN"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Unit", "Before", "network-pre.target egressd.service shutdown.target"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got, ok := u.get(c.section, c.key); !ok || got != c.value {
			t.Errorf("[%s] %s=%q (present %v), want %q", c.section, c.key, got, ok, c.value)
		}
	}
	if _, ok := u.get("Service", "ProtectKernelTunables"); ok {
		t.Errorf("ProtectKernelTunables= would keep the loader from setting forwarding")
	}

	data, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{
		"/usr/lib/egressd/transparent-rules":         loaderPath,
		"/usr/share/egressd/egressd-transparent.nft": rulesetPath,
		"/etc/default/egressd-transparent":           "nftables/egressd-transparent.default",
	} {
		if !strings.Contains(string(data), "  - src: deployments/"+src+"\n    dst: "+dst+"\n") {
			t.Errorf("nfpm.yaml does not install %s as %s", src, dst)
		}
	}
	loader, err := os.ReadFile(loaderPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(loader), "ruleset=${EGRESSD_TRANSPARENT_RULESET:-/usr/share/egressd/egressd-transparent.nft}") {
		t.Errorf("the loader's default ruleset is not the packaged one")
	}

	// The packaged settings, with the client subnets filled in as the
	// in-line user data does, pass the loader's check.
	defaults, err := os.ReadFile("nftables/egressd-transparent.default")
	if err != nil {
		t.Fatal(err)
	}
	var settings []string
	for _, line := range strings.Split(string(defaults), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, "=")
		if key == "EGRESSD_CLIENT_CIDRS" {
			value = "10.0.0.0/16"
		}
		settings = append(settings, key+"="+strings.Trim(value, `"`))
	}
	ns := testenv.NewNetns(t)
	if out, exit := rules(t, ns, "check", settings...); exit != 0 {
		t.Errorf("check with the packaged settings: exit %d\n%s", exit, out)
	}
}
