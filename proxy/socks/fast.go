package socks

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/egressd/egressd/proxy/rawio"
)

// The fast path serves the common SOCKS5 exchange itself when the server
// offers no authentication: a greeting that offers "no authentication", then
// a CONNECT to an IPv4, domain or IPv6 address. It reads into one pooled
// buffer and answers with the same decide, dial, guard and relay code as
// go-socks5's hooks, so the policy sees the same request either way; what
// it skips is go-socks5's per-connection server, its 4 KiB bufio.Reader and
// the two copy goroutines handleConnect starts (measured: about a third of
// a SOCKS5 tunnel's allocations).
//
// Everything else goes to go-socks5 as before, with the bytes read so far
// replayed: a greeting that is not SOCKS5 or offers no acceptable method,
// and a request that is not a version 5 CONNECT with a known address type
// (go-socks5 then answers BIND, UDP ASSOCIATE and unknown address types).
// TestFastPathMatchesLibrary and FuzzFastPathMatchesLibrary hold the two
// paths to the same bytes on the wire and the same access lines.

// SOCKS5 wire constants (RFC 1928).
const (
	socksVersion   = 5
	methodNoAuth   = 0x00
	cmdConnectByte = 0x01
	atypIPv4       = 0x01
	atypDomain     = 0x03
	atypIPv6       = 0x04
)

// fastBufSize holds the longest greeting (2+255) and request (4+1+255+2)
// with room for early client bytes; a client that sends more before the
// reply simply has the rest read by the relay.
const fastBufSize = 1024

var fastBufs = sync.Pool{New: func() any { return new([fastBufSize]byte) }}

// methodReply is the method selection the fast path sends: no
// authentication. go-socks5 sends the same two bytes for the same greeting.
var methodReply = []byte{socksVersion, methodNoAuth}

// greetingLen returns the length of the greeting at the start of b: 0 while
// b is too short to tell, -1 when the fast path does not serve it.
func greetingLen(b []byte) int {
	if len(b) >= 1 && b[0] != socksVersion {
		return -1
	}
	if len(b) < 2 || len(b) < 2+int(b[1]) {
		return 0
	}
	for _, m := range b[2 : 2+int(b[1])] {
		if m == methodNoAuth {
			return 2 + int(b[1])
		}
	}
	return -1
}

// connectRequest is a parsed SOCKS5 CONNECT request.
type connectRequest struct {
	host string // as destHost gives it for go-socks5's AddrSpec
	port int
}

// parseConnect parses the request at the start of b. n > 0: the request is
// b[:n]. n == 0: b is too short to tell. n < 0: the fast path does not serve
// it (another version, command or address type).
func parseConnect(b []byte) (req connectRequest, n int) {
	if len(b) >= 1 && b[0] != socksVersion || len(b) >= 2 && b[1] != cmdConnectByte {
		return req, -1
	}
	if len(b) < 4 {
		return req, 0
	}
	// b[2] is reserved; go-socks5 ignores it, and so does this.
	var addrEnd int
	switch b[3] {
	case atypIPv4:
		addrEnd = 4 + 4
	case atypIPv6:
		addrEnd = 4 + 16
	case atypDomain:
		if len(b) < 5 {
			return req, 0
		}
		addrEnd = 5 + int(b[4])
	default:
		return req, -1
	}
	n = addrEnd + 2
	if len(b) < n {
		return req, 0
	}
	switch b[3] {
	case atypIPv4:
		req.host = netip.AddrFrom4([4]byte(b[4:8])).String()
	case atypIPv6:
		req.host = netip.AddrFrom16([16]byte(b[4:20])).Unmap().String()
	default:
		req.host = string(b[5:addrEnd])
	}
	req.port = int(b[addrEnd])<<8 | int(b[addrEnd+1])
	return req, n
}

// handoff is what go-socks5 needs to go on where the fast path stopped: the
// client bytes read so far and the reply already sent.
type handoff struct {
	replay  []byte
	sent    []byte
	handled bool // the fast path ended the exchange; nothing to hand off
}

