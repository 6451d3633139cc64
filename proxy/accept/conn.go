package accept

import (
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/egressd/egressd/proxy/limits"
)

// Conn is one accepted client connection. It embeds the accepted
// *net.TCPConn, so it serves as a net.Conn (net/http reads from it) while
// the relay splices its TCPConn.
type Conn struct {
	*net.TCPConn

	// Client is who the connection belongs to: the PROXY header's source
	// behind a trusted load balancer, else the socket's peer. The address
	// identifies the client to the policy and the limits; the port is for
	// diagnostics.
	Client netip.AddrPort

	// Limit is the connection limit (accesslog.LimitMaxConnections or
	// accesslog.LimitMaxConnectionsPerClient) this connection exceeded:
	// the front end must refuse it in its own protocol, and log and count
	// the refusal. Empty: admitted.
	Limit string

	// OrigDst is the destination the client dialed, for a connection of
	// the in-line mode's transparent listener (set by its front end before
	// it hands the connection on); the zero value on other listeners.
	OrigDst netip.AddrPort

	srv      *Server
	slot     limits.Slot // the place it holds under the limits
	released atomic.Bool
}

// Close closes the socket and releases the connection.
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.Release()
	return err
}

// Release gives the connection's place back: its limits slot and its
// place among the server's open connections. Call it once the socket is
// closed (Close does both); only the first call has an effect.
func (c *Conn) Release() {
	if c.released.Swap(true) || c.srv == nil {
		return
	}
	c.srv.release(c)
}

// NewConn returns a Conn for a connection that did not come through a
// Server (tests, and front ends driven by hand): its client is the
// socket's peer, and releasing it gives nothing back.
func NewConn(tc *net.TCPConn) *Conn {
	return &Conn{TCPConn: tc, Client: peer(tc)}
}

// peer is the socket's remote address, IPv4-mapped IPv6 unmapped.
func peer(tc *net.TCPConn) netip.AddrPort {
	ta, ok := tc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
