package main

import (
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// payload is an in-memory file of zeros (memfd) that bulk senders pass to
// sendfile(2), while the receiving ends splice(2) into /dev/null: the load
// tool then copies no payload through user space, so on the shared 2-core
// machine more of its core is left for the proxy's traffic. A conn that is not
// a *net.TCPConn (a proxy answered with early bytes) falls back to plain
// reads and writes.
type payload struct {
	path string // reopened per stream, so that each has its own file offset
	size int64
	f    *os.File
}

// newPayload creates the memfd holding size zero bytes.
func newPayload(size int) (*payload, error) {
	fd, err := unix.MemfdCreate("egressbench-payload", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "egressbench-payload")
	if _, err := f.Write(make([]byte, size)); err != nil {
		f.Close()
		return nil, err
	}
	return &payload{path: fmt.Sprintf("/proc/self/fd/%d", fd), size: int64(size), f: f}, nil
}

// Close releases the memfd.
func (p *payload) Close() error { return p.f.Close() }

// send writes n zero bytes to c and returns how many it wrote; fallback is a
// zero buffer for conns that cannot take sendfile.
func (p *payload) send(c net.Conn, n int64, fallback []byte) (int64, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return writeN(c, n, fallback)
	}
	f, err := os.Open(p.path)
	if err != nil {
		return writeN(c, n, fallback)
	}
	defer f.Close()
	var done int64
	for done < n {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return done, err
		}
		m, err := tc.ReadFrom(&io.LimitedReader{R: f, N: min(p.size, n-done)})
		done += m
		if err != nil {
			return done, err
		}
		if m == 0 {
			return done, io.ErrShortWrite
		}
	}
	return done, nil
}

// writeN writes n bytes from buf (repeated) to w.
func writeN(w io.Writer, n int64, buf []byte) (int64, error) {
	var done int64
	for done < n {
		m, err := w.Write(buf[:min(int64(len(buf)), n-done)])
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// discard reads exactly n bytes from c and drops them, splicing into
// /dev/null when c is a TCP conn; buf serves the fallback.
func discard(c net.Conn, n int64, buf []byte) (int64, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
			defer null.Close()
			m, err := null.ReadFrom(&io.LimitedReader{R: tc, N: n})
			if err == nil && m < n {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
	}
	var done int64
	for done < n {
		m, err := c.Read(buf[:min(int64(len(buf)), n-done)])
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
