package sni

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/egressd/egressd/proxy/rawio"
)

// peekStart is the first read buffer: most ClientHellos fit, including
// ones carrying a post-quantum key share.
const peekStart = 4096

var scratch = sync.Pool{New: func() any { return new([peekStart]byte) }}

// Peek reads a ClientHello from conn. prefix holds bytes already read from
// conn (for example what an HTTP server buffered after a CONNECT); they come
// first. Peek reads until a whole ClientHello is available, limit bytes have
// been read in total (limit <= 0 means MaxPeek), or deadline passes.
//
// It returns every byte consumed, prefix included, even on error: the caller
// replays them to the upstream before relaying. Bytes past the ClientHello
// that arrived in the same reads are included too.
//
// When the first byte cannot start a TLS handshake, Peek returns ErrNotTLS
// after the read that brought it, without waiting for more. A read error or
// the deadline returns an error wrapping it (errors.Is(err,
// os.ErrDeadlineExceeded) for the deadline, io.EOF when the client stopped
// sending). Peek sets conn's read deadline (a zero deadline means none) and
// clears it before returning.
func Peek(conn net.Conn, prefix []byte, limit int, deadline time.Time) (hello []byte, info Info, err error) {
	if limit <= 0 {
		limit = MaxPeek
	}
	info, err = Parse(prefix)
	var inc *IncompleteError
	if !errors.As(err, &inc) {
		return prefix, info, err
	}
	if len(prefix) >= limit {
		return prefix, Info{}, ErrTooLarge
	}
	var buf []byte
	if size := min(limit, growTo(len(prefix), inc.Need)); size <= peekStart {
		// The usual case reads into a pooled scratch buffer and returns an
		// exact copy: a ClientHello is a few hundred bytes to 2 KiB, and a
		// 4 KiB buffer per tunnel was a quarter of a tunnel's garbage.
		sp := scratch.Get().(*[peekStart]byte)
		buf = sp[:len(prefix):size]
		defer func() {
			hello = bytes.Clone(hello)
			scratch.Put(sp)
		}()
	} else {
		buf = make([]byte, len(prefix), size)
	}
	copy(buf, prefix)

	if err := conn.SetReadDeadline(deadline); err != nil {
		return buf, Info{}, fmt.Errorf("reading ClientHello: %w", err)
	}
	defer conn.SetReadDeadline(time.Time{})
	for {
		n, rerr := rawio.Read(conn, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			info, err = Parse(buf)
			if !errors.As(err, &inc) {
				return buf, info, err
			}
			if len(buf) >= limit {
				return buf, Info{}, ErrTooLarge
			}
			if len(buf)+inc.Need > cap(buf) {
				nb := make([]byte, len(buf), min(limit, growTo(len(buf), inc.Need)))
				copy(nb, buf)
				buf = nb
			}
		}
		if rerr != nil {
			return buf, Info{}, fmt.Errorf("reading ClientHello after %d bytes: %w", len(buf), rerr)
		}
	}
}

// growTo sizes a buffer holding have bytes that needs at least need more.
func growTo(have, need int) int {
	return max(peekStart, have+need, 2*have)
}
