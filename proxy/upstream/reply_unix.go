//go:build unix

package upstream

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/egressd/egressd/proxy/rawio"
)

// readHead reads a parent's answer head from c into buf and nothing after
// it: what the parent sends after its answer belongs to the tunnel, and
// the splice relay carries it from the socket. It peeks (MSG_PEEK) at what
// has arrived, consumes the head once its end is in sight, and otherwise
// consumes what it saw (all of it head) and waits for more. A parent
// answering in one segment costs one peek and one read. c's read deadline
// applies.
func readHead(c *net.TCPConn, buf []byte) ([]byte, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	have := 0
	for {
		n, err := peek(rc, buf[have:])
		if err != nil {
			return nil, err
		}
		if end := headEnd(buf[max(0, have-2) : have+n]); end >= 0 {
			end += max(0, have-2)
			if _, err := io.ReadFull(readerFunc(func(p []byte) (int, error) { return rawio.Read(c, p) }), buf[have:end]); err != nil {
				return nil, err
			}
			return buf[:end], nil
		}
		if have+n == len(buf) {
			return nil, errHeadTooLarge
		}
		if _, err := io.ReadFull(readerFunc(func(p []byte) (int, error) { return rawio.Read(c, p) }), buf[have:have+n]); err != nil {
			return nil, err
		}
		have += n
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// peek copies what waits in the socket's receive buffer into buf without
// consuming it, waiting on the runtime's poller (and the read deadline)
// while nothing does. io.EOF when the parent closed.
func peek(rc syscall.RawConn, buf []byte) (int, error) {
	var n int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, _, serr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK)
			if !errors.Is(serr, syscall.EINTR) {
				break
			}
		}
		if errors.Is(serr, syscall.EAGAIN) {
			return false
		}
		if serr == nil && n == 0 {
			serr = io.EOF
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return n, serr
}
