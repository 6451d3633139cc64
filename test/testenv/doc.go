// Package testenv is the shared harness for egressd's black-box end-to-end
// tests. It owns real, in-process test infrastructure on loopback and inside
// network namespaces the tests create:
//
//   - [DNSServer]: a miekg/dns server (UDP and TCP) with a settable zone,
//     answer sequences for rebinding tests, and per-name query counters.
//   - [CA]: a throwaway certificate authority issuing leaf certificates,
//     with a PEM file for curl --cacert. (Both live in test/testnet, which
//     cmd/egressbench uses too; testenv adds namespaces and t.Cleanup.)
//   - [Origin]: TLS and plain HTTP origins that echo what reached them
//     (Host, path, SNI, headers, their own name) as JSON ([Echo]).
//   - [Egressd] and [Proc]: the egressd binary, built once per test binary,
//     started with a config string, awaited until ready, its JSON access
//     log captured, stopped by PID (SIGTERM, then SIGKILL) on cleanup.
//   - [Config], [NewConfig], [YAML]: egressd's config file built as a typed
//     struct (proxy/config's own), never as YAML text.
//   - [Connect], [ConnectTunnel], [ReadConnectResponse], [Proc.Connect]: the
//     one CONNECT client for raw connections.
//   - [HAProxy]: a real HAProxy started from a config, awaited, stopped by
//     PID, with its session log and stats.
//   - [Curl]: real curl with a minimal environment and a time bound.
//   - [Netns]: a network namespace with extra loopback addresses (10.0.0.5,
//     169.254.169.254, ...) and [Honeypot] listeners counting connections,
//     so deny tests can prove that nothing was dialed.
//   - [Inline]: the in-line gateway topology, a client namespace whose
//     default routes (IPv4 and IPv6) go through a gateway namespace to an
//     "internet" namespace holding origins, DNS servers and honeypots on
//     documentation addresses, 169.254.169.254 and 10.0.0.5. [Netns.Do],
//     [Netns.Sysctl] and [Netns.MustRun] set up what the gateway does
//     (nftables, forwarding, listeners with socket options of their own).
//
// # Network namespaces
//
// Every helper that listens or dials has a variant taking a *Netns; a nil
// *Netns means the test's own (host) namespace. Sockets for a namespace are
// created on a dedicated OS thread that joins the namespace with setns(2);
// a socket stays in the namespace it was created in, so the test process
// serves DNS, origins and honeypots inside the namespace without helper
// processes. egressd and curl run inside it through `ip netns exec`. Tests
// in the host namespace must only ever use 127.0.0.0/8 and ::1; addresses
// such as 10.0.0.5 exist only inside a test namespace.
//
// # Use
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// A deny test that proves no packet left:
//
//	ns := testenv.NewNetns(t, "10.0.0.5/32", "169.254.169.254/32")
//	hp := ns.Honeypot(t, "10.0.0.5:443", "169.254.169.254:80")
//	dnsSrv := testenv.NewDNSServerIn(t, ns, "127.0.0.1")
//	dnsSrv.Set("evil.test", 0, netip.MustParseAddr("10.0.0.5"))
//	p := (&testenv.Egressd{Netns: ns}).StartConfig(t, c) // c as in "Writing a test"
//	ns.Curl(t, "-x", p.ProxyURL().String(), "https://evil.test/")
//	p.WaitForLog(t, testenv.Field("reason", "private_range"))
//	hp.AssertNone(t)
//
// # Writing a test
//
// Configs: start from [NewConfig] (egressd's defaults, no listener, a
// drain that ends at once), set what the test needs, start with
// [Egressd.StartConfig]; for a reload, rewrite [Proc.ConfigPath] with
// [YAML] and send SIGHUP. Durations are time.Duration, rules [Rule]:
//
//	c := testenv.NewConfig(t)
//	c.Listen = testenv.Listeners(t, ns, "127.0.0.1")
//	c.DNS.Servers = []string{dnsSrv.Addr()}
//	c.Timeouts.Handshake = 3 * time.Second
//	c.Policy.Rules = []testenv.Rule{{Name: "origin", Hosts: []string{"allowed.test"},
//		Ports: []int{o.Port()}, AllowRanges: []string{"127.0.0.0/24"}}}
//	p := (&testenv.Egressd{Netns: ns}).StartConfig(t, c)
//
// Only a config that is itself the subject of the test (a file egressd
// must refuse, line numbers in its errors, the input of `egressd learn`)
// is written as YAML text and given to [Egressd.Start].
//
// CONNECT by hand (a raw conn, exact bytes after the tunnel opens): use
// [Proc.Connect], or [Connect] / [ConnectTunnel] on a conn you dialed (from
// a client address of your own with [Netns.DialFrom]). Prefer real clients
// (curl, http.Transport with Proxy) whenever the test is not about the
// bytes. Tests that need a load balancer use HAProxy through [StartHAProxy]
// (the farm fixture in test/farm_helpers_test.go renders the deployments'
// own haproxy.cfg.tmpl); test/fixture_test.go's farm is the ready-made
// single egressd with origins, DNS and honeypots, extended with
// newFarmWith.
//
// [Main] runs the tests, removes the built binary, and checks for leaked
// goroutines. Tools: curl and ip (iproute2), installed by scripts/setup.sh;
// namespaces need root.
package testenv
