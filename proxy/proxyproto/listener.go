package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// DefaultTimeout bounds a header read when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options configure a Listener.
type Options struct {
	// Trusted are the sources (load balancers) that must send a header.
	// Any other source must not. Empty: no source may send one.
	Trusted []netip.Prefix
	// Timeout bounds the wait for a header (or, from untrusted sources,
	// for the first bytes that show there is none). Zero: DefaultTimeout.
	Timeout time.Duration
	// Diag receives diagnostics about refused connections. Nil discards
	// them.
	Diag *zap.Logger
	// Admit, when set, is asked about each conn once its client is known,
	// before Accept returns it: false means Admit has taken the conn over
	// (refused it, say) and the Listener forgets it. This is where limits
	// per client apply behind a load balancer.
	Admit func(c *net.TCPConn, client netip.Addr) bool
}

// Listener is a net.Listener that reads PROXY headers; see the package
// documentation. Create it with NewListener and always Close it: it runs
// goroutines of its own.
type Listener struct {
	ln   net.Listener
	o    Options
	diag *zap.Logger

	ready  chan *net.TCPConn // conns whose header is done, for Accept
	done   chan struct{}     // closed by Close
	failed chan struct{}     // closed when the accept loop stopped on an error
	err    error             // why; written before failed is closed
	once   sync.Once
	wg     sync.WaitGroup // the accept loop and every header goroutine

	mu      sync.Mutex
	closed  bool
	pending map[*net.TCPConn]struct{} // conns still reading their header

	clients sync.Map // *net.TCPConn -> netip.Addr, until Client takes it
}

// NewListener wraps ln, which must be a TCP listener, and starts accepting.
func NewListener(ln net.Listener, o Options) *Listener {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	l := &Listener{
		ln:      ln,
		o:       o,
		diag:    o.Diag,
		ready:   make(chan *net.TCPConn),
		done:    make(chan struct{}),
		failed:  make(chan struct{}),
		pending: map[*net.TCPConn]struct{}{},
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose PROXY header (or its absence,
// for a direct client) has been checked. The conn is the accepted
// *net.TCPConn itself, with the header consumed; its client address is
// available once from [Listener.Client].
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.err
	}
}

// Close stops accepting, closes the connections still in their header
// (connections already returned by Accept are the caller's) and waits for
// the Listener's goroutines.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		close(l.done)
		err = l.ln.Close()
		l.wg.Wait()
	})
	return err
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Client returns the client address of a conn returned by Accept: the
// PROXY header's source for a conn from a trusted proxy, otherwise the
// socket's peer. The Listener forgets the address on this call, so call it
// once per conn, at once: an address nobody asks for is held until the
// Listener closes. A nil *Listener returns the socket's peer address.
func (l *Listener) Client(c net.Conn) netip.Addr {
	if l != nil {
		if tc, ok := c.(*net.TCPConn); ok {
			if a, ok := l.clients.LoadAndDelete(tc); ok {
				return a.(netip.Addr)
			}
		}
	}
	return peerAddr(c)
}

// Unclaimed returns how many client addresses the Listener holds for conns
// Accept returned whose address nobody has asked for yet. Every front end
// asks once, right after Accept, so it is zero but for conns in that
// instant (a leak check).
func (l *Listener) Unclaimed() int {
	n := 0
	l.clients.Range(func(_, _ any) bool { n++; return true })
	return n
}

func peerAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and friends: keep serving, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.diag.Warn("accept failed; backing off", zap.Error(err), zap.Duration("backoff", backoff))
				select {
				case <-time.After(backoff):
				case <-l.done:
					return
				}
				continue
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			l.diag.Error("proxy protocol listener accepted a non-TCP conn", zap.String("type", fmt.Sprintf("%T", c)))
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			tc.Close()
			return
		}
		l.pending[tc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(tc)
	}
}

