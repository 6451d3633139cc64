package socks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	socks5 "github.com/armon/go-socks5"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/rawio"
)

// replyCode is an RFC 1928 section 6 reply code.
type replyCode int

const (
	replySucceeded            replyCode = 0x00
	replyNotAllowed           replyCode = 0x02
	replyNetworkUnreachable   replyCode = 0x03
	replyHostUnreachable      replyCode = 0x04
	replyConnectionRefused    replyCode = 0x05
	replyCommandNotSupported  replyCode = 0x07
	replyAddrTypeNotSupported replyCode = 0x08
)

// exchange is one SOCKS5 connection. go-socks5's hooks are context-free
// about the connection, so one socks5.Server is built per connection with
// hooks that close over this state.
type exchange struct {
	s   *Server
	raw *net.TCPConn
	rec *accesslog.Record

	requested bool // a request (or an auth attempt) worth an access line was seen
	// claimed is set when the relay took the tunnel over: from then on it
	// owns both TCP conns and rec, and go-socks5's closes are ignored.
	claimed atomic.Bool
	dec     policy.Decision
	decErr  error
	// upstream is the dialed conn; up wraps it for go-socks5.
	upstream *net.TCPConn
	up       *upstreamConn
	pending  []byte // client bytes read past the request (by go-socks5 or the fast path), held until the guard passes
}

func (x *exchange) config() *socks5.Config {
	c := &socks5.Config{
		Resolver: passThrough{},
		Rules:    rules{x},
		Dial:     x.dial,
		Logger:   x.s.libLog,
	}
	if x.s.o.Auth != nil {
		methods := []socks5.Authenticator{socks5.UserPassAuthenticator{Credentials: credentials{x}}}
		if !x.s.o.AuthRequired {
			methods = append(methods, socks5.NoAuthAuthenticator{})
		}
		c.AuthMethods = methods
	}
	return c
}

// methodNoAcceptable is RFC 1928 section 3's "no acceptable methods".
const methodNoAcceptable = 0xFF

// noAcceptableMethod records, when authentication is required, a client
// that offered no username/password method as an auth_required denial, so
// it gets an access line like a wrong password does. go-socks5 (auth.go
// authenticate) has answered 0xFF already; its error reaches us only as
// text: ServeConn wraps NoSupportedAuth with %v.
func (x *exchange) noAcceptableMethod(err error) {
	if x.requested || x.s.o.Auth == nil || !x.s.o.AuthRequired ||
		!strings.Contains(err.Error(), socks5.NoSupportedAuth.Error()) {
		return
	}
	x.requested = true
	x.rec.Deny(policy.ReasonAuthRequired)
	x.rec.Status = methodNoAcceptable
}

func (x *exchange) finishIfUnclaimed() {
	if !x.claimed.Load() && x.requested {
		x.rec.Finish()
	}
}

// passThrough is go-socks5's Resolver: it resolves nothing, so the name
// reaches the policy as the client sent it and no DNS query is made for a
// name the policy denies. go-socks5 (request.go handleRequest) resolves
// before its RuleSet runs.
type passThrough struct{}

func (passThrough) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

// credentials adapts the user store to go-socks5's CredentialStore.
type credentials struct{ x *exchange }

func (c credentials) Valid(user, pass string) bool {
	x := c.x
	x.requested = true
	x.rec.User = user
	if x.s.o.Auth(user, pass) {
		return true
	}
	x.rec.Deny(policy.ReasonAuthRequired)
	x.rec.Status = 1 // RFC 1929 failure status
	return false
}

// rules is go-socks5's RuleSet: it asks the shared policy engine.
type rules struct{ x *exchange }

func (r rules) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	x := r.x
	if req.Command != socks5.ConnectCommand {
		// Reached only with the fast path off (tests): the fast path
		// refuses BIND and UDP ASSOCIATE itself (refuse). Here go-socks5
		// answers "command not supported" (0x07), which it does only
		// after the RuleSet allowed the command.
		x.requested = true
		x.rec.Deny(policy.ReasonNotAllowed)
		x.rec.Status = int(replyCommandNotSupported)
		x.rec.Host = destHost(req.DestAddr)
		x.rec.Port = uint16(req.DestAddr.Port)
		return ctx, true
	}
	return ctx, x.decide(ctx, destHost(req.DestAddr), req.DestAddr.Port)
}

