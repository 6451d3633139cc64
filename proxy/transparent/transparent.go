package transparent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/origdst"
	"github.com/egressd/egressd/proxy/sni"
	"github.com/egressd/egressd/proxy/tunnel"
)

// HTTP serves the connections to http_ports (proxy/forward's Handler),
// and answers those past a limit (accept.Conn.Limit set) 503.
type HTTP interface {
	ServeInline(c *accept.Conn)
}

// Options configure a FrontEnd. Every field but Diag, Handshake and Local
// is required.
type Options struct {
	Decider policy.Decider
	// Policy returns the policy in force, for the ports' roles
	// (tls_ports, http_ports) before a decision is made.
	Policy func() *policy.Policy
	Dialer *egress.Dialer
	Log    *accesslog.Logger
	Runner *tunnel.Runner
	HTTP   HTTP
	// Own are egressd's own listening addresses (every listener's bound
	// address): a connection whose original destination is one of them is
	// a loop.
	Own []netip.AddrPort
	// Handshake (timeouts.handshake) bounds the wait for the ClientHello.
	Handshake time.Duration
	// Diag receives diagnostics. Nil discards them.
	Diag *zap.Logger
	// Local reports whether a is an address of this host, for an own
	// listener bound to the unspecified address. Nil: the interfaces'
	// addresses (net.InterfaceAddrs), read when a destination's port is
	// one of egressd's own.
	Local func(a netip.Addr) bool
}

// FrontEnd is the transparent listener's accept.FrontEnd.
type FrontEnd struct{ o Options }

// New returns the front end.
func New(o Options) *FrontEnd {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	if o.Local == nil {
		o.Local = hostAddr
	}
	return &FrontEnd{o: o}
}

// Serve serves one redirected connection; it owns c.
func (f *FrontEnd) Serve(c *accept.Conn) {
	dst, err := origdst.Destination(c.TCPConn)
	if err != nil {
		f.o.Diag.Warn("transparent: no original destination", zap.Stringer("client", c.Client), zap.Error(err))
		c.Close()
		return
	}
	c.OrigDst = dst
	rec := f.o.Log.NewRecord(policy.ListenerTransparent, c.Client.Addr())
	rec.ClientPort = c.Client.Port()
	rec.OrigDst = dst
	rec.Host, rec.Port = dst.Addr().String(), dst.Port()
	switch {
	case c.Limit != "" && httpPort(f.o.Policy(), dst.Port()):
		// An HTTP client is answered as on listen.http (503 with
		// X-Egress-Error: limit); forward writes the line.
		f.o.HTTP.ServeInline(c)
		return
	case c.Limit != "":
		rec.Deny(policy.ReasonLimit)
		f.o.Log.Metrics().LimitRejected(policy.ListenerTransparent, c.Limit)
		f.refuse(c, rec)
		return
	case f.loop(dst):
		f.o.Diag.Info("transparent: connection to egressd itself refused (a redirect loop, or the listener addressed directly)",
			zap.Stringer("client", c.Client), zap.Stringer("orig_dst", dst))
		rec.Deny(policy.ReasonBadRequest)
		f.refuse(c, rec)
		return
	}
	pol := f.o.Policy()
	switch {
	case httpPort(pol, dst.Port()):
		// Each request is decided and logged by forward; rec is dropped
		// unwritten.
		f.o.HTTP.ServeInline(c)
	case pol != nil && pol.IsTLSPort(dst.Port()):
		f.serveTLS(c, dst, rec)
	default:
		dec, ok := f.decide(rec, dst.Addr().String(), dst.Port())
		if !ok {
			f.refuse(c, rec)
			return
		}
		f.tunnel(c, dec, nil, rec)
	}
}

// httpPort reports whether port is one of pol's http_ports.
func httpPort(pol *policy.Policy, port uint16) bool {
	return pol != nil && pol.IsHTTPPort(port)
}

