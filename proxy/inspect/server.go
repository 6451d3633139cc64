package inspect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// Config is the tls_inspection section.
type Config struct {
	CACert         string   // PEM: the issuing certificate, then its chain
	CAKey          string   // PEM private key of the issuing certificate; mode 0600 or stricter
	UpstreamCAFile string   // PEM roots added to the system's for verifying origins; "" = the system's only
	Bypass         []string // names never inspected
}

// Material is a loaded tls_inspection section: the leaf issuer of its CA,
// the roots upstream certificates are checked against, and the bypass list.
// Load builds it off to the side; Server.Store swaps it in.
type Material struct {
	issuer *Issuer
	roots  *x509.CertPool
	bypass *Bypass
}

// Issuer returns the material's leaf issuer.
func (m *Material) Issuer() *Issuer { return m.issuer }

// Load reads everything c names: the CA (its key file must be readable
// by its owner only), the upstream roots and the bypass list. With
// c.CACert empty inspection is off and Load returns nil, nil. onIssue
// (nil: none) is called for each leaf issued. Errors are *KeyError (or
// name the key) so the caller can point at the line.
func Load(c Config, onIssue func()) (*Material, error) {
	if c.CACert == "" && c.CAKey == "" {
		return nil, nil
	}
	ca, err := LoadAuthority(c.CACert, c.CAKey)
	if err != nil {
		return nil, err
	}
	roots, err := LoadRoots(c.UpstreamCAFile)
	if err != nil {
		return nil, err
	}
	bypass, err := ParseBypass(c.Bypass)
	if err != nil {
		return nil, err
	}
	return &Material{issuer: NewIssuer(ca, onIssue), roots: roots, bypass: bypass}, nil
}

// Tunnel is an inspected tunnel as its inner requests see it: the chain
// finds it in each request's context (TunnelFrom).
type Tunnel struct {
	Listener policy.Listener // the front end: connect, socks5 or transparent
	Client   policy.Client
	// Name is what every request's Host must name: the SNI, or for a
	// tunnel without one (an IP destination, a plain-HTTP port) the
	// destination the client asked for, normalized.
	Name string
	Port uint16
	// TLS: egressd terminated TLS (a tls_ports port); otherwise the
	// tunnel carries plain HTTP.
	TLS bool
	// Record is the tunnel's own access line (written when it ends).
	Record *accesslog.Record
}

type tunnelKey struct{}

// TunnelFrom returns the inspected tunnel a request arrived in, or nil.
func TunnelFrom(ctx context.Context) *Tunnel {
	t, _ := ctx.Value(tunnelKey{}).(*Tunnel)
	return t
}

// Options configure a Server. Chain is required.
type Options struct {
	// Chain serves each request inside an inspected tunnel (HTTP/1.1, or
	// each HTTP/2 stream); TunnelFrom(r.Context()) says which tunnel.
	Chain http.Handler
	// Diag receives diagnostics (handshake failures at Debug). Nil: none.
	Diag *zap.Logger
	// Handshake bounds the client's TLS handshake and each request head.
	Handshake time.Duration
	// Idle closes a keep-alive connection idle this long between
	// requests. Zero: never.
	Idle time.Duration
	// MaxHeaderBytes bounds a request head (431 past it). Zero: net/http's
	// default.
	MaxHeaderBytes int
	// HandshakeResult, when set, is told how each client handshake went
	// ("ok" or "failed"), for the metric.
	HandshakeResult func(result string)
}

// Handshake results.
const (
	HandshakeOK     = "ok"
	HandshakeFailed = "failed"
)

// Server terminates inspected tunnels: it completes the client's TLS
// handshake with a leaf for the tunnel's name, then serves the requests
// inside with net/http (HTTP/1.1, and HTTP/2 when the client offers it by
// ALPN) and hands each to Options.Chain.
type Server struct {
	o        Options
	material atomic.Pointer[Material]
	tlsConf  *tls.Config
	srv      *http.Server
	sessions sync.Map // net.Conn (as net/http sees it) -> *session

	handoff  chan net.Conn
	stopped  chan struct{}
	stopOnce sync.Once
	// upstreamSessions resumes TLS sessions to origins (fewer full
	// handshakes), shared by every upstream connection.
	upstreamSessions tls.ClientSessionCache
}

// session is one inspected tunnel being served.
type session struct {
	t     *Tunnel
	done  func()
	timer *time.Timer // timeouts.max_tunnel; nil: none
	once  sync.Once
}

func (ss *session) end() {
	ss.once.Do(func() {
		if ss.timer != nil {
			ss.timer.Stop()
		}
		ss.done()
	})
}

// New returns a Server serving with m (nil: inspection off until Store).
func New(m *Material, o Options) *Server {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	s := &Server{
		o:                o,
		handoff:          make(chan net.Conn),
		stopped:          make(chan struct{}),
		upstreamSessions: tls.NewLRUClientSessionCache(1024),
	}
	s.material.Store(m)
	s.tlsConf = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: s.certificate,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	s.srv = &http.Server{
		Handler:           o.Chain,
		ConnContext:       s.connContext,
		ConnState:         s.connState,
		ReadHeaderTimeout: o.Handshake,
		IdleTimeout:       o.Idle,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		Protocols:         &protocols,
		ErrorLog:          zap.NewStdLog(o.Diag.Named("inspect-server")),
	}
	return s
}

// Store swaps in m for tunnels terminated from now on (a reload); nil
// turns inspection off.
func (s *Server) Store(m *Material) { s.material.Store(m) }

// Material returns the material in force (nil: inspection off).
func (s *Server) Material() *Material { return s.material.Load() }

