package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"
	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/tunnel"
)

// Options configure a Server. Decider, Dialer, Log and Runner are required.
type Options struct {
	Decider policy.Decider
	Dialer  *egress.Dialer
	Log     *accesslog.Logger
	Runner  *tunnel.Runner
	// Diag receives diagnostics; go-socks5's own logging goes here at Debug.
	// Nil discards them.
	Diag *zap.Logger
	// Handshake bounds the greeting, authentication and request.
	Handshake time.Duration
	// Auth verifies RFC 1929 credentials. Nil: no authentication offered.
	Auth func(user, pass string) bool
	// AuthRequired refuses clients that do not authenticate.
	AuthRequired bool
	// ClientAddr returns the client address of an accepted conn (the PROXY
	// header's source when the listener trusts one). Nil: the socket's peer.
	ClientAddr func(c net.Conn) netip.Addr
}

// Server accepts SOCKS5 connections. Create it with New.
type Server struct {
	o    Options
	diag *zap.Logger
	// libLog is go-socks5's logger, built once rather than a zap Named
	// logger and a log.Logger per connection.
	libLog *log.Logger
	// libraryOnly turns the fast path off (fast.go), so tests can hold the
	// two paths to the same behaviour.
	libraryOnly bool

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // connections until their handshake ends
	closed bool
	wg     sync.WaitGroup
}

// New returns a Server.
func New(o Options) *Server {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	return &Server{o: o, diag: o.Diag, conns: map[net.Conn]struct{}{},
		libLog: log.New(debugWriter{o.Diag.Named("go-socks5")}, "", 0)}
}

// Serve accepts connections on ln until ln is closed. Unlike go-socks5's
// Serve it survives temporary Accept errors (EMFILE) with a short backoff.
func (s *Server) Serve(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.diag.Warn("socks5 accept failed; backing off", zap.Error(err), zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		// Take the client address at once, also for a conn refused just
		// below: a PROXY-aware listener keeps it until asked.
		client := s.clientAddr(c)
		if !s.track(c) {
			c.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c, client)
		}()
	}
}

// Shutdown closes the connections still in their handshake and waits, up to
// ctx, for every connection goroutine to end. Established tunnels are not
// this server's: they run on the relay's goroutines, and the tunnel
// registry drains and cuts them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// track registers c and counts its goroutine in s.wg, under the lock that
// Shutdown takes to mark the server closed: an Add can never race with
// Shutdown's Wait.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveConn runs one client connection through go-socks5. The recover is
// the one boundary around third-party protocol code.
func (s *Server) serveConn(c net.Conn, client netip.Addr) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		s.diag.Error("socks5: accepted conn is not TCP", zap.String("type", fmt.Sprintf("%T", c)))
		c.Close()
		return
	}
	x := &exchange{s: s, raw: tc, rec: s.o.Log.NewRecord(policy.ListenerSOCKS5, client)}
	defer func() {
		if p := recover(); p != nil {
			s.diag.Error("socks5: recovered panic", zap.Any("panic", p), zap.Stack("stack"))
			s.o.Log.Metrics().CountPanic()
			if !x.claimed.Load() {
				tc.Close()
				if x.upstream != nil {
					x.upstream.Close()
				}
			}
			x.finishIfUnclaimed()
		}
	}()
	if s.o.Handshake > 0 {
		tc.SetDeadline(time.Now().Add(s.o.Handshake))
	}
	cc := &clientConn{TCPConn: tc, x: x}
	var err error
	switch {
	case !s.libraryOnly:
		h := x.serveFast(tc)
		if h.handled {
			x.finishIfUnclaimed()
			return
		}
		cc.greeting, cc.sent = h.replay, h.sent
	case s.o.Auth != nil && !s.o.AuthRequired:
		if cc.greeting, err = preferUserPass(tc); err != nil {
			tc.Close()
			return
		}
	}
	srv, err := socks5.New(x.config())
	if err != nil {
		s.diag.Error("socks5: config", zap.Error(err))
		tc.Close()
		return
	}
	err = srv.ServeConn(cc)
	// Both conns are closed here unless the relay took them over; then
	// this goroutine just ends, and the tunnel lives on the relay's own.
	cc.Close()
	if x.up != nil {
		x.up.Close()
	}
	if err != nil {
		s.diag.Debug("socks5 connection ended", zap.Stringer("client", client), zap.Error(err))
		x.noAcceptableMethod(err)
	}
	x.finishIfUnclaimed()
}

func (s *Server) clientAddr(c net.Conn) netip.Addr {
	if s.o.ClientAddr != nil {
		return s.o.ClientAddr(c)
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// debugWriter is go-socks5's logger sink: its messages go to the
// diagnostic log at Debug, never to stdout where the access log is.
type debugWriter struct{ l *zap.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = debugWriter{}
