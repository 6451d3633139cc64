package socks

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/rawio"
)

// The fast path serves the common SOCKS5 exchange itself: a greeting that
// offers a method the server accepts (no authentication, or RFC 1929
// username/password when users are configured), the credentials, then a
// CONNECT to an IPv4, domain or IPv6 address. It reads into one pooled
// buffer and answers with the same credential check, decide, dial, guard
// and relay code as go-socks5's hooks, so the policy sees the same request
// either way; what it skips is go-socks5's per-connection server, its 4 KiB
// bufio.Reader and the two copy goroutines handleConnect starts (measured:
// 101 allocations and 9.1 KB per tunnel before, 72 and 4.0 KB after).
//
// Every other version 5 request is refused here too, so that no version of
// go-socks5 ever acts on one: BIND and UDP ASSOCIATE (and unknown commands)
// get 0x07, an unknown address type 0x08, the replies go-socks5 sends.
//
// Everything else goes to go-socks5 as before, with the bytes read so far
// replayed: a greeting that is not SOCKS5 or offers no acceptable method,
// and a request that is not version 5 (go-socks5 closes without a reply).
// The replies the fast path already sent are dropped when go-socks5 sends
// them again. TestFastPathMatchesLibrary and FuzzFastPathMatchesLibrary
// hold the two paths to the same bytes on the wire and the same access
// lines.

// SOCKS5 wire constants (RFC 1928).
const (
	socksVersion     = 5
	methodNoAuth     = 0x00
	userPassVer      = 0x01 // RFC 1929's version byte
	cmdConnectByte   = 0x01
	cmdBindByte      = 0x02
	cmdAssociateByte = 0x03
	atypIPv4         = 0x01
	atypDomain       = 0x03
	atypIPv6         = 0x04
)

// fastBufSize holds the longest greeting (2+255), credentials (3+255+255)
// and request (4+1+255+2) with room for early client bytes; a client that
// sends more before the reply simply has the rest read by the relay.
const fastBufSize = 2048

var fastBufs = sync.Pool{New: func() any { return new([fastBufSize]byte) }}

// The fast path's fixed replies: the method selections and RFC 1929's
// status. go-socks5 sends the same bytes for the same input.
var (
	selectNoAuth   = []byte{socksVersion, methodNoAuth}
	selectUserPass = []byte{socksVersion, methodUserPass}
	userPassOK     = []byte{userPassVer, 0}
	userPassFailed = []byte{userPassVer, 1}
)

// chooseMethod returns the length of the greeting at the start of b and the
// method the server picks, as go-socks5 does after preferUserPass: username
// and password when users are configured and the client offers it, else no
// authentication when that is allowed and offered. n == 0: b is too short
// to tell. n < 0: the fast path does not serve it (go-socks5 refuses it).
func chooseMethod(b []byte, auth, required bool) (n int, method byte) {
	if len(b) >= 1 && b[0] != socksVersion {
		return -1, 0
	}
	if len(b) < 2 || len(b) < 2+int(b[1]) {
		return 0, 0
	}
	methods := b[2 : 2+int(b[1])]
	switch {
	case auth && bytes.IndexByte(methods, methodUserPass) >= 0:
		return len(methods) + 2, methodUserPass
	case (!auth || !required) && bytes.IndexByte(methods, methodNoAuth) >= 0:
		return len(methods) + 2, methodNoAuth
	}
	return -1, 0
}

// parseUserPass parses RFC 1929 credentials at the start of b. n > 0: they
// are b[:n]. n == 0: b is too short to tell. n < 0: not version 1.
func parseUserPass(b []byte) (user, pass string, n int) {
	if len(b) >= 1 && b[0] != userPassVer {
		return "", "", -1
	}
	if len(b) < 2 {
		return "", "", 0
	}
	u := 2 + int(b[1])
	if len(b) < u+1 {
		return "", "", 0
	}
	n = u + 1 + int(b[u])
	if len(b) < n {
		return "", "", 0
	}
	return string(b[2:u]), string(b[u+1 : n]), n
}

// request is a parsed SOCKS5 request.
type request struct {
	cmd  byte
	host string // as destHost gives it for go-socks5's AddrSpec
	port int
}

// parseRequest's answers besides a request of n > 0 bytes.
const (
	requestShort       = 0  // b is too short to tell
	requestNotSOCKS5   = -1 // another version: go-socks5 refuses it
	requestBadAddrType = -2 // version 5 with an unknown address type: reply 0x08
)

