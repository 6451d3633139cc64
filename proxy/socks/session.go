package socks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/rawio"
	"github.com/egressd/egressd/proxy/upstream"
)

// A SOCKS5 connection goes through these steps, each on the bytes read so
// far into one pooled buffer:
//
//	greeting  (RFC 1928 section 3)  version 5, the offered methods; the method chosen, or 0xFF
//	auth      (RFC 1929)            username and password, when users are configured: status 0 or 1
//	request   (RFC 1928 section 4)  CONNECT; BIND, UDP ASSOCIATE and unknown commands 0x07, unknown address types 0x08
//	decide    policy.Decider        not allowed 0x02, a name that did not resolve 0x04
//	dial      egress.Dialer         the pinned addresses; a failure's reply from its syscall error (dialReply)
//	reply     success, with the upstream socket's address
//	tunnel    tunnel.Runner         the SNI guard on TLS ports, then the splice relay and the access line
//	          (a rule with inspect: no dial; the guard, then proxy/inspect terminates the tunnel)
//
// A greeting or request that is not version 5, and one that ends (or times
// out) before it is whole, is closed without a reply. These answers are
// go-socks5's: TestStateMachineMatchesLibrary and
// FuzzStateMachineMatchesLibrary hold them to it byte for byte.

// bufSize holds the longest greeting (2+255), credentials (3+255+255) and
// request (4+1+255+2) with room for early client bytes; a client that sends
// more before the reply has the rest read by the relay.
const bufSize = 2048

var bufs = sync.Pool{New: func() any { return new([bufSize]byte) }}

// session is one SOCKS5 connection's state.
type session struct {
	s   *Server
	c   *accept.Conn
	rec *accesslog.Record
	buf *[bufSize]byte // nil once given back to the pool
	b   []byte         // what the client sent so far, in buf
	// pending are client bytes that arrived after the request, held for
	// the guard and the relay.
	pending []byte
	// logged: the connection is worth an access line (credentials were
	// checked, or a request was read).
	logged bool
}

func newSession(s *Server, c *accept.Conn) *session {
	ss := &session{s: s, c: c, rec: s.o.Log.NewRecord(policy.ListenerSOCKS5, c.Client.Addr())}
	ss.rec.ClientPort = c.Client.Port()
	ss.buf = bufs.Get().(*[bufSize]byte)
	ss.b = ss.buf[:0]
	return ss
}

// run serves the connection from the greeting on. It returns true when
// the tunnel took the connection and the record over; otherwise the
// caller ends the session.
func (ss *session) run() bool {
	o := &ss.s.o
	tc := ss.c.TCPConn
	if o.Handshake > 0 {
		tc.SetDeadline(time.Now().Add(o.Handshake))
	}

	// Greeting.
	at, method, v := ss.greeting(o.Auth != nil, o.AuthRequired)
	switch v {
	case greetingShort:
		return ss.dropped("greeting cut short")
	case greetingNotSOCKS5:
		return ss.dropped("not SOCKS5")
	case greetingNoAcceptable:
		rawio.Write(tc, selectNone)
		if o.Auth != nil && o.AuthRequired {
			// A client that offers no username and password where they
			// are required is logged as a wrong password is.
			ss.logged = true
			ss.rec.Deny(policy.ReasonAuthRequired)
			ss.rec.Status = methodNoAcceptable
		}
		return false
	}
	selected := selectNoAuth
	if method == methodUserPass {
		selected = selectUserPass
	}
	if _, err := rawio.Write(tc, selected); err != nil {
		return false
	}

	// Credentials: another version, or a message cut short, ends the
	// connection without a reply.
	if method == methodUserPass {
		user, pass, n := parseUserPass(ss.b[at:])
		for n == 0 {
			if !ss.read() {
				return ss.dropped("credentials cut short")
			}
			user, pass, n = parseUserPass(ss.b[at:])
		}
		if n < 0 {
			return ss.dropped("credentials not RFC 1929")
		}
		ss.logged = true
		ss.rec.User = user
		if !o.Auth(user, pass) {
			ss.rec.Deny(policy.ReasonAuthRequired)
			ss.rec.Status = userPassFailed
			// A check that waited for a bcrypt slot (auth overload) may
			// have outlived the handshake deadline; the refusal still
			// goes out.
			if o.Handshake > 0 {
				tc.SetWriteDeadline(time.Now().Add(o.Handshake))
			}
			rawio.Write(tc, userPassRefused)
			return false
		}
		if _, err := rawio.Write(tc, userPassAccepted); err != nil {
			return false
		}
		at += n
	}

	// Request.
	req, n := parseRequest(ss.b[at:])
	for n == requestShort {
		if !ss.read() {
			return ss.dropped("request cut short")
		}
		req, n = parseRequest(ss.b[at:])
	}
	switch {
	case n == requestNotSOCKS5:
		return ss.dropped("request not SOCKS5")
	case n == requestBadAddrType:
		ss.reply(replyAddrTypeNotSupported, nil)
		return false
	case req.cmd != cmdConnect:
		ss.refuseCommand(req)
		return false
	}
	if early := ss.b[at+n:]; len(early) > 0 {
		// Bytes sent before our reply (optimistic clients): the guard and
		// the relay get them first. Rare, so copied and buf given back.
		ss.pending = bytes.Clone(early)
	}
	ss.dropBuf()
	return ss.connect(req)
}

