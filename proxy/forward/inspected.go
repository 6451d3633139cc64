package forward

import (
	"context"
	"net"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/inspect"
)

// ServeInspected serves one request inside an inspected tunnel (HTTP/1.1,
// or one HTTP/2 stream): it is proxy/inspect's Chain. The request takes the
// very chain of an absolute-URI request (onRequest, goproxy, onResponse):
// it is decided again, for the tunnel's name and port under the tunnel's
// listener (a reload applies to the next request; the addresses dialed are
// that decision's), its Host must name the tunnel's name (host_mismatch),
// its method and path the rule's (not_allowed), then DLP, the HTTP cache,
// the pool of its pinned addresses, and a TLS connection to the origin
// verified for the name (upstream_tls). It gets an access line of its own,
// marked inspected, with its method and path.
//
// WebSocket handshakes are not relayed inside an inspected tunnel: the
// upgrade is dropped as any hop-by-hop header is.
func (h *Handler) ServeInspected(w http.ResponseWriter, r *http.Request) {
	t := inspect.TunnelFrom(r.Context())
	if t == nil {
		// Only inspect.Server calls this, with the tunnel in the context.
		h.o.Diag.Error("inspected request without its tunnel")
		http.Error(w, "egressd: internal error", http.StatusInternalServerError)
		return
	}
	rec := h.o.Log.NewRecord(t.Listener, t.Client.Addr)
	rec.User = t.Client.User
	rec.Method = r.Method
	rec.Inspected = true
	rec.Path, rec.UserAgent = r.URL.EscapedPath(), r.UserAgent()
	rec.ClientPort = t.Record.ClientPort
	rec.SNI = t.Record.SNI
	rec.OrigDst = t.Record.OrigDst // in-line: the address the client dialed
	x := &exchange{rec: rec, inner: t}
	cw := &respWriter{ResponseWriter: w, x: x, idle: h.idle}
	cw.dl, _ = w.(deadliner)
	x.dl = cw.dl
	if r.ProtoAtLeast(1, 1) {
		x.w = cw
	}
	defer h.finishExchange(x, cw)
	if r.Method == http.MethodConnect || r.URL.Path == "" || r.URL.Path[0] != '/' && !r.URL.IsAbs() {
		// A CONNECT (or an OPTIONS *) inside the tunnel: nothing egressd
		// forwards.
		h.o.Diag.Debug("inspected tunnel: request target refused", zap.String("method", r.Method), zap.String("target", r.RequestURI))
		rec.Host, rec.Port = t.Name, t.Port
		rec.Deny(policy.ReasonBadRequest)
		answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}.serve(cw)
		return
	}
	// The request goes on as an absolute URI for the tunnel's own name:
	// what onRequest decides and the Transport dials. The client's Host
	// (and an absolute target's authority, which net/http put in r.Host)
	// is what admit checks against it.
	r.URL.Scheme = "http"
	defPort := uint16(80)
	if t.TLS {
		r.URL.Scheme, defPort = "https", 443
	}
	r.URL.Host = tunnelAuthority(t.Name, t.Port, defPort)
	r.URL.User = nil
	// Connection: close is the client's, hop by hop: net/http's server
	// has read it for the client's connection; the pooled origin
	// connection stays open for the next request.
	r.Close = false
	ctx := context.WithValue(r.Context(), exchangeKey{}, x)
	ctx = accesslog.WithRecord(ctx, rec)
	h.gp.ServeHTTP(cw, r.WithContext(ctx))
}

// tunnelAuthority is the URL authority of a tunnel's name and port, the
// port left out when it is the scheme's default (as clients write it, so
// the HTTP cache keys it as a forwarded request's).
func tunnelAuthority(name string, port, defPort uint16) string {
	if port == defPort {
		if ip := net.ParseIP(name); ip != nil && ip.To4() == nil {
			return "[" + name + "]"
		}
		return name
	}
	return net.JoinHostPort(name, strconv.Itoa(int(port)))
}
