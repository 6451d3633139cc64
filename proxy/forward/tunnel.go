package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/rawio"
)

const established = "HTTP/1.1 200 Connection established\r\n\r\n"

const dialFailed = "HTTP/1.1 502 Bad Gateway\r\nX-Egress-Error: dial_error\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 36\r\nConnection: close\r\n\r\n" +
	"egressd: upstream error: dial_error\n"

// tunnel runs an allowed CONNECT: dial the pinned address (502 on failure),
// confirm, check the first bytes against the policy for TLS ports, then
// relay with splice. It owns x.rec from here on and finishes it.
func (h *Handler) tunnel(c net.Conn, x *exchange, dec policy.Decision) {
	rec := x.rec
	client, ok := c.(*net.TCPConn)
	if !ok {
		// Our listeners only produce TCP conns; anything else is a wiring bug.
		h.o.Diag.Error("connect: client conn is not TCP", zap.String("type", fmt.Sprintf("%T", c)))
		c.Close()
		rec.Status = http.StatusInternalServerError
		rec.Finish()
		return
	}
	upstream, err := h.dial(context.Background(), x, dec)
	if err != nil {
		rec.Status = http.StatusBadGateway
		rec.Reason = policy.ReasonDialError
		client.SetWriteDeadline(time.Now().Add(h.o.Handshake))
		rawio.Write(client, []byte(dialFailed))
		client.Close()
		rec.Finish()
		return
	}
	rec.Status = http.StatusOK
	client.SetWriteDeadline(time.Now().Add(h.o.Handshake))
	if _, err := rawio.Write(client, []byte(established)); err != nil {
		client.Close()
		upstream.Close()
		rec.Finish()
		return
	}
	client.SetWriteDeadline(time.Time{})

	first, ok := h.o.Runner.Check(client, x.prefix, dec, rec)
	x.prefix = nil
	if !ok {
		client.Close()
		upstream.Close()
		rec.Finish()
		return
	}
	// The relay runs on goroutines of its own, so the HTTP server's
	// connection goroutine (its grown stack and buffers) can exit now.
	h.o.Runner.Start(client, upstream, first, rec)
}

// dial connects to the decision's pinned addresses and records which one answered.
func (h *Handler) dial(ctx context.Context, x *exchange, dec policy.Decision) (*net.TCPConn, error) {
	conn, addr, err := h.o.Dialer.Dial(ctx, dec)
	if err != nil {
		h.o.Diag.Debug("dial failed", zap.String("host", dec.Host), zap.Error(err))
		return nil, err
	}
	x.rec.IP = addr
	return conn, nil
}

// decisionKey carries an allowed decision to the Transport's DialContext.
type decisionKey struct{}

type decided struct {
	dec  policy.Decision
	addr string // the authority the Transport will dial (normalized host, port)
}

func withDecision(ctx context.Context, dec policy.Decision, authority, defPort string) context.Context {
	addr := authority
	if _, _, err := net.SplitHostPort(authority); err != nil {
		addr = net.JoinHostPort(trimBrackets(authority), defPort)
	}
	return context.WithValue(ctx, decisionKey{}, decided{dec: dec, addr: addr})
}

var errNoDecision = errors.New("refusing to dial without a policy decision")

// detach is the context of a request the HTTP cache sends on its own after
// the client's exchange may have ended (httpcache.Detacher): the decision
// made for the client's request, and nothing of the exchange (its record,
// its response writer, its trace), so the request can outlive it.
func detach(ctx context.Context) context.Context {
	d, ok := ctx.Value(decisionKey{}).(decided)
	if !ok {
		return context.Background()
	}
	return context.WithValue(context.Background(), decisionKey{}, d)
}

// dialFromContext is the Transport's only way out: it dials the pinned
// addresses of the decision made for this very authority, and refuses
// anything else, so no code path can reach an undecided destination.
func (h *Handler) dialFromContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d, ok := ctx.Value(decisionKey{}).(decided)
	if !ok || !d.dec.Verdict.Passes() || !sameAuthority(d.addr, addr) {
		return nil, errNoDecision
	}
	// The Transport may hand the conn to another request of the same
	// pool: the record of the request that uses it learns its address
	// (forwarded.gotConn), not this one.
	conn, remote, err := h.o.Dialer.Dial(ctx, d.dec)
	if err != nil {
		h.o.Diag.Debug("dial failed", zap.String("host", d.dec.Host), zap.Error(err))
		return nil, err
	}
	return &upstreamConn{c: conn, remote: remote, idle: h.idle}, nil
}

func sameAuthority(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	return err1 == nil && err2 == nil && ap == bp && equalFoldHost(ah, bh)
}

func equalFoldHost(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