// parseRequest parses the version 5 request at the start of b, whatever its
// command. n > 0: the request is b[:n]; else one of the constants above.
func parseRequest(b []byte) (req request, n int) {
	if len(b) >= 1 && b[0] != socksVersion {
		return req, requestNotSOCKS5
	}
	if len(b) < 4 {
		return req, requestShort
	}
	req.cmd = b[1]
	// b[2] is reserved; go-socks5 ignores it, and so does this.
	var addrEnd int
	switch b[3] {
	case atypIPv4:
		addrEnd = 4 + 4
	case atypIPv6:
		addrEnd = 4 + 16
	case atypDomain:
		if len(b) < 5 {
			return req, requestShort
		}
		addrEnd = 5 + int(b[4])
	default:
		return req, requestBadAddrType
	}
	n = addrEnd + 2
	if len(b) < n {
		return req, requestShort
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
// client bytes read so far and the replies already sent.
type handoff struct {
	replay  []byte
	sent    [][]byte
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
	closed := handoff{handled: true}
	end := func() handoff {
		tc.Close()
		return closed
	}
	// read waits for more client bytes; false: the client is gone or too
	// slow (nothing more will come).
	read := func() bool {
		var err error
		b, err = readMore(tc, buf, b)
		return err == nil
	}

	// Greeting.
	auth, required := x.s.o.Auth != nil, x.s.o.AuthRequired
	g, method := chooseMethod(b, auth, required)
	for g == 0 {
		if !read() {
			if len(b) == 0 {
				return end() // nothing arrived: go-socks5 closes without a word too
			}
			break // go-socks5 reads the partial greeting and gives up alike
		}
		g, method = chooseMethod(b, auth, required)
	}
	if g <= 0 {
		return handoff{replay: bytes.Clone(b)}
	}
	selected := selectNoAuth
	if method == methodUserPass {
		selected = selectUserPass
	}
	if _, err := rawio.Write(tc, selected); err != nil {
		return end()
	}
	at := g

	// Credentials (RFC 1929), as go-socks5's UserPassAuthenticator reads them:
	// another version or a short read ends the conn without a reply.
	if method == methodUserPass {
		user, pass, n := parseUserPass(b[at:])
		for n == 0 {
			if !read() {
				return end()
			}
			user, pass, n = parseUserPass(b[at:])
		}
		if n < 0 {
			return end()
		}
		if !(credentials{x}).Valid(user, pass) {
			// A check that waited for a bcrypt slot (auth overload) may
			// have outlived the handshake deadline; the refusal still
			// goes out.
			if x.s.o.Handshake > 0 {
				tc.SetWriteDeadline(time.Now().Add(x.s.o.Handshake))
			}
			rawio.Write(tc, userPassFailed) // Valid recorded the denial
			return end()
		}
		if _, err := rawio.Write(tc, userPassOK); err != nil {
			return end()
		}
		at += n
	}

	// Request.
	req, n := parseRequest(b[at:])
	for n == requestShort {
		if !read() {
			return end() // truncated: go-socks5 closes without a reply too
		}
		req, n = parseRequest(b[at:])
	}
	switch {
	case n == requestBadAddrType:
		release()
		sendReply(tc, replyAddrTypeNotSupported, nil)
		return end()
	case n > 0 && req.cmd != cmdConnectByte:
		release()
		x.refuse(tc, req)
		return end()
	}
	if n < 0 {
		replay := bytes.Clone(b)
		sent := [][]byte{selected}
		if method == methodUserPass {
			// go-socks5 must pick the method the client was told.
			preferMethod(replay[2:g], methodUserPass)
			sent = append(sent, userPassOK)
		}
		return handoff{replay: replay, sent: sent}
	}
	if early := b[at+n:]; len(early) > 0 {
		// Bytes sent before our reply (optimistic clients): the guard and
		// the relay get them first. Rare, so copied and buf released.
		x.pending = bytes.Clone(early)
	}
	release()

	ctx := context.Background()
	if !x.decide(ctx, req.host, req.port) {
		sendReply(tc, replyNotAllowed, nil)
		return end()
	}
	up, err := x.dialUpstream(ctx)
	if err != nil {
		sendReply(tc, replyCode(x.rec.Status), nil)
		return end()
	}
	bind, _ := up.LocalAddr().(*net.TCPAddr)
	if err := sendReply(tc, replySucceeded, bind); err != nil {
		up.Close()
		return end()
	}
	x.startTunnel() // closes both conns itself when the guard refuses
	return closed
}

// refuse answers a request for a command egressd does not serve with
// "command not supported" (0x07). BIND and UDP ASSOCIATE get an access
// line, as a denial (not_allowed); an unknown command gets none, as
// go-socks5 gives none.
func (x *exchange) refuse(tc *net.TCPConn, req request) {
	x.s.diag.Debug("socks5 command refused", zap.Uint8("command", req.cmd))
	if req.cmd == cmdBindByte || req.cmd == cmdAssociateByte {
		x.requested = true
		x.rec.Deny(policy.ReasonNotAllowed)
		x.rec.Status = int(replyCommandNotSupported)
		x.rec.Host, x.rec.Port = req.host, uint16(req.port)
	}
	sendReply(tc, replyCommandNotSupported, nil)
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
func sendReply(tc *net.TCPConn, code replyCode, bind *net.TCPAddr) error {
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
