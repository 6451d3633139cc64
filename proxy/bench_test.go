package proxy

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/egressd/egressd/proxy/config"
)

// BenchmarkNewTunnel opens one tunnel per iteration through an in-process
// server to an echo origin on loopback, as a client that sends one byte and
// hangs up: dial, the proxy's handshake, one round trip, close. It measures
// the per-tunnel cost of the accept pipeline and the front end (the client
// side's cost is in the figures too, the same for every version). The
// figures for `make bench` come from the built binary; this is the quick
// A/B while changing the front ends.
func BenchmarkNewTunnel(b *testing.B) {
	origin := startEcho(b)
	s := startBenchServer(b, origin.Addr().(*net.TCPAddr).Port)
	port := origin.Addr().(*net.TCPAddr).Port
	connect := []byte(fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, port))
	const established = "HTTP/1.1 200 Connection established\r\n\r\n"
	socks := []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)}
	cases := []struct {
		name, addr string
		send       []byte
		answer     int // bytes of the proxy's answer before the tunnel
	}{
		{"connect", s.cfg.Load().Listen.HTTP, connect, len(established)},
		{"socks5", s.cfg.Load().Listen.SOCKS5, socks, 2 + 10},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 64)
			cpu0 := cpuTime()
			for b.Loop() {
				c, err := net.Dial("tcp", tc.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(append(tc.send, 'x')); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:tc.answer+1]); err != nil {
					b.Fatal(err)
				}
				if buf[tc.answer] != 'x' {
					b.Fatalf("answer %q", buf[:tc.answer+1])
				}
				c.Close()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// startBenchServer listens on free loopback ports and allows tunnels to
// 127.0.0.1:port, with the access log off.
func startBenchServer(b *testing.B, port int) *Server {
	b.Helper()
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	raw := []byte(fmt.Sprintf(`
listen:
  http: %q
  socks5: %q
  admin: ""
log:
  access: false
policy:
  mode: enforce
  rules:
    - name: echo
      cidrs: ["127.0.0.1/32"]
      ports: [%d]
      allow_ranges: ["127.0.0.0/24"]
`, free(), free(), port))
	cfg, pol, err := config.LoadBytes(raw, "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, pol, raw, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// startEcho echoes every connection until EOF.
func startEcho(b *testing.B) net.Listener {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln
}
