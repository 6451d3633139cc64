package limits

import (
	"net/netip"
	"sync"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// Limits are the connection caps. Zero means no limit.
type Limits struct {
	MaxConnections          int // all client connections of every listener
	MaxConnectionsPerClient int // client connections from one IP
}

// Limiter counts client connections and enforces Limits. The zero value
// is not usable; create it with New.
type Limiter struct {
	metrics *accesslog.Metrics // nil: no gauge

	mu      sync.Mutex
	limits  Limits
	total   int
	clients map[netip.Addr]int
}

// New returns a Limiter with caps lim, keeping egressd_client_connections
// in m (nil: no gauge).
func New(lim Limits, m *accesslog.Metrics) *Limiter {
	return &Limiter{metrics: m, limits: lim, clients: map[netip.Addr]int{}}
}

// SetLimits replaces the caps (a config reload). Connections already
// admitted stay; the new caps apply to the next ones.
func (l *Limiter) SetLimits(lim Limits) {
	l.mu.Lock()
	l.limits = lim
	l.mu.Unlock()
}

// Open returns the number of connections admitted and not released.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Slot is one admitted connection's place under the limits. The zero Slot
// holds nothing; releasing it is a no-op.
type Slot struct {
	listener policy.Listener
	client   netip.Addr // invalid: counted only against MaxConnections
	held     bool
}

// Admit counts a new connection on listener (the socket: ListenerHTTP or
// ListenerSOCKS5) against MaxConnections and, when client is valid,
// against client's MaxConnectionsPerClient. It returns the slot to release
// when the connection ends, or the limit (accesslog.LimitMaxConnections,
// accesslog.LimitMaxConnectionsPerClient) it would exceed and an empty
// slot.
func (l *Limiter) Admit(listener policy.Listener, client netip.Addr) (Slot, string) {
	client = client.Unmap()
	l.mu.Lock()
	if limit := l.exceedsLocked(client); limit != "" {
		l.mu.Unlock()
		return Slot{}, limit
	}
	l.total++
	if client.IsValid() {
		l.clients[client]++
	}
	l.mu.Unlock()
	l.metrics.ClientConnsAdd(listener, 1)
	return Slot{listener: listener, client: client, held: true}, ""
}

// Claim counts s, admitted without a client, against client's
// MaxConnectionsPerClient too: behind a load balancer the PROXY header
// names the client after the connection was admitted. Past the cap it
// releases s and returns the limit. A slot already counted for a client,
// or one that holds nothing, is left as it is.
func (l *Limiter) Claim(s *Slot, client netip.Addr) string {
	client = client.Unmap()
	if !s.held || s.client.IsValid() || !client.IsValid() {
		return ""
	}
	l.mu.Lock()
	if max := l.limits.MaxConnectionsPerClient; max > 0 && l.clients[client] >= max {
		l.releaseLocked(s)
		l.mu.Unlock()
		l.metrics.ClientConnsAdd(s.listener, -1)
		return accesslog.LimitMaxConnectionsPerClient
	}
	s.client = client
	l.clients[client]++
	l.mu.Unlock()
	return ""
}

// Release gives s's place back. Only the first release of a slot counts.
func (l *Limiter) Release(s *Slot) {
	if !s.held {
		return
	}
	l.mu.Lock()
	l.releaseLocked(s)
	l.mu.Unlock()
	l.metrics.ClientConnsAdd(s.listener, -1)
}

// releaseLocked gives s's counts back; the caller moves the gauge.
func (l *Limiter) releaseLocked(s *Slot) {
	s.held = false
	l.total--
	if s.client.IsValid() {
		if n := l.clients[s.client] - 1; n > 0 {
			l.clients[s.client] = n
		} else {
			delete(l.clients, s.client)
		}
	}
}

// exceedsLocked returns the limit a new connection of client would exceed.
func (l *Limiter) exceedsLocked(client netip.Addr) string {
	lim := l.limits
	if client.IsValid() && lim.MaxConnectionsPerClient > 0 && l.clients[client] >= lim.MaxConnectionsPerClient {
		return accesslog.LimitMaxConnectionsPerClient
	}
	if lim.MaxConnections > 0 && l.total >= lim.MaxConnections {
		return accesslog.LimitMaxConnections
	}
	return ""
}
