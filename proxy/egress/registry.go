package egress

import (
	"context"
	"net"
	"sync"
)

// Registry tracks live tunnels so that a drain can wait for them and then
// cut what is left. The zero value is ready to use.
type Registry struct {
	mu      sync.Mutex
	next    uint64
	conns   map[uint64][2]net.Conn
	empty   chan struct{} // closed while no tunnel is live; nil means "closed"
	cutting bool          // CloseAll ran: tunnels added later are cut at once
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{} }

// Add tracks a tunnel's two conns and returns its id for Remove. After
// CloseAll, Add closes both conns at once (a drain also cuts the tunnels
// that were still being set up) and still returns an id for Remove.
func (r *Registry) Add(a, b net.Conn) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	if r.cutting {
		a.Close()
		b.Close()
		return r.next
	}
	if r.conns == nil {
		r.conns = map[uint64][2]net.Conn{}
	}
	if len(r.conns) == 0 {
		r.empty = make(chan struct{})
	}
	r.conns[r.next] = [2]net.Conn{a, b}
	return r.next
}

// Remove forgets a tunnel. Removing an unknown id does nothing.
func (r *Registry) Remove(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.conns[id]; !ok {
		return
	}
	delete(r.conns, id)
	if len(r.conns) == 0 && r.empty != nil {
		close(r.empty)
		r.empty = nil
	}
}

// Len is the number of live tunnels.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// CloseAll closes both conns of every live tunnel (their relays then end
// and Remove them), and of every tunnel added from now on.
func (r *Registry) CloseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutting = true
	for _, p := range r.conns {
		p[0].Close()
		p[1].Close()
	}
}

// Wait returns nil once no tunnel is live, or ctx's error if ctx ends first.
func (r *Registry) Wait(ctx context.Context) error {
	r.mu.Lock()
	ch := r.empty
	r.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
