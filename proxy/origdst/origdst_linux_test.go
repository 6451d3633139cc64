package origdst_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/origdst"
	"github.com/egressd/egressd/test/testenv"
)

func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(listenHelper(v))
	}
	testenv.Main(m)
}

// The origins the client dials: on the internet namespace's loopback,
// each with a honeypot, so a connection the gateway failed to intercept
// shows up there.
var (
	origin4 = netip.MustParseAddrPort("203.0.113.10:443")
	origin6 = netip.MustParseAddrPort("[2001:db8:1::10]:80")
)

// interception is how the gateway hands the client's connections to the
// listener: one of the rulesets below.
type interception struct {
	name    string
	tproxy  bool // tproxy (else redirect)
	notrack bool // conntrack off for the client's packets (tproxy only)
}

var interceptions = []interception{
	{name: "redirect"},
	{name: "tproxy", tproxy: true},
	{name: "tproxy notrack", tproxy: true, notrack: true},
}

// intercept loads the interception's ruleset into the gateway: TCP 80 and
// 443 from the client subnet go to port; with tproxy, marked packets are
// delivered locally by policy routing (table 100).
func intercept(t *testing.T, in *testenv.Inline, how interception, port int) {
	t.Helper()
	var rules string
	if how.tproxy {
		notrack := ""
		if how.notrack {
			notrack = `iifname "lan0" notrack`
		}
		rules = fmt.Sprintf(`table inet origdst_test {
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		%s
	}
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname "lan0" meta l4proto tcp socket transparent 1 meta mark set 1 accept
		iifname "lan0" tcp dport { 80, 443 } tproxy to :%d meta mark set 1 accept
	}
}
`, notrack, port)
		for _, fam := range []string{"-4", "-6"} {
			in.Gateway.MustRun(t, "ip", fam, "rule", "add", "fwmark", "1", "lookup", "100")
		}
		in.Gateway.MustRun(t, "ip", "-4", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
		in.Gateway.MustRun(t, "ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")
	} else {
		rules = fmt.Sprintf(`table inet origdst_test {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "lan0" tcp dport { 80, 443 } redirect to :%d
	}
}
`, port)
	}
	path := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	in.Gateway.MustRun(t, "nft", "-f", path)
}

// TestDestination: a client whose default route is the gateway dials an
// origin on the internet; the gateway's nftables hands the connection to a
// listener from Listen, and Destination reports the origin the client
// dialed, for each interception, each family and each kind of listening
// socket. The client sees the origin's address as its peer, bytes flow
// both ways, and the origin's honeypot gets nothing. A connection made to
// the listener itself reports the listener's own address.
func TestDestination(t *testing.T) {
	sockets := []struct {
		name   string
		listen string // on the gateway
		origin netip.AddrPort
	}{
		{"ipv4 socket", "10.0.1.1:0", origin4},
		{"ipv4 on a dual-stack socket", "0.0.0.0:0", origin4},
		{"ipv6 socket", "[fd00:0:0:1::1]:0", origin6},
		{"ipv6 on a dual-stack socket", "[::]:0", origin6},
	}
	for _, how := range interceptions {
		for _, sock := range sockets {
			t.Run(how.name+"/"+sock.name, func(t *testing.T) {
				t.Parallel()
				in := testenv.NewInline(t, origin4.Addr().String(), origin6.Addr().String())
				hp := in.Internet.Honeypot(t, origin4.String(), origin6.String())

				var ln *net.TCPListener
				err := in.Gateway.Do(func() (err error) {
					ln, err = origdst.Listen(context.Background(), sock.listen, how.tproxy)
					return err
				})
				if err != nil {
					t.Fatalf("Listen(%s, tproxy=%v): %v", sock.listen, how.tproxy, err)
				}
				t.Cleanup(func() { ln.Close() })
				listenPort := ln.Addr().(*net.TCPAddr).Port
				intercept(t, in, how, listenPort)

				client := in.ClientAddr4
				if sock.origin.Addr().Is6() {
					client = in.ClientAddr6
				}
				conn, accepted := connect(t, in, ln, sock.origin)
				got, err := origdst.Destination(accepted)
				if err != nil {
					t.Fatalf("Destination: %v", err)
				}
				if got != sock.origin {
					t.Errorf("Destination = %v, want %v (the origin the client dialed)", got, sock.origin)
				}
				if peer := accepted.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); peer != client {
					t.Errorf("the listener's peer is %v, want the client %v", peer, client)
				}
				if peer := conn.RemoteAddr().(*net.TCPAddr).AddrPort(); peer != sock.origin {
					t.Errorf("the client's peer is %v, want %v", peer, sock.origin)
				}
				exchange(t, conn, accepted)

				// Addressed to the listener itself: no translation, the
				// listener's own address (what a front end refuses as a loop).
				gateway := in.GatewayLAN4
				if sock.origin.Addr().Is6() {
					gateway = in.GatewayLAN6
				}
				self := netip.AddrPortFrom(gateway, uint16(listenPort))
				_, direct := connect(t, in, ln, self)
				if got, err := origdst.Destination(direct); err != nil || got != self {
					t.Errorf("Destination of a direct connection = %v, %v; want %v", got, err, self)
				}
				hp.AssertNone(t)
			})
		}
	}
}

