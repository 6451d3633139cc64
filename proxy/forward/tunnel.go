package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/egress"
)

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
// anything else, so no code path can reach an undecided destination. A
// decision with a parent proxy is dialed through it: a tunnel to the
// authority (https URLs), or, when a parent's pool asks for its proxy
// (parentHost, http URLs), a connection to the parent itself. Either is
// marked as that parent's, so only requests decided for it take it.
//
// The Transport may hand the conn to another request of the same pool:
// the record of the request that uses it learns its address
// (forwarded.gotConn), and the request whose dial failed its error.
func (h *Handler) dialFromContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d, ok := ctx.Value(decisionKey{}).(decided)
	if !ok || !d.dec.Verdict.Passes() {
		return nil, errNoDecision
	}
	if addr == parentHost && d.dec.Via != "" {
		conn, remote, err := h.o.Dialer.DialParent(ctx, d.dec)
		if err != nil {
			h.o.Diag.Debug("upstream proxy failed", zap.String("via", d.dec.Via), zap.Error(err))
			return nil, err
		}
		return &upstreamConn{c: conn, remote: remote, idle: h.idle, via: d.dec.Via}, nil
	}
	if !sameAuthority(d.addr, addr) {
		return nil, errNoDecision
	}
	conn, early, remote, err := h.o.Dialer.Dial(ctx, d.dec)
	if err != nil {
		h.o.Diag.Debug("dial failed", zap.String("host", d.dec.Host), zap.String("via", d.dec.Via), zap.Error(err))
		return nil, err
	}
	return &upstreamConn{c: conn, early: early, remote: remote, local: egress.LocalAddrPort(conn), idle: h.idle, via: d.dec.Via}, nil
}

// errUpstreamTLS marks a failed TLS handshake with an origin: a
// certificate not valid for the name, or no TLS at all.
var errUpstreamTLS = errors.New("upstream tls")

// dialTLSFromContext is the Transport's way out to https origins: the
// pinned dial of dialFromContext, then a TLS handshake verified for the
// decided host (Options.UpstreamTLS), bounded by timeouts.idle per read
// and write like every upstream wait.
func (h *Handler) dialTLSFromContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := h.dialFromContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(c, h.upstreamTLS(host))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		h.o.Diag.Debug("upstream tls failed", zap.String("host", host), zap.Error(err))
		return nil, fmt.Errorf("%w: %s: %w", errUpstreamTLS, host, err)
	}
	return tc, nil
}

// upstreamTLS is the client config for an https origin named serverName.
func (h *Handler) upstreamTLS(serverName string) *tls.Config {
	if h.o.UpstreamTLS != nil {
		return h.o.UpstreamTLS(serverName)
	}
	return &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
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
