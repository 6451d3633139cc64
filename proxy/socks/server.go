package socks

import (
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
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
	// Diag receives diagnostics. Nil discards them.
	Diag *zap.Logger
	// Handshake bounds the greeting, authentication and request
	// (timeouts.handshake). Zero: unbounded.
	Handshake time.Duration
	// RefuseTimeout bounds each step of refusing a connection past a
	// limit: reading its greeting and request, then answering and waiting
	// for the client to close. Zero: 2s.
	RefuseTimeout time.Duration
	// Auth verifies RFC 1929 credentials. Nil: no authentication offered.
	Auth func(user, pass string) bool
	// AuthRequired refuses clients that do not authenticate.
	AuthRequired bool
}

// Server is the SOCKS5 front end: an accept.FrontEnd whose Serve runs each
// connection through one state machine (session.go). Create it with New.
type Server struct {
	o    Options
	diag *zap.Logger
}

// New returns a Server.
func New(o Options) *Server {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	if o.RefuseTimeout <= 0 {
		o.RefuseTimeout = 2 * time.Second
	}
	return &Server{o: o, diag: o.Diag}
}

// Serve runs one client connection, greeting to relay, or refuses it when
// it is past a limit. It implements accept.FrontEnd: c is closed and
// released here, or by the tunnel it became.
func (s *Server) Serve(c *accept.Conn) {
	ss := newSession(s, c)
	if c.Limit != "" {
		ss.refuseLimit()
	} else if ss.run() {
		return // the tunnel owns c and the record now
	}
	ss.end()
}