// Inspects reports whether a tunnel allowed by dec is to be terminated:
// its rule says inspect, a CA is loaded, and its host is not in bypass.
func (s *Server) Inspects(dec policy.Decision) bool {
	if !dec.Inspect {
		return false
	}
	m := s.material.Load()
	return m != nil && !m.bypass.Matches(dec.Host)
}

// UpstreamTLS is the client config for a connection to an origin of an
// inspected tunnel: verified against the roots in force with serverName
// (the tunnel's name) as the name, TLS 1.2 at least, HTTP/1.1.
func (s *Server) UpstreamTLS(serverName string) *tls.Config {
	var roots *x509.CertPool
	if m := s.material.Load(); m != nil {
		roots = m.roots
	}
	if roots == nil {
		// Inspection turned off by a reload while a request was on its
		// way: verify against the system's roots, never against none.
		roots, _ = LoadRoots("")
	}
	return &tls.Config{
		ServerName:         serverName,
		RootCAs:            roots,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		ClientSessionCache: s.upstreamSessions,
	}
}

// errNoMaterial: a handshake with inspection turned off meanwhile.
var errNoMaterial = errors.New("tls inspection is off")

// certificate is the handshake's GetCertificate: the leaf for the
// tunnel's name (the SNI the guard judged; for a hello without one, the
// destination), whatever the hello says.
func (s *Server) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := s.material.Load()
	if m == nil {
		return nil, errNoMaterial
	}
	name := hello.ServerName
	if cc, ok := hello.Conn.(*clientConn); ok {
		name = cc.name
	}
	return m.issuer.Certificate(name)
}

// Serve takes over an allowed tunnel whose rule inspects it (Inspects),
// once the guard has read first (on a tls_ports port, the client's
// ClientHello). On a tls_ports port it completes the client's handshake
// within Options.Handshake; on other ports the tunnel carries plain HTTP.
// Then the tunnel's requests go to the Chain until the client closes, the
// connection idles past Options.Idle, maxTunnel (0: never) has passed, or
// a drain ends it. It owns conn from here on and closes it; done is
// called once, after conn is closed, to write the tunnel's line and
// release it.
func (s *Server) Serve(conn *net.TCPConn, first []byte, dec policy.Decision, rec *accesslog.Record, maxTunnel time.Duration, done func()) {
	name := rec.SNI
	if name == "" {
		name = dec.Host
	}
	t := &Tunnel{
		Listener: rec.Listener,
		Client:   policy.Client{Addr: rec.Client, User: rec.User},
		Name:     name,
		Port:     dec.Port,
		Record:   rec,
	}
	// Deadlines of the front end's handshake (a SOCKS5 greeting, an HTTP
	// head) end here: the TLS handshake and net/http set their own.
	conn.SetDeadline(time.Time{})
	cc := &clientConn{tc: conn, prefix: first, rec: rec, name: name}
	var c net.Conn = cc
	if dec.Policy != nil && dec.Policy.IsTLSPort(dec.Port) {
		t.TLS = true
		tc := tls.Server(cc, s.tlsConf)
		ctx, cancel := context.WithCancel(context.Background())
		if s.o.Handshake > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), s.o.Handshake)
		}
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			// Most often a client that does not trust the CA (it sends
			// an unknown_ca alert), or a pinned certificate.
			s.o.Diag.Debug("inspected tunnel: client handshake failed",
				zap.String("sni", name), zap.Stringer("client", rec.Client), zap.Error(err))
			s.handshakeResult(HandshakeFailed)
			conn.Close()
			done()
			return
		}
		s.handshakeResult(HandshakeOK)
		c = tc
	}
	ss := &session{t: t, done: done}
	if maxTunnel > 0 {
		ss.timer = time.AfterFunc(maxTunnel, func() { conn.Close() })
	}
	s.sessions.Store(c, ss)
	select {
	case s.handoff <- c:
	case <-s.stopped:
		s.sessions.Delete(c)
		conn.Close()
		ss.end()
	}
}

func (s *Server) handshakeResult(r string) {
	if s.o.HandshakeResult != nil {
		s.o.HandshakeResult(r)
	}
}

// connContext gives every request on an inspected connection its tunnel.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	if v, ok := s.sessions.Load(c); ok {
		return context.WithValue(ctx, tunnelKey{}, v.(*session).t)
	}
	return ctx
}

// connState ends a session once net/http has closed its connection.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateHijacked:
		// The chain never hijacks; should anything, the tunnel still ends.
		c.Close()
	case http.StateClosed:
	default:
		return
	}
	if v, ok := s.sessions.LoadAndDelete(c); ok {
		v.(*session).end()
	}
}

// Run serves the connections Serve hands over until Shutdown or Close. It
// blocks.
func (s *Server) Run() error {
	err := s.srv.Serve(handoffListener{s})
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops taking tunnels, closes idle inspected connections and
// waits, up to ctx, for the requests in flight (http.Server.Shutdown,
// which closes the handoff listener first).
func (s *Server) Shutdown(ctx context.Context) error {
	defer handoffListener{s}.Close() // in case Run never started
	return s.srv.Shutdown(ctx)
}

// Close cuts every inspected connection and stops taking more.
func (s *Server) Close() error {
	defer handoffListener{s}.Close()
	return s.srv.Close()
}

// handoffListener is what the http.Server accepts from: the connections
// Serve hands over.
type handoffListener struct{ s *Server }

func (l handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.handoff:
		return c, nil
	case <-l.s.stopped:
		return nil, net.ErrClosed
	}
}

func (l handoffListener) Close() error {
	l.s.stopOnce.Do(func() { close(l.s.stopped) })
	return nil
}

func (l handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "tcp" }
func (handoffAddr) String() string  { return "egressd-inspect-handoff" }
