package forward

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/rawio"
)

// wantsWebSocket reports whether r is a WebSocket opening handshake sent
// as an absolute URI (RFC 6455 section 4.1): a GET asking, hop by hop, to
// upgrade to websocket.
func wantsWebSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Scheme == "http" &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// serveUpgrade forwards a WebSocket handshake itself, not through goproxy,
// whose v1.9.3 websocket.go relays an upgraded connection inside its
// ServeHTTP: no idle timeout, no drain tracking, no byte counts. The
// policy decides as for any forwarded request and the pinned dialer
// connects; if the origin switches protocols, the two connections become
// one of egressd's own tunnels (proxy/tunnel: idle timeout, drain, byte
// counts, one access line). Any other answer is relayed as a response.
func (h *Handler) serveUpgrade(cw *respWriter, r *http.Request, x *exchange) {
	rec := x.rec
	dec, a := h.decide(r.Context(), rec, rec.Listener, r.URL.Host, "80")
	switch {
	case a != nil:
		a.serve(cw)
		return
	case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
		// A handshake has no body; one that has is not a handshake.
		rec.Deny(policy.ReasonBadRequest)
		answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}.serve(cw)
		return
	}
	upgrade := r.Header["Upgrade"] // a DLP replacement drops hop-by-hop headers
	if h.o.DLP != nil && h.o.DLP.Active(dec.DLP) {
		// The handshake's URL and headers are inspected as any request's.
		if resp := h.inspect(r, x, dec); resp != nil {
			writeResponse(cw, resp)
			return
		}
	}
	// With a parent proxy (dec.Via) this is a tunnel through it; the
	// handshake then goes through that tunnel in origin form.
	conn, early, remote, err := h.o.Dialer.Dial(r.Context(), dec)
	if err != nil {
		h.o.Diag.Debug("dial failed", zap.String("host", dec.Host), zap.Error(err))
		rec.DialFailed(err)
		answer{status: http.StatusBadGateway, kind: upstreamError, reason: rec.Reason}.serve(cw)
		return
	}
	local := egress.LocalAddrPort(conn)
	rec.IP, rec.EgressAddr = remote, local
	tunnel := false
	defer func() {
		if !tunnel {
			conn.Close()
		}
	}()
	up := &upstreamConn{c: conn, early: early, remote: remote, local: local, idle: h.idle, via: dec.Via}
	br := bufio.NewReader(up)
	resp, err := h.handshake(up, br, r, dec, upgrade)
	if err != nil {
		h.o.Diag.Debug("upgrade: upstream failed", zap.String("host", dec.Host), zap.Error(err))
		if up.timeout.Load() {
			rec.Reason = policy.ReasonTimeout
			answer{status: http.StatusGatewayTimeout, kind: upstreamError, reason: policy.ReasonTimeout}.serve(cw)
			return
		}
		rec.Reason = policy.ReasonDialError
		answer{status: http.StatusBadGateway, kind: upstreamError, reason: policy.ReasonDialError}.serve(cw)
		return
	}
	defer resp.Body.Close()
	switched := resp.StatusCode == http.StatusSwitchingProtocols
	if switched && !(httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], "websocket") &&
		httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade")) {
		// Switched to something the client did not ask for.
		rec.Reason = policy.ReasonDialError
		answer{status: http.StatusBadGateway, kind: upstreamError, reason: policy.ReasonDialError}.serve(cw)
		return
	}
	removeHopByHop(resp.Header)
	removeEgressHeaders(resp.Header)
	if !switched {
		h.relayResponse(cw, x, up, resp)
		return
	}
	tunnel = h.switchProtocols(cw, x, up, br, resp)
}

// handshake sends r's head to the origin, keeping of the hop-by-hop
// headers only the two the handshake is made of, and reads the answer.
func (h *Handler) handshake(up *upstreamConn, br *bufio.Reader, r *http.Request, dec policy.Decision, upgrade []string) (*http.Response, error) {
	out := r.Header.Clone()
	removeHopByHop(out)
	out.Del("Host")
	out.Set("Connection", "Upgrade")
	out["Upgrade"] = upgrade
	bw := bufio.NewWriter(up)
	fmt.Fprintf(bw, "GET %s HTTP/1.1\r\nHost: %s\r\n", r.URL.RequestURI(), normalizedAuthority(r.URL.Host, dec))
	out.Write(bw)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return http.ReadResponse(br, r)
}

// relayResponse sends an origin's answer that did not switch protocols,
// then the origin connection closes.
func (h *Handler) relayResponse(cw *respWriter, x *exchange, up *upstreamConn, resp *http.Response) {
	for k, vv := range resp.Header {
		cw.Header()[k] = vv
	}
	cw.WriteHeader(resp.StatusCode)
	if _, err := egress.CopyPooled(writeOnly{cw}, resp.Body); err != nil {
		x.abort = true
		if up.timeout.Load() || cw.err != nil && isTimeout(cw.err) {
			x.rec.Reason = policy.ReasonTimeout
		}
	}
}

// switchProtocols answers the client's handshake with the origin's 101 and
// hands both connections to the tunnel runner, which owns the record from
// then on. It reports whether it did; if not, the client connection was
// closed.
func (h *Handler) switchProtocols(cw *respWriter, x *exchange, up *upstreamConn, br *bufio.Reader, resp *http.Response) bool {
	rec, upstream := x.rec, up.c
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
	resp.Header.Write(&head)
	head.WriteString("\r\n")
	// What the origin sent past its 101 (its first frames) goes to the
	// client first: what br holds, then any early bytes from a parent's
	// answer that br has not taken yet.
	var upstreamFirst []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		upstreamFirst = append([]byte(nil), b...)
	}
	upstreamFirst = append(upstreamFirst, up.early...)
	up.early = nil
	c, _, err := cw.Hijack() // keeps what the client sent past its head in x.prefix
	if err != nil {
		h.o.Diag.Error("upgrade: cannot take over the client connection", zap.Error(err))
		rec.Status = http.StatusInternalServerError
		return false
	}
	x.tunnel = true // the record is finished here or by the tunnel
	client, unread := acceptConn(c)
	x.prefix = append(x.prefix, unread...)
	if client == nil {
		h.o.Diag.Error("upgrade: client conn did not come from the accept pipeline", zap.String("type", fmt.Sprintf("%T", c)))
		c.Close()
		rec.Status = http.StatusInternalServerError
		rec.Finish()
		return false
	}
	rec.Status = http.StatusSwitchingProtocols
	client.SetDeadline(time.Time{})
	upstream.SetDeadline(time.Time{})
	client.SetWriteDeadline(time.Now().Add(h.o.Handshake))
	_, err = rawio.Write(client.TCPConn, head.Bytes())
	client.SetWriteDeadline(time.Time{})
	if err != nil {
		rec.Finish()
		client.Close()
		return false
	}
	first := x.prefix
	x.prefix = nil
	h.o.Runner.Start(client, upstream, first, upstreamFirst, rec)
	return true
}

// writeResponse sends one of egressd's own answers (a refusal) made as an
// *http.Response.
func writeResponse(cw *respWriter, resp *http.Response) {
	for k, vv := range resp.Header {
		cw.Header()[k] = vv
	}
	cw.WriteHeader(resp.StatusCode)
	if resp.Body != nil {
		egress.CopyPooled(writeOnly{cw}, resp.Body)
		resp.Body.Close()
	}
}