// decide asks the policy about a CONNECT to host:port and records the
// answer. false: refuse with "not allowed" (rec.Status is set). true: go on
// to dial, which fails at once when the name did not resolve (x.decErr).
// Both go-socks5's RuleSet and the fast path call it.
func (x *exchange) decide(ctx context.Context, host string, port int) bool {
	x.requested = true
	if x.s.o.AuthRequired && x.rec.User == "" {
		x.rec.Deny(policy.ReasonAuthRequired)
		x.rec.Status = int(replyNotAllowed)
		return false
	}
	x.rec.Host, x.rec.Port = host, uint16(port)
	if port <= 0 || port > 65535 {
		x.rec.Deny(policy.ReasonBadRequest)
		x.rec.Status = int(replyNotAllowed)
		return false
	}
	dec, err := x.s.o.Decider.Decide(ctx, policy.Request{
		Listener: policy.ListenerSOCKS5,
		Client:   policy.Client{Addr: x.rec.Client, User: x.rec.User},
		Host:     host,
		Port:     uint16(port),
	})
	x.dec = dec
	x.rec.Decision = dec
	if dec.Host != "" {
		x.rec.Host = dec.Host
	}
	if err != nil {
		// Not a denial: the name did not resolve. The dial fails so the
		// client hears host unreachable (0x04).
		x.decErr = err
		x.rec.Reason = policy.ReasonDNSError
		return true
	}
	if !dec.Verdict.Passes() {
		x.rec.Status = int(replyNotAllowed)
		return false
	}
	return true
}

func destHost(a *socks5.AddrSpec) string {
	if a.FQDN != "" {
		return a.FQDN
	}
	if ip, ok := netip.AddrFromSlice(a.IP); ok {
		return ip.Unmap().String()
	}
	return ""
}

var errDenied = errors.New("refused by policy")

// dial is go-socks5's Dial: it dials only the decision's pinned addresses.
func (x *exchange) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	up, err := x.dialUpstream(ctx)
	if err != nil {
		return nil, err
	}
	x.up = &upstreamConn{TCPConn: up, x: x}
	return x.up, nil
}

// dialUpstream dials the decision's pinned addresses and records the
// outcome: on failure rec.Status is the reply the client gets (replyFor).
func (x *exchange) dialUpstream(ctx context.Context) (*net.TCPConn, error) {
	if x.decErr != nil {
		x.rec.Status = int(replyFor(x.decErr))
		return nil, x.decErr
	}
	if !x.dec.Verdict.Passes() {
		return nil, errDenied
	}
	up, addr, err := x.s.o.Dialer.Dial(ctx, x.dec)
	if err != nil {
		x.rec.Reason = policy.ReasonDialError
		x.rec.Status = int(replyFor(err))
		return nil, err
	}
	x.upstream = up
	x.rec.IP = addr
	x.rec.Status = int(replySucceeded)
	// The request is complete; from now on the tunnel's own timeouts apply.
	x.raw.SetDeadline(time.Time{})
	return up, nil
}

// replyFor is the reply to a failed dial. go-socks5 (request.go
// handleConnect) picks it from the error's text, so the fast path does the
// same and both answer alike.
func replyFor(err error) replyCode {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "refused"):
		return replyConnectionRefused
	case strings.Contains(msg, "network is unreachable"):
		return replyNetworkUnreachable
	}
	return replyHostUnreachable
}

// clientConn is the conn handed to go-socks5. Its WriteTo is where
// go-socks5's client-to-origin copy loop (io.Copy from its bufio.Reader,
// whose WriteTo defers to ours) hands the tunnel to egressd: the guard runs,
// then the shared splice relay carries both directions on goroutines of its
// own, and go-socks5's copy loops, its handleConnect and our connection
// goroutine all return (go-socks5 request.go handleConnect would otherwise
// park three goroutines for the tunnel's life). go-socks5 then closes and
// half-closes both conns; once the relay owns them those calls are no-ops.
type clientConn struct {
	*net.TCPConn
	x        *exchange
	greeting []byte // read ahead (preferUserPass, the fast path), replayed first
	// sent are the replies the fast path has already sent for the replayed
	// bytes; go-socks5's identical replies are dropped instead of repeated.
	sent [][]byte
}

// Read replays the greeting read ahead, then reads the socket.
func (c *clientConn) Read(p []byte) (int, error) {
	if len(c.greeting) > 0 {
		n := copy(p, c.greeting)
		c.greeting = c.greeting[n:]
		return n, nil
	}
	return rawio.Read(c.TCPConn, p)
}