// serveFast runs the fast path on a conn fresh from Accept, with the
// handshake deadline set. See the comment at the top of this file.
func (x *exchange) serveFast(tc *net.TCPConn) handoff {
	buf := fastBufs.Get().(*[fastBufSize]byte)
	b := buf[:0]
	release := func() {
		if buf != nil {
			fastBufs.Put(buf)
			buf = nil
		}
	}
	defer release()
	decline := func(sent []byte) handoff {
		// go-socks5 reads these first; copied because buf goes back.
		return handoff{replay: append([]byte(nil), b...), sent: sent}
	}
	closed := handoff{handled: true}

	// Greeting.
	g := 0
	for {
		g = greetingLen(b)
		if g != 0 {
			break
		}
		var err error
		if b, err = readMore(tc, buf, b); err != nil {
			if len(b) == 0 {
				// Nothing arrived: like go-socks5, close without a word.
				tc.Close()
				return closed
			}
			return decline(nil)
		}
	}
	if g < 0 {
		return decline(nil)
	}
	if _, err := rawio.Write(tc, methodReply); err != nil {
		tc.Close()
		return closed
	}

	// Request.
	var req connectRequest
	n := 0
	for {
		req, n = parseConnect(b[g:])
		if n != 0 {
			break
		}
		var err error
		if b, err = readMore(tc, buf, b); err != nil {
			// Truncated: go-socks5 closes without a reply too.
			tc.Close()
			return closed
		}
	}
	if n < 0 {
		return decline(methodReply)
	}
	early := b[g+n:]
	if len(early) > 0 {
		// Bytes sent before our reply (optimistic clients): the guard and
		// the relay get them first. Rare, so copied and buf released.
		x.pending = append([]byte(nil), early...)
	}
	release()

	ctx := context.Background()
	if !x.decide(ctx, req.host, req.port) {
		x.sendReply(tc, replyNotAllowed, nil)
		tc.Close()
		return closed
	}
	up, err := x.dialUpstream(ctx)
	if err != nil {
		x.sendReply(tc, replyCode(x.rec.Status), nil)
		tc.Close()
		return closed
	}
	bind, _ := up.LocalAddr().(*net.TCPAddr)
	if err := x.sendReply(tc, replySucceeded, bind); err != nil {
		tc.Close()
		up.Close()
		return closed
	}
	runner := x.s.o.Runner
	first, ok := runner.Check(tc, x.pending, x.dec, x.rec)
	x.pending = nil
	if !ok {
		tc.Close()
		up.Close()
		return closed
	}
	x.claimed.Store(true)
	runner.Start(tc, up, first, x.rec)
	return closed
}

// readMore reads what the client has into the free part of buf after b.
func readMore(tc *net.TCPConn, buf *[fastBufSize]byte, b []byte) ([]byte, error) {
	if len(b) == len(buf) {
		return b, errRequestTooLong
	}
	m, err := rawio.Read(tc, buf[len(b):])
	return buf[:len(b)+m], err
}

var errRequestTooLong = errors.New("socks5 handshake longer than the fast path's buffer")

// sendReply writes an RFC 1928 reply the way go-socks5's sendReply does:
// the bound address for success, else IPv4 0.0.0.0:0.
func (x *exchange) sendReply(tc *net.TCPConn, code replyCode, bind *net.TCPAddr) error {
	var msg [4 + 16 + 2]byte
	msg[0], msg[1], msg[3] = socksVersion, byte(code), atypIPv4
	n := 4 + 4
	port := 0
	if bind != nil {
		port = bind.Port
		if ip4 := bind.IP.To4(); ip4 != nil {
			copy(msg[4:], ip4)
		} else {
			msg[3] = atypIPv6
			copy(msg[4:], bind.IP.To16())
			n = 4 + 16
		}
	}
	msg[n], msg[n+1] = byte(port>>8), byte(port)
	_, err := rawio.Write(tc, msg[:n+2])
	return err
}
