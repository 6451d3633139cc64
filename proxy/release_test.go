package proxy

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/config"
)

// TestAbandonedConnectionsReleased: behind a load balancer, connections
// that close, or stall, before a whole request head (TCP health checks,
// scanners, slowloris) must leave nothing behind: after thousands of them
// every connection has been released (the accept pipelines' open sets and
// the limits' counts are back to zero) and the heap is where it was.
func TestAbandonedConnectionsReleased(t *testing.T) {
	s := startPPServer(t)
	httpAddr, socksAddr := s.httpAcc.Addr().String(), s.socksAcc.Addr().String()

	// What a load balancer's clients do before giving up. The header names
	// a client; the conn then closes or goes silent (cut by
	// timeouts.handshake).
	header := "PROXY TCP4 192.0.2.7 192.0.2.1 40000 3128\r\n"
	abandon := []struct {
		name  string
		addr  string
		send  string
		stall bool
	}{
		{"http: header only, closed", httpAddr, header, false},
		{"http: half a request head, closed", httpAddr, header + "GET http://a.test/ HTTP/1.1\r\nHost: a", false},
		{"http: half a CONNECT head, closed", httpAddr, header + "CONNECT a.test:443 HTTP/1.1\r\n", false},
		{"http: header only, silent", httpAddr, header, true},
		{"socks5: header only, closed", socksAddr, header, false},
		{"socks5: half a greeting, silent", socksAddr, header + "\x05", true},
	}
	const perKind = 400 // 2,400 conns a round, at most 200 open at once
	round := func() {
		for _, a := range abandon {
			runConns(t, perKind, 200, func() {
				c, err := net.Dial("tcp", a.addr)
				if err != nil {
					t.Errorf("%s: %v", a.name, err)
					return
				}
				defer c.Close()
				if _, err := c.Write([]byte(a.send)); err != nil {
					t.Errorf("%s: %v", a.name, err)
					return
				}
				if a.stall {
					// egressd closes it when timeouts.handshake passes.
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					c.Read(make([]byte, 1))
				}
			})
		}
		waitFor(t, 30*time.Second, func() bool { return s.openConns() == 0 && s.limits.Open() == 0 },
			func() string {
				return fmt.Sprintf("open client conns: http %d, socks5 %d; counted under the limits %d",
					s.httpAcc.Open(), s.socksAcc.Open(), s.limits.Open())
			})
	}
	round() // warm up pools, maps and goroutine stacks, twice: the first
	round() // round still grows them now and then
	before := heapInUse()
	round()
	after := heapInUse()
	// A leaked connection costs hundreds of bytes (the conn, its
	// accept.Conn and its entry in the open set): 2,400 of them would be
	// over 1 MiB.
	grown := int64(after) - int64(before)
	t.Logf("heap in use: %d bytes before the measured round, %d after", before, after)
	if grown > 256<<10 {
		t.Fatalf("heap grew by %d bytes over %d abandoned connections", grown, perKind*len(abandon))
	}
}

func startPPServer(t *testing.T) *Server {
	t.Helper()
	raw := []byte(`
listen:
  http: "127.0.0.1:0"
  socks5: "127.0.0.1:0"
  admin: ""
  proxy_protocol: true
  trusted_proxies: ["127.0.0.1/32"]
timeouts:
  handshake: 500ms
log:
  access: false
policy:
  mode: enforce
  rules:
    - name: a
      hosts: ["a.test"]
      ports: [80, 443]
`)
	cfg, pol, err := config.LoadBytes(raw, "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, pol, raw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// runConns runs fn n times, at most par at once.
func runConns(t *testing.T, n, par int, fn func()) {
	t.Helper()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn()
		}()
	}
	wg.Wait()
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	for i := 0; i < 2; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