// Write sends go-socks5's replies.
func (c *clientConn) Write(p []byte) (int, error) {
	if len(c.sent) > 0 {
		sent := c.sent[0]
		c.sent = c.sent[1:]
		if !bytes.Equal(p, sent) {
			// Never expected: go-socks5 answered the same bytes otherwise
			// (a user removed by a reload in between). The client already
			// has our answer; end it.
			c.sent = nil
			return 0, errReplyMismatch
		}
		return len(p), nil
	}
	return rawio.Write(c.TCPConn, p)
}

var errReplyMismatch = errors.New("go-socks5 replied differently from the fast path")

// methodUserPass is RFC 1928 section 3's username/password method.
const methodUserPass = 0x02

// preferUserPass reads the client's greeting (version, method count,
// methods) and returns it with username/password moved to the front when
// it is offered. go-socks5 (auth.go authenticate) takes the first method in
// the client's order that it supports, and clients that have credentials
// offer "no authentication" first (curl: 0, 2; golang.org/x/net/proxy: 0,
// 2), so with optional authentication a client that sent credentials would
// be served anonymously and its user's groups would never apply. RFC 1928
// leaves the choice to the server; go-socks5 still parses and answers the
// greeting. A greeting that is not SOCKS5 is returned as read, for
// go-socks5 to refuse.
func preferUserPass(r io.Reader) ([]byte, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	if head[0] != 5 {
		return head[:], nil
	}
	g := make([]byte, 2+int(head[1]))
	copy(g, head[:])
	if _, err := io.ReadFull(r, g[2:]); err != nil {
		return nil, err
	}
	preferMethod(g[2:], methodUserPass)
	return g, nil
}

// preferMethod moves m, when offered, to the front of methods, keeping the
// others' order.
func preferMethod(methods []byte, m byte) {
	for i, o := range methods {
		if o == m {
			copy(methods[1:i+1], methods[:i])
			methods[0] = m
			return
		}
	}
}

func (c *clientConn) WriteTo(w io.Writer) (int64, error) {
	x := c.x
	if len(c.greeting) > 0 {
		// Never expected: go-socks5 reads the greeting first.
		return 0, errDenied
	}
	if x.up == nil || w != io.Writer(x.up) {
		// Not the tunnel: never expected, but stay correct.
		return io.Copy(w, c.TCPConn)
	}
	if !x.startTunnel() {
		return 0, errDenied
	}
	return 0, nil
}

// startTunnel runs the first-bytes guard on the client conn (after the
// bytes held in x.pending) and, if it passes, hands both conns and rec to
// the relay. Otherwise it closes both conns; rec carries the denial.
func (x *exchange) startTunnel() bool {
	runner := x.s.o.Runner
	first, ok := runner.Check(x.raw, x.pending, x.dec, x.rec)
	x.pending = nil
	if !ok {
		x.raw.Close()
		x.upstream.Close()
		return false
	}
	x.claimed.Store(true)
	runner.Start(x.raw, x.upstream, first, x.rec)
	return true
}

// CloseWrite ignores go-socks5's half-close after its origin-to-client copy
// loop (upstreamConn.WriteTo) returned: that direction is the relay's.
func (c *clientConn) CloseWrite() error { return nil }

// Close closes the client conn unless the relay owns it.
func (c *clientConn) Close() error {
	if c.x.claimed.Load() {
		return nil
	}
	return c.TCPConn.Close()
}

// upstreamConn is the conn go-socks5 gets from Dial. Bytes go-socks5 writes
// before the relay starts (what its bufio.Reader had buffered past the
// request) are held for the guard instead of being sent.
type upstreamConn struct {
	*net.TCPConn
	x *exchange
}

func (u *upstreamConn) Write(p []byte) (int, error) {
	u.x.pending = append(u.x.pending, p...)
	return len(p), nil
}

// WriteTo is go-socks5's origin-to-client copy loop: the relay started by
// clientConn.WriteTo carries this direction, so it returns at once.
func (u *upstreamConn) WriteTo(io.Writer) (int64, error) { return 0, nil }

// CloseWrite ignores go-socks5's half-close after its client-to-origin copy
// loop (clientConn.WriteTo) returned: the relay half-closes when the client
// does.
func (u *upstreamConn) CloseWrite() error { return nil }

// Close closes the upstream conn unless the relay owns it.
func (u *upstreamConn) Close() error {
	if u.x.claimed.Load() {
		return nil
	}
	return u.TCPConn.Close()
}

// ReadFrom keeps io.Copy from bypassing Write (and the guard) through
// *net.TCPConn's splice path.
func (u *upstreamConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{u}, r)
}

type writerOnly struct{ io.Writer }
