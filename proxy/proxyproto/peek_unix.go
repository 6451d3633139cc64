//go:build unix

package proxyproto

import (
	"errors"
	"io"
	"syscall"
)

// peek copies the bytes waiting in the socket's receive buffer into buf
// without consuming them. It returns once more than have bytes are waiting
// (or buf is full, or the peer closed: io.EOF, or io.ErrUnexpectedEOF when
// it closed after sending only the bytes seen so far), so a caller holding a
// prefix it cannot decide on waits for the next bytes without spinning:
// when nothing new arrived, the callback returns false and the runtime
// poller parks until the socket becomes readable again, or the read
// deadline passes (RawConn.Read honours it: internal/poll FD.RawRead).
func peek(rc syscall.RawConn, buf []byte, have int) (int, error) {
	var n int
	var serr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, _, serr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK)
			if !errors.Is(serr, syscall.EINTR) {
				break
			}
		}
		switch {
		case errors.Is(serr, syscall.EAGAIN):
			return false
		case serr != nil:
			return true
		case n == 0:
			serr = io.EOF
			return true
		case n > have:
			return true
		case peerClosed(fd):
			// Nothing new, and nothing will come: the peer sent its FIN
			// after the bytes we already saw. Without this check the
			// wait below would last until the deadline, since the FIN's
			// readiness edge has already passed.
			serr = io.ErrUnexpectedEOF
			return true
		}
		return false
	})
	if err != nil {
		return 0, err
	}
	return n, serr
}
