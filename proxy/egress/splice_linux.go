package egress

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// rawConns fetches the directions' RawConns and binds the callbacks once.
func (d *direction) rawConns() error {
	if d.srcRC != nil {
		return nil
	}
	var err error
	if d.srcRC, err = d.src.SyscallConn(); err != nil {
		return err
	}
	if d.dstRC, err = d.dst.SyscallConn(); err != nil {
		return err
	}
	d.waitFn = d.readableCheck
	d.spliceIn = d.spliceInOnce
	d.spliceOut = d.spliceOutOnce
	return nil
}

// waitReadable returns once src has bytes, EOF or an error pending. The
// copy path waits here so that it holds no buffer while src is idle (the
// splice path's wait is its own splice, see spliceInOnce).
//
// Go's poller is edge-triggered and RawConn.Read forgets a readiness edge
// that came before it started, so the first call of the callback must look
// for itself: it peeks one byte (MSG_PEEK|MSG_DONTWAIT, into the direction's
// own 1-byte buffer) and only on EAGAIN lets RawConn.Read wait. A later call
// means the poller saw a new edge; the read that follows finds out what it
// was.
func (d *direction) waitReadable() error {
	if err := d.rawConns(); err != nil {
		return err
	}
	for {
		d.calls, d.errno = 0, nil
		err := d.srcRC.Read(d.waitFn)
		if err == nil {
			if d.errno != nil {
				// The peek took the socket's pending error (a reset):
				// report it here, or the next read would see a clean EOF.
				return os.NewSyscallError("recvfrom", d.errno)
			}
			return nil
		}
		if err := d.timedOut(err); err != nil {
			return err
		}
	}
}

func (d *direction) readableCheck(fd uintptr) bool {
	d.calls++
	if d.calls > 1 {
		return true
	}
	for {
		_, _, err := unix.Recvfrom(int(fd), d.peekBuf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		d.errno = err
		return true // bytes, EOF (0), or an error
	}
}

// splice moves src to dst with splice(2) until EOF or an error. It returns
// errSpliceUnsupported, with the pipe empty, when the kernel cannot splice
// these sockets or no pipe can be opened: the copy path then carries on.
//
// The non-blocking splice into the pipe is itself the readiness check (see
// spliceInOnce): a burst ends when it would block, the pipe goes back to
// the pool inside the RawConn.Read callback, and only then may the poller
// wait. So no pipe is held while src is idle, and no syscall is spent on
// checking beyond the splice that finds src empty.
func (d *direction) splice() error {
	if err := d.rawConns(); err != nil {
		return errSpliceUnsupported
	}
	defer func() {
		if d.pipe != nil {
			d.t.pipes.put(d.pipe) // closed instead if it still holds bytes
			d.pipe = nil
		}
	}()
	for {
		d.poolErr = nil
		if err := d.srcRC.Read(d.spliceIn); err != nil {
			// A deadline: retry unless the tunnel is over. Anything
			// else: src closed under us.
			if err := d.timedOut(err); err != nil {
				return err
			}
			continue
		}
		if d.poolErr != nil {
			// No pipe to be had (descriptor limit): go on copying,
			// which needs none. The pipe is empty whenever we get here.
			return fmt.Errorf("%w: %w", errSpliceUnsupported, d.poolErr)
		}
		switch d.errno {
		case nil:
		case unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP:
			return fmt.Errorf("%w: %w", errSpliceUnsupported, d.errno)
		default:
			return os.NewSyscallError("splice", d.errno)
		}
		if d.n == 0 {
			return nil // EOF
		}
		d.pipe.buffered += d.n
		if err := d.drain(d.pipe); err != nil {
			return err
		}
	}
}

// drain splices everything in the pipe to dst, waiting for dst to be
// writable as needed.
func (d *direction) drain(p *pipe) error {
	for p.buffered > 0 {
		if err := d.dstRC.Write(d.spliceOut); err != nil {
			if err := d.timedOut(err); err != nil {
				return err
			}
			continue
		}
		if d.errno != nil {
			return os.NewSyscallError("splice", d.errno)
		}
		if d.n == 0 {
			return io.ErrShortWrite
		}
		p.buffered -= d.n
		d.count.Add(int64(d.n))
	}
	d.t.touch()
	return nil
}

// spliceInOnce borrows a pipe if it has none and moves what src has into
// it, never blocking. On EAGAIN it gives the pipe back and returns false,
// so RawConn.Read waits for the next readiness edge holding no pipe; the
// splice that found src empty ran after RawConn.Read reset its readiness
// state, so no edge can be missed.
func (d *direction) spliceInOnce(fd uintptr) bool {
	if d.pipe == nil {
		if d.pipe, d.poolErr = d.t.pipes.get(); d.poolErr != nil {
			return true
		}
	}
	d.n, d.errno = spliceNB(int(fd), d.pipe.w, d.t.pipeSize())
	if d.errno == unix.EAGAIN {
		d.t.pipes.put(d.pipe)
		d.pipe = nil
		return false
	}
	return true
}

// spliceOutOnce moves pipe bytes to dst; on EAGAIN it lets RawConn.Write
// wait for dst to be writable (this call was the check before waiting).
func (d *direction) spliceOutOnce(fd uintptr) bool {
	d.n, d.errno = spliceNB(d.pipe.r, int(fd), d.pipe.buffered)
	return d.errno != unix.EAGAIN
}

// spliceNB is one non-blocking splice(2). It is a raw system call, made
// without telling the Go scheduler: the call cannot block (both ends are
// non-blocking), and the scheduler's bookkeeping for a blocking call wakes
// its sysmon thread whenever the process was idle before. For a proxy that
// sleeps between bursts that wake-up, and sysmon's 20 µs polling after it,
// cost more CPU than the splices themselves (perf, new TLS tunnels).
func spliceNB(from, to, n int) (int, error) {
	for {
		m, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0,
			uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch errno {
		case 0:
			return int(m), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// pipeSize is how much one splice into the pipe asks for. Asking more than
// the pipe holds is harmless: the kernel moves what fits.
func (t *relay) pipeSize() int {
	if t.pipes.Size > 0 {
		return t.pipes.Size
	}
	return DefaultPipeSize
}