// handshake reads c's header and hands c to Accept, or closes it.
func (l *Listener) handshake(c *net.TCPConn) {
	defer l.wg.Done()
	client, err := l.identify(c)
	l.mu.Lock()
	delete(l.pending, c)
	closed := l.closed
	l.mu.Unlock()
	if err != nil || closed {
		c.Close()
		if err != nil {
			l.refused(c, err)
		}
		return
	}
	if l.o.Admit != nil && !l.o.Admit(c, client) {
		return
	}
	l.clients.Store(c, client)
	select {
	case l.ready <- c:
	case <-l.done:
		l.clients.Delete(c)
		c.Close()
	}
}

// Refusal causes, for the diagnostics.
var (
	errMissing = errors.New("trusted proxy sent no PROXY header")
	errForged  = errors.New("PROXY header from an untrusted source")
	errNoPeer  = errors.New("no peer address")
)

func (l *Listener) refused(c *net.TCPConn, err error) {
	peer := zap.Stringer("peer", c.RemoteAddr())
	switch {
	case errors.Is(err, errMissing):
		// A load balancer that does not send headers: every client
		// behind it is refused. The service is degraded.
		l.diag.Warn("connection refused: listen.proxy_protocol is on and a trusted proxy sent no PROXY header", peer)
	case errors.Is(err, errForged):
		l.diag.Info("connection refused: PROXY header from a source not in listen.trusted_proxies", peer)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		l.diag.Debug("connection closed before its PROXY header was checked", peer)
	default:
		l.diag.Info("connection refused: bad PROXY header", peer, zap.Error(err))
	}
}

func (l *Listener) trusted(a netip.Addr) bool {
	for _, p := range l.o.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// identify checks c's first bytes under the timeout and returns its client
// address. From a trusted source it consumes exactly the header; from any
// other source it consumes nothing.
func (l *Listener) identify(c *net.TCPConn) (netip.Addr, error) {
	peer := peerAddr(c)
	if !peer.IsValid() {
		return netip.Addr{}, errNoPeer
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.Addr{}, err
	}
	if err := c.SetReadDeadline(time.Now().Add(l.o.Timeout)); err != nil {
		return netip.Addr{}, err
	}
	if !l.trusted(peer) {
		if err := sniffDirect(rc); err != nil {
			return netip.Addr{}, err
		}
	} else {
		h, err := readHeader(c, rc)
		if err != nil {
			return netip.Addr{}, err
		}
		if !h.Local {
			peer = h.Source.Addr().Unmap()
		}
	}
	// The front end sets its own deadlines from here on.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return netip.Addr{}, err
	}
	return peer, nil
}

// sniffDirect waits until a direct client's first bytes show whether they
// start a PROXY header, which such a client must not send.
func sniffDirect(rc syscall.RawConn) error {
	var buf [12]byte // the longer signature (v2)
	have := 0
	for {
		n, err := peek(rc, buf[:], have)
		if err != nil {
			return err
		}
		have = n
		switch matchSignature(buf[:n]) {
		case sigNone:
			return nil
		case sigV1, sigV2:
			return errForged
		}
		if n == len(buf) {
			return errForged // cannot happen: 12 bytes decide
		}
	}
}

// readHeader peeks until a whole header is buffered, then consumes exactly
// its bytes.
func readHeader(c *net.TCPConn, rc syscall.RawConn) (Header, error) {
	buf := make([]byte, v2Fixed)
	have := 0
	for {
		n, err := peek(rc, buf, have)
		if err != nil {
			return Header{}, err
		}
		have = n
		h, size, err := ParseHeader(buf[:n])
		switch {
		case errors.Is(err, ErrNoHeader):
			return Header{}, errMissing
		case errors.Is(err, ErrIncomplete):
			if size > len(buf) {
				buf = append(buf, make([]byte, size-len(buf))...)
			} else if n == len(buf) {
				return Header{}, errors.New("proxy header does not fit its own bound") // ParseHeader's n is a bound
			}
			continue
		case err != nil:
			return Header{}, err
		}
		if _, err := io.ReadFull(c, buf[:size]); err != nil {
			return Header{}, fmt.Errorf("consume proxy header: %w", err)
		}
		return h, nil
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
