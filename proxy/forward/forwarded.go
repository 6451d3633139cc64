package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync/atomic"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
)

// forwarded is an absolute-URI request's state on its way to the origin
// and back: which connection carried it and how it ended.
type forwarded struct {
	x     *exchange
	addrs []netip.AddrPort // the decision's pinned addresses
	via   string           // the decision's parent proxy; "" direct

	// Set on the request's goroutine (gotConn runs in the Transport's
	// getConn, before the request is written).
	up        *upstreamConn // the connection the request went out on
	upStart   int64         // up.written when this request took it
	misrouted bool          // a connection outside the pinned set was offered

	// Set on the Transport's write goroutine or while relaying; read once
	// the Transport is done with the request.
	clientTimeout atomic.Bool // the client's body stalled past timeouts.idle
	bodyFailed    atomic.Bool // the origin's response body ended in an error
	bodyTimeout   atomic.Bool // ... on timeouts.idle
}

// gotConn checks the connection the Transport chose before the request is
// written on it: its address must be one the decision pinned, or, for a
// decision with a parent proxy, it must be that parent's. One pool per
// pinned set (and per parent) makes that so; if it ever were not, the
// connection is closed and the request fails rather than go where the
// policy did not allow.
func (f *forwarded) gotConn(info httptrace.GotConnInfo) {
	up := upstreamOf(info.Conn)
	if up == nil || up.via != f.via || f.via == "" && !pinnedIn(up, f.addrs) {
		info.Conn.Close()
		f.misrouted = true
		return
	}
	f.up, f.upStart = up, up.written.Load()
	f.x.rec.IP, f.x.rec.EgressAddr = up.remote, up.local
}

func upstreamOf(c net.Conn) *upstreamConn {
	switch c := c.(type) {
	case *upstreamConn:
		return c
	case *tls.Conn:
		up, _ := c.NetConn().(*upstreamConn)
		return up
	}
	return nil
}

func pinnedIn(up *upstreamConn, addrs []netip.AddrPort) bool {
	for _, ap := range addrs {
		if ap.Addr().Unmap() == up.remote.Addr().Unmap() && ap.Port() == up.remote.Port() {
			return true
		}
	}
	return false
}

// poolRoundTripper is the pools as goproxy's ProxyCtx.RoundTripper (when
// there is no HTTP cache in front of them).
type poolRoundTripper Handler

func (h *poolRoundTripper) RoundTrip(r *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	return (*Handler)(h).roundTrip(r)
}

// roundTrip sends a forwarded request through the pool of its decision's
// pinned addresses: the client's own request, or one the HTTP cache sends
// (a miss, a revalidation). The pool counts the request busy until its
// response body is closed.
func (h *Handler) roundTrip(r *http.Request) (*http.Response, error) {
	d, ok := r.Context().Value(decisionKey{}).(decided)
	if !ok {
		return nil, errNoDecision
	}
	var p *pool
	if via := d.dec.Via; via != "" {
		p = h.ups.getVia(via)
		if auth := h.o.Dialer.Upstream.Auth(via); auth != "" && r.URL.Scheme == "http" {
			// Only in absolute form to the parent: inside an https
			// tunnel this header would reach the origin.
			r2 := *r
			r2.Header = r.Header.Clone()
			r2.Header.Set("Proxy-Authorization", auth)
			r = &r2
		}
	} else {
		p = h.ups.get(d.dec.Addrs)
	}
	resp, err := p.tr.RoundTrip(r)
	if err != nil {
		h.ups.release(p)
		return nil, err
	}
	b := &pooledBody{ReadCloser: resp.Body, ups: h.ups, p: p}
	if x, ok := r.Context().Value(exchangeKey{}).(*exchange); ok && x.forwarding {
		b.f = &x.fwd
	}
	resp.Body = b
	return resp, nil
}

// pooledBody is an origin's response body: closing it ends the request's
// use of its pool, and a read error other than EOF (the origin stalled or
// went away mid-body) is remembered, so the client's response is cut
// rather than end as if whole (goproxy v1.9.3 http.go only logs it).
type pooledBody struct {
	io.ReadCloser
	ups    *upstreams
	p      *pool
	f      *forwarded // nil for the HTTP cache's own requests
	closed atomic.Bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.f != nil {
		b.f.bodyFailed.Store(true)
		if isTimeout(err) {
			b.f.bodyTimeout.Store(true)
		}
	}
	return n, err
}

func (b *pooledBody) Close() error {
	err := b.ReadCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		b.ups.release(b.p)
	}
	return err
}

// failed answers a forwarded request that got no response from the
// origin; err is why.
func (h *Handler) failed(r *http.Request, x *exchange, err error) *http.Response {
	f := &x.fwd
	switch {
	case errors.Is(err, errUpstreamTLS):
		// The origin's certificate is not valid for the name (or its TLS
		// handshake failed): refused, never relayed.
		x.rec.Deny(policy.ReasonUpstreamTLS)
		return answer{status: http.StatusBadGateway, kind: denied, reason: policy.ReasonUpstreamTLS, close: true}.response(r)
	case x.forwarding && f.clientTimeout.Load():
		// The client's body stalled. If nothing of the request left
		// egressd, the client gets its answer; otherwise the origin saw
		// part of a request and the client connection is cut.
		x.rec.Reason = policy.ReasonTimeout
		if f.up != nil && f.up.written.Load() > f.upStart {
			x.abort, x.aborting = true, true
			panic(http.ErrAbortHandler)
		}
		return answer{status: http.StatusRequestTimeout, kind: upstreamError, reason: policy.ReasonTimeout, close: true}.response(r)
	case x.forwarding && f.up != nil && f.up.timeout.Load():
		// The origin took our request but sent no response head within
		// timeouts.idle (or stopped taking our request).
		x.rec.Reason = policy.ReasonTimeout
		return answer{status: http.StatusGatewayTimeout, kind: upstreamError, reason: policy.ReasonTimeout}.response(r)
	}
	if f.misrouted {
		h.o.Diag.Error("forward: a pooled connection outside the decision's pinned addresses was offered; refused",
			zap.String("host", x.rec.Host))
	}
	// No pinned address answered, or the origin failed before a response;
	// or the parent proxy was down or refused (upstream_proxy).
	x.rec.DialFailed(err)
	return answer{status: http.StatusBadGateway, kind: upstreamError, reason: x.rec.Reason}.response(r)
}

// finishForwarded runs when goproxy is done with a forwarded request: a
// response that could not be relayed whole is logged with its reason and
// cut.
func (h *Handler) finishForwarded(x *exchange, cw *respWriter) {
	f := &x.fwd
	switch {
	case f.bodyFailed.Load():
		// The origin's body failed mid-way (timeouts.idle, a reset):
		// what the client got so far must not look complete.
		x.abort = true
		if f.bodyTimeout.Load() {
			x.rec.Reason = policy.ReasonTimeout
		}
	case cw.err != nil:
		// The client did not take the response (stopped reading past
		// timeouts.idle, or went away).
		x.abort = true
		if isTimeout(cw.err) {
			x.rec.Reason = policy.ReasonTimeout
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuseDial is the dialer of goproxy's own Transport, which egressd never
// uses: it refuses.
func refuseDial(context.Context, string, string) (net.Conn, error) { return nil, errNoDecision }
