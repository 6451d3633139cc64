package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// op is one raw call's state, shared by the callback and its caller so
// that the callback is a method value bound once per call.
type op struct {
	p     []byte
	n     int
	errno syscall.Errno
}

func (o *op) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(o.p))), uintptr(len(o.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // let RawConn.Read wait on the poller
		}
		o.n, o.errno = int(r), e
		return true
	}
}

func (o *op) write(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(o.p))), uintptr(len(o.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // let RawConn.Write wait until writable
		}
		o.n, o.errno = int(r), e
		return true
	}
}

// Read reads into p like c.Read: at least one byte, io.EOF at the end, and
// c's read deadline applies (os.ErrDeadlineExceeded).
func Read(c net.Conn, p []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok || len(p) == 0 {
		return c.Read(p)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c.Read(p)
	}
	o := op{p: p}
	err = rc.Read(o.read)
	runtime.KeepAlive(p)
	switch {
	case err != nil:
		return 0, opError("read", c, err)
	case o.errno != 0:
		return 0, opError("read", c, os.NewSyscallError("read", o.errno))
	case o.n == 0:
		return 0, io.EOF
	}
	return o.n, nil
}

// Write writes all of p like c.Write, waiting while the socket's buffer is
// full; c's write deadline applies.
func Write(c net.Conn, p []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c.Write(p)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c.Write(p)
	}
	written := 0
	for written < len(p) {
		o := op{p: p[written:]}
		err := rc.Write(o.write)
		runtime.KeepAlive(p)
		switch {
		case err != nil:
			return written, opError("write", c, err)
		case o.errno != 0:
			return written, opError("write", c, os.NewSyscallError("write", o.errno))
		}
		written += o.n
	}
	return written, nil
}

// CloseWrite shuts down the writing half of a TCP connection, like
// (*net.TCPConn).CloseWrite.
func CloseWrite(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return c.CloseWrite()
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, syscall.SHUT_WR, 0)
	}); err != nil {
		return opError("shutdown", c, err)
	}
	if errno != 0 {
		return opError("shutdown", c, os.NewSyscallError("shutdown", errno))
	}
	return nil
}

// opError reports err like the net package does; RawConn's own OpError
// ("raw-read") is replaced so callers see the operation they asked for.
func opError(op string, c net.Conn, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
