package limits

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// Limits are the connection caps. Zero means no limit.
type Limits struct {
	MaxConnections          int // all client connections of every wrapped listener
	MaxConnectionsPerClient int // client connections from one IP
}

// Options configure a Limiter.
type Options struct {
	// Limits are the initial caps; SetLimits changes them.
	Limits Limits
	// Log writes the access line of each refusal and updates the metrics
	// (egressd_limit_rejections_total, egressd_client_connections,
	// egressd_requests_total). Nil: neither.
	Log *accesslog.Logger
	// RefuseTimeout bounds each of the two steps of a refusal: reading the
	// client's request (so that closing does not reset a connection with
	// unread bytes and lose the answer), then writing the answer and
	// waiting for the client to close. Zero: 2s.
	RefuseTimeout time.Duration
	// MaxRefusing bounds refusals in progress; a connection refused past it
	// is closed at once, without an answer. Zero: 64.
	MaxRefusing int
	// Sweep is how often connections closed elsewhere (hijacked CONNECT
	// tunnels, SOCKS5) are found and released, which moves
	// egressd_client_connections. Decisions never wait for it. Zero: 250ms.
	Sweep time.Duration
}

// sweepGap rate-limits the sweeps an accept at a limit triggers, so that a
// flood against a full limiter does not scan every connection per accept:
// after a sweep of n connections (about 20 ns each), the next one waits n
// microseconds, which caps sweeping at a few percent of a core (10 ms
// between sweeps of 10,000 connections). A connection closed within the gap
// may still count against a new one.
func sweepGap(n int) time.Duration { return time.Duration(n) * time.Microsecond }

// Limiter counts client connections and enforces Limits. Create it with New
// and stop it with Close.
type Limiter struct {
	o       Options
	metrics *accesslog.Metrics

	mu        sync.Mutex
	limits    Limits
	conns     map[net.Conn]*entry
	clients   map[netip.Addr]*client
	lastSweep time.Time
	refusing  map[net.Conn]struct{}
	closed    bool

	stop chan struct{}
	wg   sync.WaitGroup // the sweeper and every refusal
}

// entry is one admitted connection.
type entry struct {
	client netip.Addr // invalid when the connection is not counted per client
	socket policy.Listener
	rc     syscall.RawConn // nil: only Release (ConnState) can release it
}

// client is the connections of one client IP.
type client struct {
	conns     map[net.Conn]struct{}
	lastSweep time.Time
}

// New returns a Limiter and starts its sweeper.
func New(o Options) *Limiter {
	if o.RefuseTimeout <= 0 {
		o.RefuseTimeout = 2 * time.Second
	}
	if o.MaxRefusing <= 0 {
		o.MaxRefusing = 64
	}
	if o.Sweep <= 0 {
		o.Sweep = 250 * time.Millisecond
	}
	l := &Limiter{
		o:        o,
		metrics:  o.Log.Metrics(),
		limits:   o.Limits,
		conns:    map[net.Conn]*entry{},
		clients:  map[netip.Addr]*client{},
		refusing: map[net.Conn]struct{}{},
		stop:     make(chan struct{}),
	}
	l.wg.Add(1)
	go l.sweeper()
	return l
}

// SetLimits replaces the caps (a config reload). Connections already
// admitted stay; the new caps apply to the next accepts.
func (l *Limiter) SetLimits(lim Limits) {
	l.mu.Lock()
	l.limits = lim
	l.mu.Unlock()
}

// Open returns the number of client connections admitted and not yet seen
// closed.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepAllLocked()
	return len(l.conns)
}

// ConnState is an http.Server ConnState hook: a connection the HTTP server
// closed is released at once. A hijacked one (CONNECT) stays counted until
// whoever owns it then closes it.
func (l *Limiter) ConnState(c net.Conn, s http.ConnState) {
	if s == http.StateClosed {
		l.Release(c)
	}
}

// Release forgets c. Only the first release of an admitted connection has
// an effect, so every owner may call it.
func (l *Limiter) Release(c net.Conn) {
	l.mu.Lock()
	l.releaseLocked(c)
	l.mu.Unlock()
}

