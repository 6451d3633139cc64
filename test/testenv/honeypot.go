package testenv

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// Honeypot is a set of TCP listeners that accept connections, record them
// and close them at once. Put them on addresses egressd must never reach
// (inside a [Netns]) and assert with [Honeypot.AssertNone] that nothing
// arrived.
type Honeypot struct {
	ns  *Netns
	lns []net.Listener
	wg  sync.WaitGroup

	mu       sync.Mutex
	changed  chan struct{}       // closed and replaced on every accept
	accepted map[string][]string // listen address -> peer addresses, in accept order
	probes   map[string]bool     // peer addresses of Sync's own probes (not counted)
}

// NewHoneypot listens on every addr ("ip:port"; port 0 picks one, see
// Addrs) inside ns (nil: the host namespace, where only loopback addresses
// are allowed). It stops on cleanup.
func NewHoneypot(t testing.TB, ns *Netns, addrs ...string) *Honeypot {
	t.Helper()
	h := &Honeypot{ns: ns, changed: make(chan struct{}), accepted: map[string][]string{}, probes: map[string]bool{}}
	t.Cleanup(h.close)
	for _, a := range addrs {
		ln, err := ns.Listen("tcp", a)
		if err != nil {
			t.Fatalf("honeypot listen %s: %v", a, err)
		}
		h.accepted[ln.Addr().String()] = nil
		h.lns = append(h.lns, ln)
	}
	// Serve only once the maps and h.lns are complete: they are read
	// without the lock below.
	for _, ln := range h.lns {
		h.wg.Add(1)
		go h.serve(ln, ln.Addr().String())
	}
	return h
}

// Honeypot is [NewHoneypot] inside n.
func (n *Netns) Honeypot(t testing.TB, addrs ...string) *Honeypot {
	t.Helper()
	return NewHoneypot(t, n, addrs...)
}

func (h *Honeypot) serve(ln net.Listener, key string) {
	defer h.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		peer := c.RemoteAddr().String()
		c.Close()
		h.mu.Lock()
		h.accepted[key] = append(h.accepted[key], peer)
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
	}
}

func (h *Honeypot) close() {
	for _, ln := range h.lns {
		ln.Close()
	}
	h.wg.Wait()
}

// Addrs returns the listen addresses, in the order given (ports resolved).
func (h *Honeypot) Addrs() []string {
	out := make([]string, len(h.lns))
	for i, ln := range h.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

// Count returns the connections accepted on addr (as returned by Addrs),
// not counting Sync's probes. A connection the kernel completed but the
// honeypot has not accepted yet is not counted: call Sync first.
func (h *Honeypot) Count(addr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.countLocked(addr)
}

func (h *Honeypot) countLocked(addr string) int {
	n := 0
	for _, peer := range h.accepted[addr] {
		if !h.probes[peer] {
			n++
		}
	}
	return n
}

// Total returns the connections accepted on all listeners (see Count).
func (h *Honeypot) Total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for addr := range h.accepted {
		n += h.countLocked(addr)
	}
	return n
}

// Sync makes sure every connection that reached a listener's accept queue
// before the call has been counted: it connects a probe to each listener
// and waits until the honeypot accepted it (queues are FIFO). Probes are
// not counted.
func (h *Honeypot) Sync(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range h.Addrs() {
		c, err := h.ns.DialContext(ctx, "tcp", probeAddr(addr))
		if err != nil {
			t.Fatalf("honeypot probe %s: %v", addr, err)
		}
		probe := c.LocalAddr().String()
		h.mu.Lock()
		h.probes[probe] = true
		h.mu.Unlock()
		h.waitUntil(t, ctx, func() bool { return slices.Contains(h.accepted[addr], probe) })
		c.Close()
	}
}

// probeAddr is where Sync's probe for a listener on addr goes: addr, or
// loopback for a wildcard listener (a connect to [::] is refused inside a
// namespace).
func probeAddr(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	switch {
	case err != nil || !ap.Addr().IsUnspecified():
		return addr
	case ap.Addr().Is4():
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port()).String()
	}
	return netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port()).String()
}

// AssertNone syncs and fails the test if any listener accepted a
// connection.
func (h *Honeypot) AssertNone(t testing.TB) {
	t.Helper()
	h.Sync(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, addr := range h.Addrs() {
		if n := h.countLocked(addr); n > 0 {
			t.Errorf("honeypot %s accepted %d connection(s): something dialed a forbidden address", addr, n)
		}
	}
}

// WaitFor waits up to timeout for at least n connections on addr; it fails
// the test on timeout. Use it for positive controls.
func (h *Honeypot) WaitFor(t testing.TB, addr string, n int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h.waitUntil(t, ctx, func() bool { return h.countLocked(addr) >= n })
}

// waitUntil waits for cond (evaluated with h.mu held) or ctx.
func (h *Honeypot) waitUntil(t testing.TB, ctx context.Context, cond func() bool) {
	t.Helper()
	for {
		h.mu.Lock()
		ok, changed := cond(), h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("honeypot: condition not met: %v", ctx.Err())
		}
	}
}
