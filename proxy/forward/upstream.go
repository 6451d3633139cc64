package forward

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// upstreams pools the origin connections of forwarded requests, one
// http.Transport per set of pinned addresses. A Transport pools by scheme
// and host:port only, so one shared Transport would hand a connection
// dialed for one decision to a later request whose decision pinned other
// addresses (a group with a narrower allow_ranges, a policy reloaded since).
// Keyed by the set, a pool holds only connections to addresses of that
// set, and a request only ever takes one from the pool of its own
// decision's set. The same set in another order is the same pool.
//
// Requests through a parent proxy (a decision's Via) have a pool per
// parent instead: its connections are to that parent, never handed to a
// request that goes direct or through another parent.
//
// A reload retires every pool: idle connections close at once, busy ones
// when their request is over, and no later request can reach them.
type upstreams struct {
	// build makes the Transport of a new pool; via names the parent
	// proxy of a parent's pool, "" for an address set's.
	build func(via string) *http.Transport

	mu    sync.Mutex // pool creation, sweeps, retirement
	cur   atomic.Pointer[poolSet]
	swept time.Time
}

// poolSet is one policy generation's pools, by key (see setKey), and the
// parents' pools by name.
type poolSet struct {
	mu  sync.RWMutex
	m   map[string]*pool
	via map[string]*pool
}

// pool is one Transport and the requests using it.
type pool struct {
	tr       *http.Transport
	inflight atomic.Int32
	retired  atomic.Bool
	used     atomic.Int64 // unix nanoseconds of the last release
}

// sweepEvery bounds how often creating a pool also drops the pools unused
// for longer than poolIdle (their connections have closed by then).
const (
	sweepEvery = 30 * time.Second
	poolIdle   = 2 * idleConnTimeout
)

func newUpstreams(build func(via string) *http.Transport) *upstreams {
	u := &upstreams{build: build}
	u.cur.Store(newPoolSet())
	return u
}

func newPoolSet() *poolSet { return &poolSet{m: map[string]*pool{}, via: map[string]*pool{}} }

// get returns the pool for addrs, counted busy until release.
func (u *upstreams) get(addrs []netip.AddrPort) *pool {
	var kb [8 * keyAddrLen]byte
	key := setKey(kb[:0], addrs)
	set := u.cur.Load()
	set.mu.RLock()
	p := set.m[string(key)] // no allocation: the compiler looks up by the bytes
	set.mu.RUnlock()
	if p != nil {
		p.inflight.Add(1)
		if !p.retired.Load() {
			return p
		}
		u.release(p) // retired since: build one in the current set
	}
	return u.create(string(key), "")
}

// getVia returns the pool of parent proxy via, counted busy until release.
func (u *upstreams) getVia(via string) *pool {
	set := u.cur.Load()
	set.mu.RLock()
	p := set.via[via]
	set.mu.RUnlock()
	if p != nil {
		p.inflight.Add(1)
		if !p.retired.Load() {
			return p
		}
		u.release(p)
	}
	return u.create("", via)
}

// create returns the pool of address-set key, or of parent via when via is
// set, building it when the current set has none.
func (u *upstreams) create(key, via string) *pool {
	u.mu.Lock()
	defer u.mu.Unlock()
	set := u.cur.Load()
	set.mu.Lock()
	defer set.mu.Unlock()
	m := set.m
	if via != "" {
		m, key = set.via, via
	}
	if p := m[key]; p != nil {
		p.inflight.Add(1)
		return p
	}
	if now := time.Now(); now.Sub(u.swept) > sweepEvery {
		u.swept = now
		for k, p := range set.m {
			if p.inflight.Load() == 0 && now.UnixNano()-p.used.Load() > int64(poolIdle) {
				delete(set.m, k)
				retire(p)
			}
		}
	}
	p := &pool{tr: u.build(via)}
	p.used.Store(time.Now().UnixNano())
	p.inflight.Add(1)
	m[key] = p
	return p
}

// release ends a request's use of p. The last request on a retired pool
// closes the connections it left idle.
func (u *upstreams) release(p *pool) {
	p.used.Store(time.Now().UnixNano())
	if p.inflight.Add(-1) == 0 && p.retired.Load() {
		p.tr.CloseIdleConnections()
	}
}

// retireAll starts a new generation: every existing pool is retired.
func (u *upstreams) retireAll() {
	u.mu.Lock()
	old := u.cur.Swap(newPoolSet())
	u.mu.Unlock()
	old.mu.Lock()
	defer old.mu.Unlock()
	for _, p := range old.m {
		retire(p)
	}
	for _, p := range old.via {
		retire(p)
	}
}

