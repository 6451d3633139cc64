package accept

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/limits"
	"github.com/egressd/egressd/proxy/proxyproto"
)

// FrontEnd serves the connections of one listener.
type FrontEnd interface {
	// Serve owns c: it serves it, or refuses it in its protocol when
	// c.Limit is set, and sees that c is closed and released once, by
	// itself or by whoever it hands c on to. It runs on c's own
	// goroutine, which the Server waits for.
	Serve(c *Conn)
}

// Defaults for zero Options.
const (
	DefaultHeaderTimeout = 10 * time.Second
	DefaultMaxRefusing   = 64
)

// Options configure a Server.
type Options struct {
	// Listener names the socket (policy.ListenerHTTP or
	// policy.ListenerSOCKS5) for the limits' egressd_client_connections.
	Listener policy.Listener
	// Limits counts the connections. Nil: no limits.
	Limits *limits.Limiter
	// ProxyProtocol is listen.proxy_protocol: connections from Trusted
	// (listen.trusted_proxies) must start with a PROXY header, and no
	// other connection may. Behind a load balancer a connection counts
	// against limits.max_connections at accept, and against its client's
	// limits.max_connections_per_client once the header has named it.
	ProxyProtocol bool
	Trusted       []netip.Prefix
	// HeaderTimeout bounds the wait for a PROXY header (or, from a source
	// that is not trusted, for the first bytes that show there is none).
	// Zero: DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// MaxRefusing bounds the refusals (connections past a limit) in
	// progress; past it a refused connection's socket is closed before its
	// front end gets it. Zero: DefaultMaxRefusing.
	MaxRefusing int
	// Diag receives accept errors and refused PROXY headers. Nil discards
	// them.
	Diag *zap.Logger
	// OnPanic is called after a panic on a connection's goroutine was
	// recovered (and logged). Nil: nothing.
	OnPanic func()
}

// Server runs the accept pipeline of one listener. Create it with Serve.
type Server struct {
	ln   net.Listener
	fe   FrontEnd
	o    Options
	diag *zap.Logger

	wg       sync.WaitGroup // the accept loop and every connection's goroutine
	refusing atomic.Int32

	mu     sync.Mutex
	open   map[*Conn]struct{} // accepted and not released: what drain waits for and Close cuts
	empty  chan struct{}      // closed when open next becomes empty (Shutdown)
	closed bool               // Close was called: new connections are cut at once
}

// Serve starts accepting on ln, a TCP listener, and hands every connection
// to fe. Stop it with Shutdown or Close.
func Serve(ln net.Listener, fe FrontEnd, o Options) *Server {
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.MaxRefusing <= 0 {
		o.MaxRefusing = DefaultMaxRefusing
	}
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	s := &Server{ln: ln, fe: fe, o: o, diag: o.Diag, open: map[*Conn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Open returns the number of connections accepted and not yet released.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Shutdown stops accepting and waits until every connection has been
// released (their front ends finish them: requests, handshakes, refusals
// and the tunnels they became), or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ln.Close()
	for {
		s.mu.Lock()
		if len(s.open) == 0 {
			s.mu.Unlock()
			return nil
		}
		if s.empty == nil {
			s.empty = make(chan struct{})
		}
		empty := s.empty
		s.mu.Unlock()
		select {
		case <-empty:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops accepting, closes the socket of every connection still open
// (their owners see it fail and release them) and waits for the Server's
// goroutines. Hand-offs that wait on something else than the socket (an
// http.Server's accept) must be stopped first.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		c.TCPConn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and friends: keep serving, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.diag.Warn("accept failed; backing off", zap.Error(err), zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			s.diag.Error("listener stopped", zap.Stringer("addr", s.ln.Addr()), zap.Error(err))
			return
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			s.diag.Error("accepted a conn that is not TCP", zap.String("type", fmt.Sprintf("%T", c)))
			c.Close()
			continue
		}
		s.wg.Add(1)
		go s.handle(tc)
	}
}

// handle runs one connection through the pipeline and its front end.
func (s *Server) handle(tc *net.TCPConn) {
	defer s.wg.Done()
	c := &Conn{TCPConn: tc, Client: peer(tc), srv: s}
	if !s.track(c) {
		tc.Close()
		return
	}
	defer func() {
		// The one recover around a connection's protocol code (ours and
		// the libraries' it runs).
		if p := recover(); p != nil {
			s.diag.Error("recovered panic", zap.Stringer("client", c.Client), zap.Any("panic", p), zap.Stack("stack"))
			if s.o.OnPanic != nil {
				s.o.OnPanic()
			}
			c.Close()
		}
	}()
	if !s.admit(c) {
		return
	}
	if c.Limit != "" {
		if int(s.refusing.Add(1)) > s.o.MaxRefusing {
			// No time for an answer: the front end only logs it.
			c.TCPConn.Close()
		}
		defer s.refusing.Add(-1)
	}
	s.fe.Serve(c)
}

// admit counts c under the limits and, with listen.proxy_protocol,
// identifies its client. false: c was refused and closed.
func (s *Server) admit(c *Conn) bool {
	lim := s.o.Limits
	if !s.o.ProxyProtocol {
		if lim != nil {
			c.slot, c.Limit = lim.Admit(s.o.Listener, c.Client.Addr())
		}
		return true
	}
	if lim != nil {
		// The peer may be the load balancer: per client once the header
		// has named the client.
		c.slot, c.Limit = lim.Admit(s.o.Listener, netip.Addr{})
	}
	client, err := proxyproto.Identify(c.TCPConn, c.Client, s.trusted(c.Client.Addr()), s.o.HeaderTimeout)
	if err != nil {
		s.refused(c, err)
		c.Close()
		return false
	}
	c.Client = client
	if lim != nil && c.Limit == "" {
		c.Limit = lim.Claim(&c.slot, client.Addr())
	}
	return true
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.o.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refused logs a connection Identify refused.
func (s *Server) refused(c *Conn, err error) {
	peer := zap.Stringer("peer", c.Client) // the socket peer: Identify failed
	switch {
	case errors.Is(err, proxyproto.ErrMissing):
		// A load balancer that does not send headers: every client
		// behind it is refused. The service is degraded.
		s.diag.Warn("connection refused: listen.proxy_protocol is on and a trusted proxy sent no PROXY header", peer)
	case errors.Is(err, proxyproto.ErrForged):
		s.diag.Info("connection refused: PROXY header from a source not in listen.trusted_proxies", peer)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		s.diag.Debug("connection closed before its PROXY header was checked", peer)
	default:
		s.diag.Info("connection refused: bad PROXY header", peer, zap.Error(err))
	}
}

func (s *Server) track(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[c] = struct{}{}
	return true
}

func (s *Server) release(c *Conn) {
	if s.o.Limits != nil {
		s.o.Limits.Release(&c.slot)
	}
	s.mu.Lock()
	delete(s.open, c)
	if len(s.open) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	s.mu.Unlock()
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
