package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/sni/snitest"
	"github.com/egressd/egressd/test/testenv"
)

// BenchmarkInlineTunnel: egressd's CPU per 1,000 new TLS tunnels through
// the in-line gateway (a client with no proxy settings, its connection
// redirected by the shipped nftables rules, decided on its SNI) against
// the same tunnels asked for with CONNECT, on the same egressd process in
// the same topology. Each tunnel carries one ClientHello naming
// allowed.test to the origin and the origin's one byte back; egressd
// parses the hello, decides, dials the pinned address and splices both
// ways in either case. The metric is egressd's own user and system CPU
// (/proc/PID/stat), so the clients and the origin do not count; the
// access log is off, as in proxy's BenchmarkNewTunnel. The inline case
// also reports its figure over the connect case's of the same run
// (x-connect-cpu; issue 21's target is at most 1.10). make bench
// (scripts/bench.sh) runs it once per round and tabulates it with
// egressbench report -inline.
//
//	go test -run '^$' -bench BenchmarkInlineTunnel -benchtime 5000x ./test/
func BenchmarkInlineTunnel(b *testing.B) {
	in := testenv.NewInline(b, inlineWeb.String(), inlineDNS.String())
	dns, err := testenv.StartDNSServerAt(b, in.Internet, netip.AddrPortFrom(inlineDNS, 53).String())
	if err != nil {
		b.Fatal(err)
	}
	dns.Set("allowed.test", 300, inlineWeb)
	origin := netip.AddrPortFrom(inlineWeb, 443)
	ln, err := in.Internet.Listen("tcp", origin.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 4096)); err == nil {
					c.Write([]byte{'x'})
				}
			}()
		}
	}()

	cfg := testenv.NewConfig(b)
	cfg.Listen.Admin = in.Gateway.FreeAddr(b, "127.0.0.1")
	cfg.Listen.HTTP = in.Gateway.FreeAddr(b, in.GatewayWAN4.String())
	cfg.Listen.Transparent = in.Gateway.FreeAddr(b, "::")
	_, port, _ := net.SplitHostPort(cfg.Listen.Transparent)
	cfg.Log.Access = false
	cfg.DNS.Servers = []string{netip.AddrPortFrom(inlineDNS, 53).String()}
	cfg.Policy.Rules = []testenv.Rule{{Name: "web", Hosts: []string{"allowed.test"}, Ports: []int{443}, AllowRanges: []string{"203.0.113.0/28"}}}
	p := (&testenv.Egressd{Netns: in.Gateway}).StartConfig(b, cfg)
	ruleset, _ := filepath.Abs("../deployments/nftables/egressd-transparent.nft")
	loader, _ := filepath.Abs("../deployments/nftables/egressd-transparent.sh")
	if out, errOut, exit := in.Gateway.Run(b, "env", "EGRESSD_TRANSPARENT_RULESET="+ruleset,
		"EGRESSD_CLIENT_CIDRS="+in.ClientPrefix4.String()+","+in.ClientPrefix6.String(),
		"EGRESSD_TRANSPARENT_PORT="+port, "sh", loader, "start"); exit != 0 {
		b.Fatalf("transparent-rules start: exit %d\n%s%s", exit, out, errOut)
	}

	hello := snitest.HelloFor("allowed.test")
	connect := append([]byte("CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n"), hello...)
	const established = "HTTP/1.1 200 Connection established\r\n\r\n"
	cases := []struct {
		name   string
		ns     *testenv.Netns
		addr   string
		send   []byte
		answer int // bytes before the origin's
	}{
		// CONNECT from the internet side: the rules keep the client
		// subnet away from egressd's proxy listener.
		{"connect", in.Internet, cfg.Listen.HTTP, connect, len(established)},
		{"inline", in.Client, origin.String(), hello, 0},
	}
	var connectCPU float64 // the connect case's figure, for the inline case's ratio
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 64)
			tunnel := func() {
				c, err := tc.ns.DialContext(context.Background(), "tcp", tc.addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(tc.send); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:tc.answer+1]); err != nil || buf[tc.answer] != 'x' {
					b.Fatalf("answer %q: %v", buf[:tc.answer+1], err)
				}
			}
			tunnel() // the name is resolved and cached before the clock starts
			cpu0 := procCPU(b, p.PID())
			for b.Loop() {
				tunnel()
			}
			cpu := float64(procCPU(b, p.PID())-cpu0) / float64(time.Millisecond) / float64(b.N) * 1000
			b.ReportMetric(cpu, "egressd-cpu-ms/1k")
			if tc.name == "connect" {
				connectCPU = cpu
			} else if connectCPU > 0 {
				b.ReportMetric(cpu/connectCPU, "x-connect-cpu")
			}
		})
	}
}

// procCPU is the user and system CPU time process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is the
	// first, utime and stime the 12th and 13th, in clock ticks (USER_HZ,
	// 100 on Linux).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