// retire stops p from serving new requests and closes its idle
// connections; connections busy now close when their request is over (see
// release).
func retire(p *pool) {
	p.retired.Store(true)
	if p.inflight.Load() == 0 {
		p.tr.CloseIdleConnections()
	}
}

// keyAddrLen is one address's length in a key: 16 bytes of address, 2 of
// port.
const keyAddrLen = 18

// setKey appends the key of the set addrs to b: the addresses sorted, so
// that the same set in any order (DNS answers rotate) has the same key.
func setKey(b []byte, addrs []netip.AddrPort) []byte {
	var sb [8]netip.AddrPort
	sorted := append(sb[:0], addrs...)
	for i := range sorted {
		sorted[i] = netip.AddrPortFrom(sorted[i].Addr().Unmap(), sorted[i].Port())
	}
	slices.SortFunc(sorted, netip.AddrPort.Compare)
	sorted = slices.Compact(sorted)
	for _, ap := range sorted {
		a := ap.Addr().As16()
		b = append(b, a[:]...)
		b = append(b, byte(ap.Port()>>8), byte(ap.Port()))
	}
	return b
}

// upstreamConn is a forwarded request's connection to its origin. Every
// read and write first moves its deadlines: the wait for the origin's
// response, its body, or for the origin to take our request ends after
// timeouts.idle without a byte either way.
type upstreamConn struct {
	c       *net.TCPConn
	early   []byte         // read from c before the caller's first Read (egress.Dialer.Dial's early bytes)
	remote  netip.AddrPort // the pinned address it was dialed to (a parent's, with via)
	local   netip.AddrPort // the address it was dialed from
	via     string         // the parent proxy it goes through; "" direct
	idle    *atomic.Int64  // timeouts.idle, reloadable
	written atomic.Int64   // bytes sent to the origin
	timeout atomic.Bool    // a read or write ended on the idle timeout

	rd, wd idleDeadline // the read and write deadlines armed
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	if d := time.Duration(c.idle.Load()); d > 0 {
		if t, ok := c.rd.next(d); ok {
			c.c.SetReadDeadline(t)
		}
	}
	n, err := c.c.Read(p)
	if err != nil && isTimeout(err) {
		c.timeout.Store(true)
	}
	return n, err
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	if d := time.Duration(c.idle.Load()); d > 0 {
		if t, ok := c.wd.next(d); ok {
			c.c.SetWriteDeadline(t)
		}
		// Sending counts as progress for the response too.
		if t, ok := c.rd.next(d); ok {
			c.c.SetReadDeadline(t)
		}
	}
	n, err := c.c.Write(p)
	c.written.Add(int64(n))
	if err != nil && isTimeout(err) {
		c.timeout.Store(true)
	}
	return n, err
}

// ReadFrom sends a request body (net/http's Transport hands it over in an
// io.LimitedReader of the declared length). A body that holds its bytes,
// an inspected one, writes them itself (io.WriterTo): no copy through a
// buffer, a few large writes; it may not write past the declared length.
// Any other body is copied as io.Copy would.
func (c *upstreamConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if wt, ok := lr.R.(io.WriterTo); ok {
			lw := &limitedWriter{w: c, n: lr.N}
			n, err := wt.WriteTo(lw)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(writerOnly{c}, r)
}

// writerOnly hides upstreamConn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// limitedWriter passes on at most n bytes and fails a write past them.
type limitedWriter struct {
	w io.Writer
	n int64
}

var errBodyTooLong = errors.New("request body longer than its Content-Length")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		n, err := l.w.Write(p[:l.n])
		l.n -= int64(n)
		if err == nil {
			err = errBodyTooLong
		}
		return n, err
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

func (c *upstreamConn) Close() error         { return c.c.Close() }
func (c *upstreamConn) LocalAddr() net.Addr  { return c.c.LocalAddr() }
func (c *upstreamConn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// Deadlines set from outside (crypto/tls during a handshake) replace ours:
// the next read or write arms ours again.

func (c *upstreamConn) SetDeadline(t time.Time) error {
	c.rd.forget()
	c.wd.forget()
	return c.c.SetDeadline(t)
}

func (c *upstreamConn) SetReadDeadline(t time.Time) error {
	c.rd.forget()
	return c.c.SetReadDeadline(t)
}

func (c *upstreamConn) SetWriteDeadline(t time.Time) error {
	c.wd.forget()
	return c.c.SetWriteDeadline(t)
}
