package origdst

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/
// ip6_tables.h); x/sys/unix names only the IPv4 option. Both are 80.
const ip6tSOOriginalDst = 80

// Listen listens on addr ("ip:port") for connections nftables redirects to
// it. Like egressd's other listeners it is plain TCP (no MPTCP) with no
// TCP keep-alive on accepted connections (timeouts.idle reaps dead peers).
//
// With tproxy the socket is also marked IP_TRANSPARENT (IPv4) or
// IPV6_TRANSPARENT (IPv6 and dual-stack), so that it accepts connections
// the tproxy statement hands it for addresses that are not the host's;
// that needs CAP_NET_RAW or CAP_NET_ADMIN. A redirect-only listener needs
// no capability.
func Listen(ctx context.Context, addr string, tproxy bool) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	if tproxy {
		lc.Control = setTransparent
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// setTransparent is the tproxy listener's net.ListenConfig.Control: it runs
// before bind. One flag serves both families of a dual-stack socket.
func setTransparent(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "tcp4" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		err = os.NewSyscallError("setsockopt IP_TRANSPARENT", err)
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w (a tproxy listener needs CAP_NET_RAW or CAP_NET_ADMIN)", err)
		}
	}
	return err
}

// query is one getsockopt's state. run is q.getsockopt bound once, when
// the pool makes q, so that a lookup allocates no closure.
type query struct {
	level, name uintptr
	sa          [unix.SizeofSockaddrInet6]byte // room for sockaddr_in6 (and sockaddr_in)
	salen       uint32
	errno       syscall.Errno
	run         func(fd uintptr)
}

var queries = sync.Pool{New: func() any {
	q := new(query)
	q.run = q.getsockopt
	return q
}}

// getsockopt is a raw call: it never blocks, so it needs none of the
// scheduler's system-call bookkeeping (see proxy/rawio).
func (q *query) getsockopt(fd uintptr) {
	q.salen = uint32(len(q.sa))
	_, _, q.errno = syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, q.level, q.name,
		uintptr(unsafe.Pointer(&q.sa)), uintptr(unsafe.Pointer(&q.salen)), 0)
}

// Destination returns the address and port the client of c dialed, for a
// connection accepted on a listener nftables redirects to (see the package
// doc): conntrack's original destination (SO_ORIGINAL_DST for IPv4, also
// on a dual-stack socket; IP6T_SO_ORIGINAL_DST for IPv6), or c's local
// address when conntrack has no entry for c (tproxy with notrack). An IPv4
// destination is returned as IPv4, never IPv4-mapped; the zone is dropped.
//
// A connection that was not redirected reports its own local address: a
// front end compares the result with its own listeners to refuse loops.
// The call allocates only the runtime's syscall.RawConn.
func Destination(c *net.TCPConn) (netip.AddrPort, error) {
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || la == nil {
		return netip.AddrPort{}, errors.New("origdst: connection has no local address")
	}
	local := la.AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap().WithZone(""), local.Port())
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	q := queries.Get().(*query)
	defer queries.Put(q)
	opt := "SO_ORIGINAL_DST"
	if local.Addr().Is4() {
		q.level, q.name = unix.SOL_IP, unix.SO_ORIGINAL_DST
	} else {
		q.level, q.name, opt = unix.SOL_IPV6, ip6tSOOriginalDst, "IP6T_SO_ORIGINAL_DST"
	}
	q.errno = 0
	if err := rc.Control(q.run); err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	switch q.errno {
	case 0:
	case unix.ENOENT:
		// No conntrack entry: nothing was translated, so the local address
		// is where the client's packets were going (tproxy).
		return local, nil
	default:
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", os.NewSyscallError("getsockopt "+opt, q.errno))
	}
	return q.addrPort(opt)
}

// addrPort decodes the sockaddr the kernel wrote (network byte order for
// the port, as on the wire).
func (q *query) addrPort(opt string) (netip.AddrPort, error) {
	family := binary.NativeEndian.Uint16(q.sa[0:2])
	port := binary.BigEndian.Uint16(q.sa[2:4])
	switch {
	case family == unix.AF_INET && q.salen >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(q.sa[4:8])), port), nil
	case family == unix.AF_INET6 && q.salen >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(q.sa[8:24])).Unmap(), port), nil
	}
	return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt %s: unexpected address family %d (%d bytes)", opt, family, q.salen)
}