// dropped notes a connection closed without a reply (what go-socks5 does
// with it too) and returns false.
func (ss *session) dropped(why string) bool {
	ss.s.diag.Debug("socks5 connection closed without a reply", zap.String("why", why), zap.Stringer("client", ss.c.Client))
	return false
}

// greeting reads until the greeting is whole, and chooses the method.
func (ss *session) greeting(auth, required bool) (n int, method byte, v greetingVerdict) {
	n, method, v = chooseMethod(ss.b, auth, required)
	for v == greetingShort {
		if !ss.read() {
			return 0, 0, greetingShort
		}
		n, method, v = chooseMethod(ss.b, auth, required)
	}
	return n, method, v
}

// connect decides a CONNECT request once, dials the decision's pinned
// addresses, replies, and hands the connection to the tunnel.
func (ss *session) connect(req request) bool {
	o := &ss.s.o
	rec := ss.rec
	ss.logged = true
	rec.Host, rec.Port = req.host, req.port
	if o.AuthRequired && rec.User == "" {
		rec.Deny(policy.ReasonAuthRequired)
		ss.reply(replyNotAllowed, nil)
		return false
	}
	if req.port == 0 {
		rec.Deny(policy.ReasonBadRequest)
		ss.reply(replyNotAllowed, nil)
		return false
	}
	ctx := context.Background()
	dec, err := o.Decider.Decide(ctx, policy.Request{
		Listener: policy.ListenerSOCKS5,
		Client:   policy.Client{Addr: rec.Client, User: rec.User},
		Host:     req.host,
		Port:     req.port,
	})
	rec.Decision = dec
	if dec.Host != "" {
		rec.Host = dec.Host
	}
	if err != nil {
		// Not a denial: the name did not resolve.
		rec.Reason = policy.ReasonDNSError
		ss.s.diag.Debug("socks5 decision failed", zap.String("host", req.host), zap.Error(err))
		ss.reply(replyHostUnreachable, nil)
		return false
	}
	if !dec.Verdict.Passes() {
		ss.reply(replyNotAllowed, nil)
		return false
	}
	if o.Runner.Inspects(dec) {
		return ss.inspect(dec)
	}
	up, early, addr, err := o.Dialer.Dial(ctx, dec)
	if err != nil {
		rec.DialFailed(err)
		ss.s.diag.Debug("socks5 dial failed", zap.String("host", dec.Host), zap.String("via", dec.Via), zap.Error(err))
		ss.reply(dialReply(err), nil)
		return false
	}
	rec.IP, rec.EgressAddr = addr, egress.LocalAddrPort(up)
	// The request is complete; from now on the tunnel's own timeouts apply.
	ss.c.SetDeadline(time.Time{})
	bind, _ := up.LocalAddr().(*net.TCPAddr)
	if err := ss.reply(replySucceeded, bind); err != nil {
		up.Close()
		return false
	}
	first, ok := o.Runner.GuardSNI(ss.c.TCPConn, ss.pending, dec, rec)
	ss.pending = nil
	if !ok {
		up.Close()
		return false
	}
	o.Runner.Start(ss.c, up, first, early, rec)
	return true
}

// inspect replies to a CONNECT whose rule inspects it, runs the guard and
// hands the tunnel to the inspector, which terminates it. Nothing is
// dialed now (the reply's bound address is zero): each request inside is
// decided and dialed on its own.
func (ss *session) inspect(dec policy.Decision) bool {
	o := &ss.s.o
	ss.c.SetDeadline(time.Time{})
	if err := ss.reply(replySucceeded, nil); err != nil {
		return false
	}
	first, ok := o.Runner.GuardSNI(ss.c.TCPConn, ss.pending, dec, ss.rec)
	ss.pending = nil
	if !ok {
		return false
	}
	o.Runner.Inspect(ss.c, first, dec, ss.rec)
	return true
}