// TestDestinationAllocs: Destination runs once per connection on the
// accept path, and allocates only the RawConn the runtime hands out.
func TestDestinationAllocs(t *testing.T) {
	in := testenv.NewInline(t, origin4.Addr().String())
	var ln *net.TCPListener
	err := in.Gateway.Do(func() (err error) {
		ln, err = origdst.Listen(context.Background(), "0.0.0.0:0", false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	intercept(t, in, interceptions[0], ln.Addr().(*net.TCPAddr).Port)
	_, accepted := connect(t, in, ln, origin4)
	var got netip.AddrPort
	n := testing.AllocsPerRun(100, func() { got, _ = origdst.Destination(accepted) })
	if got != origin4 {
		t.Fatalf("Destination = %v, want %v", got, origin4)
	}
	limit := 1.0
	if raceEnabled {
		limit = 2 // the pool drops some queries: a new one costs two
	}
	if n > limit {
		t.Errorf("Destination allocates %.2f times per call, want at most %.0f", n, limit)
	}
}

// connect dials to from the client namespace and returns both ends.
func connect(t *testing.T, in *testenv.Inline, ln *net.TCPListener, to netip.AddrPort) (client net.Conn, accepted *net.TCPConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := in.Client.DialContext(ctx, "tcp", to.String())
	if err != nil {
		t.Fatalf("client dial %v: %v", to, err)
	}
	t.Cleanup(func() { client.Close() })
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	accepted, err = ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { accepted.Close() })
	return client, accepted
}

// exchange sends a line each way.
func exchange(t *testing.T, client net.Conn, server *net.TCPConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"client to listener", client, server}, {"listener to client", server, client}} {
		const msg = "hello through the gateway\n"
		if _, err := io.WriteString(dir.from, msg); err != nil {
			t.Fatalf("%s: write: %v", dir.name, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(dir.to, buf); err != nil || string(buf) != msg {
			t.Fatalf("%s: read %q, %v", dir.name, buf, err)
		}
	}
}

// TestDestinationClosed: a closed connection is an error, not an address.
func TestDestinationClosed(t *testing.T) {
	ln, err := origdst.Listen(context.Background(), "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got, err := origdst.Destination(c); err == nil {
		t.Errorf("Destination of a closed connection = %v, want an error", got)
	}
}

// TestListenTransparentNeedsCapability: without CAP_NET_RAW and
// CAP_NET_ADMIN the tproxy listener is refused with an error that says
// what is missing, and a redirect listener needs neither.
func TestListenTransparentNeedsCapability(t *testing.T) {
	ns := testenv.NewNetns(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The helper drops every capability (setpriv, util-linux) and runs
	// this test binary's listenHelper.
	for _, tproxy := range []bool{false, true} {
		stdout, stderr, exit := ns.Run(t, "setpriv", "--inh-caps=-all", "--bounding-set=-all", "--",
			"env", helperEnv+"="+fmt.Sprint(tproxy), self, "-test.run=^$")
		out := strings.TrimSpace(stdout + stderr)
		switch {
		case !tproxy && exit != 0:
			t.Errorf("redirect listener without capabilities: exit %d: %s", exit, out)
		case tproxy && (exit == 0 || !strings.Contains(out, "needs CAP_NET_RAW or CAP_NET_ADMIN")):
			t.Errorf("tproxy listener without capabilities: exit %d: %s", exit, out)
		}
	}
}

// helperEnv makes the test binary a listener helper (see TestMain): it
// listens with tproxy set to the variable's value and exits 0, or prints
// the error and exits 2.
const helperEnv = "ORIGDST_LISTEN_HELPER"

func listenHelper(tproxy string) int {
	ln, err := origdst.Listen(context.Background(), "127.0.0.1:0", tproxy == "true")
	if err != nil {
		fmt.Println(err)
		return 2
	}
	ln.Close()
	return 0
}
