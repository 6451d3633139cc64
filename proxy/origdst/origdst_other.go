//go:build !linux

package origdst

import (
	"context"
	"net"
	"net/netip"
)

// Listen returns ErrUnsupported: transparent redirection needs Linux.
func Listen(ctx context.Context, addr string, tproxy bool) (*net.TCPListener, error) {
	return nil, ErrUnsupported
}

// Destination returns ErrUnsupported: transparent redirection needs Linux.
func Destination(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrUnsupported
}
