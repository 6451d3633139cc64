package limits

import (
	"net"
	"net/netip"

	"github.com/egressd/egressd/policy"
)

// ListenerConfig describes one wrapped listener.
type ListenerConfig struct {
	// Protocol is what the listener speaks, and so how a refusal is
	// answered: policy.ListenerHTTP (HTTP and CONNECT) or
	// policy.ListenerSOCKS5.
	Protocol policy.Listener
	// PeerIsProxy says the socket peer is a load balancer sending PROXY
	// headers (listen.proxy_protocol), not the client: at accept
	// connections then count only against MaxConnections, since the
	// client's address is not known yet; Limiter.AdmitClient counts them
	// per client once a header names it.
	PeerIsProxy bool
}

// Listener wraps ln (a TCP listener; wrap it before anything that reads
// from the connection, such as a PROXY-header parser). Accept returns the
// connections ln returns, unwrapped, once admitted; it answers and closes
// the others itself and goes on accepting.
func (l *Limiter) Listener(ln net.Listener, lc ListenerConfig) net.Listener {
	return &listener{Listener: ln, l: l, lc: lc}
}

type listener struct {
	net.Listener
	l  *Limiter
	lc ListenerConfig
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerIP(c)
		limit := ln.l.admit(c, ip, ln.lc.Protocol, !ln.lc.PeerIsProxy)
		if limit == "" {
			return c, nil
		}
		ln.l.refuse(c, ip, ln.lc.Protocol, limit)
	}
}

func peerIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
