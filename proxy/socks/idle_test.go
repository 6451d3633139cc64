package socks

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleTunnelGoroutines: once a SOCKS5 tunnel is established, only the
// relay's own two goroutines remain for it (as for a CONNECT tunnel):
// neither the connection goroutine nor go-socks5's two copy loops park for
// the tunnel's life.
func TestIdleTunnelGoroutines(t *testing.T) {
	e := newEnv(t, envOptions{idle: time.Minute})
	port := e.origin.addr().Port()
	const n = 50
	base := runtime.NumGoroutine()
	var conns []net.Conn
	for range n {
		c := e.dial()
		c.Write(cat(greeting(0), reqDomain(cmdConnect, "allowed.test", port), []byte("hi")))
		buf := make([]byte, 2+10+2)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf[12:]) != "hi" {
			t.Fatalf("tunnel: % x %v", buf, err)
		}
		conns = append(conns, c)
	}
	// Each idle tunnel: the relay's 2 goroutines plus the echo origin's 1.
	// Goroutines that finished their work may still be returning: bounded
	// wait for the count to settle.
	want := base + n*(2+1)
	deadline := time.Now().Add(2 * time.Second)
	got := runtime.NumGoroutine()
	for got > want && time.Now().Before(deadline) {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // the count has no event to wait on
		got = runtime.NumGoroutine()
	}
	t.Logf("%d idle tunnels: %d goroutines over the base (%.1f per tunnel, origin's included)", n, got-base, float64(got-base)/n)
	if got > want {
		t.Errorf("%d goroutines for %d idle tunnels, want at most %d (2 relay + 1 origin each)", got-base, n, want-base)
	}
	for i, c := range conns {
		c.Write([]byte("again"))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("tunnel %d no longer echoes: %v", i, err)
		}
		c.Close()
	}
}
