package egress

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

var errSpliceUnsupported = errors.New("splice unsupported")

// pipeSize is the capacity asked for each pipe (as Go's own splice does);
// the kernel may refuse and keep its default.
const pipeSize = 1 << 20

// pipe is a kernel pipe used to splice socket to socket.
type pipe struct {
	r, w int
}

// pipePool keeps a few drained pipes for reuse. A pipe is held only while
// bytes are flowing: an idle tunnel holds none, so it costs 2 descriptors.
var pipePool = make(chan *pipe, 64)

func getPipe() (*pipe, error) {
	select {
	case p := <-pipePool:
		return p, nil
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe returns a drained pipe to the pool, or closes it.
func putPipe(p *pipe) {
	select {
	case pipePool <- p:
	default:
		p.close()
	}
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// splice moves src to dst through a pipe with splice(2): bytes never enter
// user space. Between bursts it waits for readability without a pipe.
func (t *relay) splice(dst, src *net.TCPConn, count *atomic.Int64) error {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return errSpliceUnsupported
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return errSpliceUnsupported
	}
	for {
		// Wait until src has bytes or EOF, holding no pipe.
		if d := t.deadline(); !d.IsZero() {
			src.SetReadDeadline(d)
		}
		var eof bool
		var peekErr error
		err := srcRC.Read(func(fd uintptr) bool {
			var b [1]byte
			n, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case e == unix.EAGAIN || e == unix.EINTR:
				return false
			case e != nil:
				peekErr = e
			case n == 0:
				eof = true
			}
			return true
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if xerr := t.expired(); xerr != nil {
				return xerr
			}
			continue
		}
		if err != nil {
			return err
		}
		if peekErr != nil {
			return os.NewSyscallError("recvfrom", peekErr)
		}
		if eof {
			return nil
		}
		p, err := getPipe()
		if err != nil {
			return err
		}
		eof, err = t.burst(dst, dstRC, srcRC, p, count)
		if err != nil {
			p.close() // may hold bytes: never reuse
			return err
		}
		putPipe(p)
		if eof {
			return nil
		}
	}
}

// burst splices while src has bytes ready, draining the pipe into dst after
// each fill. It returns with the pipe empty.
func (t *relay) burst(dst *net.TCPConn, dstRC, srcRC syscall.RawConn, p *pipe, count *atomic.Int64) (eof bool, err error) {
	for {
		var in int
		var inErr error
		if err := srcRC.Read(func(fd uintptr) bool {
			in, inErr = spliceNB(int(fd), p.w, pipeSize)
			return true // never wait here: would-block ends the burst
		}); err != nil {
			return false, err
		}
		switch {
		case inErr == unix.EAGAIN:
			return false, nil
		case inErr == unix.EINVAL || inErr == unix.ENOSYS:
			return false, errSpliceUnsupported
		case inErr != nil:
			return false, os.NewSyscallError("splice", inErr)
		case in == 0:
			return true, nil
		}
		if d := t.deadline(); !d.IsZero() {
			dst.SetWriteDeadline(d)
		}
		for in > 0 {
			var out int
			var outErr error
			err := dstRC.Write(func(fd uintptr) bool {
				out, outErr = spliceNB(p.r, int(fd), in)
				return outErr != unix.EAGAIN
			})
			if err != nil {
				return false, err
			}
			if outErr != nil {
				return false, os.NewSyscallError("splice", outErr)
			}
			in -= out
			count.Add(int64(out))
		}
		t.touch()
	}
}

func spliceNB(from, to, n int) (int, error) {
	for {
		m, err := unix.Splice(from, nil, to, nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err == unix.EINTR {
			continue
		}
		return int(m), err
	}
}
