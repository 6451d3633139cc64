package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Why Identify refuses a connection. Callers tell them apart for their
// diagnostics.
var (
	// ErrMissing: a trusted source sent no header.
	ErrMissing = errors.New("trusted proxy sent no PROXY header")
	// ErrForged: a source that is not trusted sent one.
	ErrForged = errors.New("PROXY header from an untrusted source")
)

// Identify checks what a connection accepted under listen.proxy_protocol
// starts with, waiting up to timeout, and returns its client. From a
// trusted source (a load balancer) it must be a header: Identify consumes
// exactly the header's bytes and returns its source (the peer itself for a
// LOCAL header, such as a health check). From any other source it must not
// be one: Identify consumes nothing and returns peer. Everything after the
// header stays in the kernel's buffer for the front end, and c stays the
// *net.TCPConn the splice relay needs. It clears the read deadline it set.
func Identify(c *net.TCPConn, peer netip.AddrPort, trusted bool, timeout time.Duration) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return netip.AddrPort{}, err
	}
	client := peer
	if !trusted {
		if err := sniffDirect(rc); err != nil {
			return netip.AddrPort{}, err
		}
	} else {
		h, err := readHeader(c, rc)
		if err != nil {
			return netip.AddrPort{}, err
		}
		if !h.Local {
			client = netip.AddrPortFrom(h.Source.Addr().Unmap(), h.Source.Port())
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return netip.AddrPort{}, err
	}
	return client, nil
}

// sniffDirect waits until a direct client's first bytes show whether they
// start a PROXY header, which such a client must not send.
func sniffDirect(rc syscall.RawConn) error {
	var buf [12]byte // the longer signature (v2)
	have := 0
	for {
		n, err := peek(rc, buf[:], have)
		if err != nil {
			return err
		}
		have = n
		switch matchSignature(buf[:n]) {
		case sigNone:
			return nil
		case sigV1, sigV2:
			return ErrForged
		}
		if n == len(buf) {
			return ErrForged // cannot happen: 12 bytes decide
		}
	}
}

// readHeader peeks until a whole header is buffered, then consumes exactly
// its bytes.
func readHeader(c *net.TCPConn, rc syscall.RawConn) (Header, error) {
	buf := make([]byte, v2Fixed)
	have := 0
	for {
		n, err := peek(rc, buf, have)
		if err != nil {
			return Header{}, err
		}
		have = n
		h, size, err := ParseHeader(buf[:n])
		switch {
		case errors.Is(err, ErrNoHeader):
			return Header{}, ErrMissing
		case errors.Is(err, ErrIncomplete):
			if size > len(buf) {
				buf = append(buf, make([]byte, size-len(buf))...)
			} else if n == len(buf) {
				return Header{}, errors.New("proxy header does not fit its own bound") // ParseHeader's n is a bound
			}
			continue
		case err != nil:
			return Header{}, err
		}
		if _, err := io.ReadFull(c, buf[:size]); err != nil {
			return Header{}, fmt.Errorf("consume proxy header: %w", err)
		}
		return h, nil
	}
}