// Wait returns nil once every admitted connection has been closed, or ctx's
// error when ctx ends first. It is the end of a drain.
func (l *Limiter) Wait(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for l.Open() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close stops the sweeper, cuts refusals in progress and waits for their
// goroutines. Wrapped listeners then refuse by closing at once. It does not
// close admitted connections: their owners do.
func (l *Limiter) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.stop)
	for c := range l.refusing {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// admit counts c for its client and socket, or returns the limit it would
// exceed. perClient false counts c only against MaxConnections.
func (l *Limiter) admit(c net.Conn, ip netip.Addr, socket policy.Listener, perClient bool) (limit string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	lim := l.limits
	if !perClient {
		ip = netip.Addr{}
	}
	cl := l.clients[ip]
	if ip.IsValid() && lim.MaxConnectionsPerClient > 0 && cl != nil && len(cl.conns) >= lim.MaxConnectionsPerClient {
		if now.Sub(cl.lastSweep) >= sweepGap(len(cl.conns)) {
			cl.lastSweep = now
			for cc := range cl.conns {
				l.releaseIfClosedLocked(cc)
			}
		}
		if len(cl.conns) >= lim.MaxConnectionsPerClient {
			return accesslog.LimitMaxConnectionsPerClient
		}
	}
	if lim.MaxConnections > 0 && len(l.conns) >= lim.MaxConnections {
		if now.Sub(l.lastSweep) >= sweepGap(len(l.conns)) {
			l.sweepAllLocked()
		}
		if len(l.conns) >= lim.MaxConnections {
			return accesslog.LimitMaxConnections
		}
	}
	e := &entry{client: ip, socket: socket}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			e.rc = rc
		}
	}
	l.conns[c] = e
	cl = l.clients[ip] // the sweep may have removed it
	if cl == nil {
		cl = &client{conns: map[net.Conn]struct{}{}}
		l.clients[ip] = cl
	}
	cl.conns[c] = struct{}{}
	l.metrics.ClientConnsAdd(socket, 1)
	return ""
}

func (l *Limiter) releaseLocked(c net.Conn) {
	e, ok := l.conns[c]
	if !ok {
		return
	}
	delete(l.conns, c)
	if cl := l.clients[e.client]; cl != nil {
		delete(cl.conns, c)
		if len(cl.conns) == 0 {
			delete(l.clients, e.client)
		}
	}
	l.metrics.ClientConnsAdd(e.socket, -1)
}

// releaseIfClosedLocked releases c if its descriptor has been closed: Control
// fails once Close was called, whoever called it.
func (l *Limiter) releaseIfClosedLocked(c net.Conn) {
	e := l.conns[c]
	if e == nil || e.rc == nil {
		return
	}
	if e.rc.Control(func(uintptr) {}) != nil {
		l.releaseLocked(c)
	}
}

func (l *Limiter) sweepAllLocked() {
	l.lastSweep = time.Now()
	for c := range l.conns {
		l.releaseIfClosedLocked(c)
	}
}

func (l *Limiter) sweeper() {
	defer l.wg.Done()
	t := time.NewTicker(l.o.Sweep)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.sweepAllLocked()
			l.mu.Unlock()
		}
	}
}

// AdmitClient counts c, admitted by a listener with PeerIsProxy, against
// MaxConnectionsPerClient for ip, the client a PROXY header named. Past the
// cap it releases c, refuses it (the same answer, access line and metrics
// as a refusal at accept) and returns false; the caller must not use c
// then. A conn the Limiter does not know (not wrapped, or already released)
// is left alone and admitted.
func (l *Limiter) AdmitClient(c net.Conn, ip netip.Addr, socket policy.Listener) bool {
	ip = ip.Unmap()
	l.mu.Lock()
	e := l.conns[c]
	if e == nil || !ip.IsValid() || e.client == ip {
		l.mu.Unlock()
		return true
	}
	lim := l.limits.MaxConnectionsPerClient
	cl := l.clients[ip]
	if lim > 0 && cl != nil && len(cl.conns) >= lim {
		now := time.Now()
		if now.Sub(cl.lastSweep) >= sweepGap(len(cl.conns)) {
			cl.lastSweep = now
			for cc := range cl.conns {
				l.releaseIfClosedLocked(cc)
			}
		}
		if len(cl.conns) >= lim {
			l.releaseLocked(c)
			l.mu.Unlock()
			l.refuse(c, ip, socket, accesslog.LimitMaxConnectionsPerClient)
			return false
		}
	}
	// Move c from the bucket it was counted in to its client's.
	if old := l.clients[e.client]; old != nil {
		delete(old.conns, c)
		if len(old.conns) == 0 {
			delete(l.clients, e.client)
		}
	}
	e.client = ip
	cl = l.clients[ip] // the sweep may have removed it
	if cl == nil {
		cl = &client{conns: map[net.Conn]struct{}{}}
		l.clients[ip] = cl
	}
	cl.conns[c] = struct{}{}
	l.mu.Unlock()
	return true
}
