package egress

import (
	"context"
	"net"
	"sync"
	"time"
)

// Registry tracks live tunnels so that a drain can wait for them and then
// cut what is left. The zero value is not usable; use NewRegistry.
type Registry struct {
	mu    sync.Mutex
	next  uint64
	conns map[uint64][2]net.Conn
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{conns: map[uint64][2]net.Conn{}} }

// Add tracks a tunnel's two conns and returns its id for Remove.
func (r *Registry) Add(a, b net.Conn) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.conns[r.next] = [2]net.Conn{a, b}
	return r.next
}

// Remove forgets a tunnel.
func (r *Registry) Remove(id uint64) {
	r.mu.Lock()
	delete(r.conns, id)
	r.mu.Unlock()
}

// Len is the number of live tunnels.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// CloseAll closes both conns of every live tunnel; their relays then end.
func (r *Registry) CloseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.conns {
		p[0].Close()
		p[1].Close()
	}
}

// Wait returns when no tunnel is left or ctx is done. It polls: it runs only
// during a drain.
func (r *Registry) Wait(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for r.Len() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