// serveTLS decides a connection to a tls_ports port on its ClientHello's
// SNI (on the original destination address when there is none), judges
// the hello as the guard does, and tunnels it to the SNI's checked
// address.
func (f *FrontEnd) serveTLS(c *accept.Conn, dst netip.AddrPort, rec *accesslog.Record) {
	var deadline time.Time
	if f.o.Handshake > 0 {
		deadline = time.Now().Add(f.o.Handshake)
	}
	hello, info, err := sni.Peek(c.TCPConn, nil, tunnel.MaxHello, deadline)
	host := dst.Addr().String()
	if err == nil && info.HasSNI && info.ServerName != "" {
		host = info.ServerName
		rec.SNI = host
	}
	dec, ok := f.decide(rec, host, dst.Port())
	if !ok || !tunnel.JudgeHello(dec, hello, info, err, rec) {
		f.refuse(c, rec)
		return
	}
	f.tunnel(c, dec, hello, rec)
}

// decide asks the policy about host:port once and records the outcome.
// false: the connection must not go on (a denial, or a name that did not
// resolve).
func (f *FrontEnd) decide(rec *accesslog.Record, host string, port uint16) (policy.Decision, bool) {
	dec, err := f.o.Decider.Decide(context.Background(), policy.Request{
		Listener: policy.ListenerTransparent,
		Client:   policy.Client{Addr: rec.Client},
		Host:     host,
		Port:     port,
	})
	rec.Decision = dec
	rec.Host = host
	if dec.Host != "" {
		rec.Host = dec.Host
	} else if err == nil {
		rec.Deny(policy.ReasonBadRequest)
		return dec, false
	}
	if err != nil {
		rec.Reason = dec.Reason
		if rec.Reason == "" {
			rec.Reason = policy.ReasonDNSError
		}
		f.o.Diag.Debug("transparent: decision failed", zap.String("host", host), zap.Error(err))
		return dec, false
	}
	return dec, dec.Verdict.Passes()
}

// tunnel dials the decision's pinned addresses and hands the connection
// to the relay; first goes upstream first. A tunnel whose rule inspects
// it is terminated by the inspector instead, as CONNECT's and SOCKS5's
// are, so that the rule's methods, paths, DLP and headers apply to the
// in-line client's requests too.
func (f *FrontEnd) tunnel(c *accept.Conn, dec policy.Decision, first []byte, rec *accesslog.Record) {
	if f.o.Runner.Inspects(dec) {
		f.o.Runner.Inspect(c, first, dec, rec)
		return
	}
	up, early, addr, err := f.o.Dialer.Dial(context.Background(), dec)
	if err != nil {
		f.o.Diag.Debug("transparent: dial failed", zap.String("host", dec.Host), zap.String("via", dec.Via), zap.Error(err))
		// dial_error, or upstream_proxy when a rule's parent proxy was
		// down or refused the tunnel (with its address and status).
		rec.DialFailed(err)
		f.refuse(c, rec)
		return
	}
	rec.IP, rec.EgressAddr = addr, egress.LocalAddrPort(up)
	f.o.Runner.Start(c, up, first, early, rec)
}

// refuse writes the access line and closes the connection.
func (f *FrontEnd) refuse(c *accept.Conn, rec *accesslog.Record) {
	rec.Finish()
	c.Close()
}

// loop reports whether dst is egressd itself: an unspecified or loopback
// address, or one of its own listening sockets.
func (f *FrontEnd) loop(dst netip.AddrPort) bool {
	a := dst.Addr()
	if a.IsUnspecified() || a.IsLoopback() {
		return true
	}
	for _, own := range f.o.Own {
		if own.Port() != dst.Port() {
			continue
		}
		if own.Addr().Unmap() == a || own.Addr().IsUnspecified() && f.o.Local(a) {
			return true
		}
	}
	return false
}

// hostAddr reports whether a is assigned to one of this host's interfaces.
func hostAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: fail closed
	}
	return slices.ContainsFunc(addrs, func(ia net.Addr) bool {
		n, ok := ia.(*net.IPNet)
		if !ok {
			return false
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		return ok && ip.Unmap() == a
	})
}