// refuseCommand answers a request for a command egressd does not serve
// with "command not supported" (0x07). BIND and UDP ASSOCIATE are logged
// as denials (not_allowed); an unknown command is not a request worth a
// line of its own.
func (ss *session) refuseCommand(req request) {
	ss.s.diag.Debug("socks5 command refused", zap.Uint8("command", req.cmd))
	if req.cmd == cmdBind || req.cmd == cmdAssociate {
		ss.logged = true
		ss.rec.Deny(policy.ReasonNotAllowed)
		ss.rec.Host, ss.rec.Port = req.host, req.port
	}
	ss.reply(replyCommandNotSupported, nil)
}

// reply writes an RFC 1928 reply and records its code as the access
// line's status.
func (ss *session) reply(code replyCode, bind *net.TCPAddr) error {
	ss.rec.Status = int(code)
	return writeReply(ss.c.TCPConn, code, bind)
}

// refuseLimit refuses a connection past a limit, in a way every client
// understands at once: when the client offers "no authentication" it is
// selected, the request is read (for the access line) and answered with
// general failure (0x01); otherwise no method is acceptable (0xFF). A
// greeting that is not SOCKS5 gets no answer. Each step is bounded by
// RefuseTimeout.
func (ss *session) refuseLimit() {
	o := &ss.s.o
	tc := ss.c.TCPConn
	ss.logged = true
	ss.rec.Deny(policy.ReasonLimit)
	o.Log.Metrics().LimitRejected(policy.ListenerSOCKS5, ss.c.Limit)
	tc.SetDeadline(time.Now().Add(o.RefuseTimeout))
	at, _, v := ss.greeting(false, false)
	switch v {
	case greetingShort, greetingNotSOCKS5:
		return
	case greetingNoAcceptable:
		if _, err := rawio.Write(tc, selectNone); err == nil {
			linger(tc)
		}
		return
	}
	if _, err := rawio.Write(tc, selectNoAuth); err != nil {
		return
	}
	req, n := parseRequest(ss.b[at:])
	for n == requestShort && ss.read() {
		req, n = parseRequest(ss.b[at:])
	}
	if n > 0 {
		ss.rec.Host, ss.rec.Port = req.host, req.port
	}
	// The answer goes out even to a client that sent no request in time.
	tc.SetDeadline(time.Now().Add(o.RefuseTimeout))
	if ss.reply(replyGeneralFailure, nil) == nil {
		linger(tc)
	}
}

// maxLinger bounds what a refusal reads while waiting for the client to
// close.
const maxLinger = 16 << 10

// linger half-closes tc and reads until the client closes (or the
// deadline), so that the answer is delivered before the socket goes.
func linger(tc *net.TCPConn) {
	tc.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(tc, maxLinger))
}

// read reads what the client has into the free part of the buffer; false:
// the client is gone, too slow, or sent more than a handshake can be.
func (ss *session) read() bool {
	if len(ss.b) == len(ss.buf) {
		return false
	}
	m, err := rawio.Read(ss.c.TCPConn, ss.buf[len(ss.b):])
	ss.b = ss.buf[:len(ss.b)+m]
	return err == nil
}

// dropBuf gives the buffer back to the pool.
func (ss *session) dropBuf() {
	if ss.buf != nil {
		bufs.Put(ss.buf)
		ss.buf, ss.b = nil, nil
	}
}

// end writes the access line of a connection the tunnel did not take, if
// it has one, and closes it. The line first: a drain that saw the
// connection released finds it logged.
func (ss *session) end() {
	ss.dropBuf()
	if ss.logged {
		ss.rec.Finish()
	}
	ss.c.Close()
}

// dialReply is the reply to a failed dial (RFC 1928 section 6), read from
// the syscall errors the dialer keeps (egress.Dialer wraps every attempt's).
// A parent proxy's failure has replies of its own (parentReply), whatever
// syscall error it wraps: a parent that refused the connection is not the
// destination refusing it.
func dialReply(err error) replyCode {
	var pe *upstream.Error
	if errors.As(err, &pe) {
		return parentReply(pe)
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return replyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return replyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return replyHostUnreachable
	}
	return replyGeneralFailure
}

// parentReply is the reply when the parent proxy of a rule's via failed:
// its refusal (403) is "not allowed by ruleset", its gateway errors (502,
// 503, 504: it could not reach the destination) "host unreachable", and
// anything else, a parent down or its credentials refused included, a
// "general SOCKS server failure": the client's request was fine.
func parentReply(pe *upstream.Error) replyCode {
	switch pe.Status {
	case 403:
		return replyNotAllowed
	case 502, 503, 504:
		return replyHostUnreachable
	}
	return replyGeneralFailure
}
