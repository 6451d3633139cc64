package forward

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/rawio"
)

// connectRequest is what egressd acts on in a CONNECT request, as either
// parser read it: the fast path's (parseConnectHead) or net/http's.
type connectRequest struct {
	authority string // the request target as sent: host:port
	proxyAuth string // the Proxy-Authorization value; "" when none
}

const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// serveConnect is egressd's one CONNECT handler, whichever parser read the
// head. It checks the credentials once, asks the policy once, and answers
// once on the raw connection: 407 (auth_required), 400 (bad_request), 403
// (a denial), 502 (the name did not resolve, or the dial failed), or 200
// and the tunnel (dial the pinned addresses, then tunnel.Runner: the SNI
// guard, the splice relay, the access line). prefix holds client bytes
// already read past the head (net/http's buffer). It owns c from here on:
// it closes it, or the tunnel does.
func (h *Handler) serveConnect(c *accept.Conn, req connectRequest, prefix []byte) {
	rec := h.o.Log.NewRecord(policy.ListenerConnect, c.Client.Addr())
	rec.ClientPort = c.Client.Port()
	if h.o.Auth != nil {
		user, ok := h.o.Auth(req.proxyAuth)
		switch {
		case ok:
			rec.User = user
		case h.o.AuthRequired || req.proxyAuth != "":
			rec.Host, _, _ = splitHostPort(req.authority, "")
			rec.Deny(policy.ReasonAuthRequired)
			h.refuseConnect(c, rec, answer{status: http.StatusProxyAuthRequired, kind: denied,
				reason: policy.ReasonAuthRequired, authenticate: true, close: true})
			return
		}
	}
	ctx := context.Background()
	dec, a := h.decide(ctx, rec, policy.ListenerConnect, req.authority, "")
	if a != nil {
		h.refuseConnect(c, rec, *a)
		return
	}
	if h.o.Runner.Inspects(dec) {
		h.inspectConnect(c, dec, rec, prefix)
		return
	}
	upstream, early, addr, err := h.o.Dialer.Dial(ctx, dec)
	if err != nil {
		h.o.Diag.Debug("dial failed", zap.String("host", dec.Host), zap.String("via", dec.Via), zap.Error(err))
		// dial_error, or upstream_proxy when the decision's parent proxy
		// was down or refused the tunnel.
		rec.DialFailed(err)
		h.refuseConnect(c, rec, answer{status: http.StatusBadGateway, kind: upstreamError, reason: rec.Reason, close: true})
		return
	}
	rec.IP, rec.EgressAddr = addr, egress.LocalAddrPort(upstream)
	rec.Status = http.StatusOK
	c.SetWriteDeadline(time.Now().Add(h.o.Handshake))
	if _, err := rawio.Write(c.TCPConn, []byte(established)); err != nil {
		upstream.Close()
		rec.Finish()
		c.Close()
		return
	}
	c.SetWriteDeadline(time.Time{})
	first, ok := h.o.Runner.GuardSNI(c.TCPConn, prefix, dec, rec)
	if !ok {
		upstream.Close()
		rec.Finish()
		c.Close()
		return
	}
	// The relay runs on goroutines of its own, so this connection's
	// goroutine (and, on the net/http path, its server's state) can end.
	h.o.Runner.Start(c, upstream, first, early, rec)
}

// inspectConnect runs an allowed CONNECT whose rule inspects it: confirm,
// run the guard, and hand the tunnel to the inspector, which terminates
// it. Nothing is dialed now: each request inside is decided and dialed on
// its own.
func (h *Handler) inspectConnect(c *accept.Conn, dec policy.Decision, rec *accesslog.Record, prefix []byte) {
	rec.Status = http.StatusOK
	c.SetWriteDeadline(time.Now().Add(h.o.Handshake))
	if _, err := rawio.Write(c.TCPConn, []byte(established)); err != nil {
		rec.Finish()
		c.Close()
		return
	}
	c.SetWriteDeadline(time.Time{})
	first, ok := h.o.Runner.GuardSNI(c.TCPConn, prefix, dec, rec)
	if !ok {
		rec.Finish()
		c.Close()
		return
	}
	h.o.Runner.Inspect(c, first, dec, rec)
}

// refuseConnect answers a CONNECT that goes no further with a, writes its
// access line and closes the connection once the client has had the
// answer.
func (h *Handler) refuseConnect(c *accept.Conn, rec *accesslog.Record, a answer) {
	rec.Status = a.status
	err := a.write(c.TCPConn, h.o.Handshake)
	rec.Finish()
	if err == nil {
		c.SetReadDeadline(time.Now().Add(h.o.RefuseTimeout))
		linger(c.TCPConn)
	}
	c.Close()
}
