package forward

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/inspect"
	"github.com/egressd/egressd/proxy/tunnel"
)

// Options configure a Handler. Decider, Dialer and Log are required.
type Options struct {
	Decider policy.Decider
	Dialer  *egress.Dialer
	Log     *accesslog.Logger
	// Diag receives diagnostics (library chatter at Debug). Nil discards them.
	Diag *zap.Logger
	// Runner runs allowed tunnels (guard, relay, drain tracking). Required.
	Runner *tunnel.Runner
	// Handshake (timeouts.handshake) bounds the wait for a request head
	// and the writes of egressd's answer to a CONNECT.
	Handshake time.Duration
	// RefuseTimeout bounds each step of refusing a connection past a
	// limit, and the wait for a client to take a CONNECT refusal. Zero: 2s.
	RefuseTimeout time.Duration
	// MaxHeaderBytes is limits.max_header_bytes: the longest request head
	// net/http reads (431 past it). Zero: net/http's default.
	MaxHeaderBytes int
	// MaxResponseHeaderBytes is limits.max_response_header_bytes: the longest
	// response head read from an origin or a parent (502 past it). Zero:
	// net/http's default (10 MiB).
	MaxResponseHeaderBytes int64
	// Idle (timeouts.idle) bounds every wait without progress of a
	// forwarded request: for the client's body, for the origin's response
	// and body, for a client to take the response; and it closes
	// keep-alive client connections idle this long. Zero: unbounded.
	Idle time.Duration
	// Auth checks a Proxy-Authorization header value and returns the user.
	// Nil: no authentication; every client is anonymous.
	Auth func(header string) (user string, ok bool)
	// AuthRequired refuses anonymous clients with 407 when Auth is set.
	AuthRequired bool
	// DLP inspects absolute-URI requests whose rule (or dlp.default_profile)
	// names a profile, after the policy allowed them and before any byte
	// goes upstream. Nil: no inspection.
	DLP *dlp.Engine
	// Cache answers allowed absolute-URI requests from storage when it
	// may and stores what the origin sends; it sees a request only after
	// the policy allowed it. Nil: no HTTP cache.
	Cache *httpcache.Cache
	// UpstreamTLS is the client TLS config of a connection to an https
	// origin (requests inside inspected tunnels, https absolute URIs),
	// verified for serverName. Nil: the system's roots, TLS 1.2 at least.
	UpstreamTLS func(serverName string) *tls.Config
}

// Handler is the HTTP front end. Serve (serve.go) takes the listener's
// connections from the accept pipeline; CONNECTs go to serveConnect
// (connect.go), absolute-URI requests through its http.Server to
// ServeHTTP and goproxy.
type Handler struct {
	o       Options
	gp      *goproxy.ProxyHttpServer
	ups     *upstreams           // origin connections, pooled by pinned address set
	idle    *atomic.Int64        // Options.Idle, replaced on reload
	rt      goproxy.RoundTripper // the HTTP cache in front of the pools, or the pools
	srv     *http.Server
	maxHead int // the longest CONNECT head the fast path answers

	// The hit path (hit.go): connections waiting for their next request,
	// closing once Shutdown or Close began, and the hits it served.
	hitMu      sync.Mutex
	hitIdle    map[*accept.Conn]struct{}
	hitClosing atomic.Bool
	fastHits   atomic.Int64
	takenBack  atomic.Int64 // connections takeBack gave back to the hit path

	handoff  chan net.Conn // from Serve to the http.Server (httpListener)
	stopped  chan struct{} // closed when the http.Server stops taking connections
	stopOnce sync.Once
}

// New builds a Handler. goproxy's defaults are treated as hostile and
// overridden: it must not follow HTTPS_PROXY from our environment, must not
// accept CONNECT when no handler answers, and must not answer 500 for
// upstream failures.
func New(o Options) *Handler {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	if o.RefuseTimeout <= 0 {
		o.RefuseTimeout = 2 * time.Second
	}
	h := &Handler{o: o, idle: new(atomic.Int64), handoff: make(chan net.Conn), stopped: make(chan struct{}),
		hitIdle: map[*accept.Conn]struct{}{}}
	h.idle.Store(int64(o.Idle))
	h.ups = newUpstreams(h.newTransport)
	h.maxHead = headBufSize
	if o.MaxHeaderBytes > 0 && o.MaxHeaderBytes < headBufSize {
		h.maxHead = o.MaxHeaderBytes
	}
	h.srv = &http.Server{
		Handler:           h,
		ConnContext:       connContext,
		ConnState:         h.connState,
		ReadHeaderTimeout: o.Handshake,
		IdleTimeout:       o.Idle,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(o.Diag.Named("http-server")),
	}
	gp := goproxy.NewProxyHttpServer()
	// goproxy v1.9.3 proxy.go: NewProxyHttpServer sets ConnectDial from
	// HTTPS_PROXY in the environment and Tr.Proxy to ProxyFromEnvironment.
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = nil
	// Every forwarded request goes out through its pool's Transport
	// (onRequest sets ProxyCtx.RoundTripper: the cache, or the pools).
	// goproxy's own Transport is a dead end, should any library path ever
	// reach for it.
	gp.Tr = &http.Transport{Proxy: nil, DialContext: refuseDial}
	gp.Verbose = false
	gp.Logger = zapPrintf{o.Diag.Named("goproxy")}
	gp.KeepAcceptEncoding = true
	gp.AllowHTTP2 = false
	gp.NonproxyHandler = http.HandlerFunc(h.serveNonProxy)
	// ServeHTTP hands goproxy no CONNECT (serveConnect answers them all).
	// Should one ever reach it, it is refused: goproxy's default with no
	// CONNECT handler is OkConnect, a tunnel nobody decided.
	gp.OnRequest().HandleConnectFunc(func(host string, _ *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		return goproxy.RejectConnect, host
	})
	gp.OnRequest().DoFunc(h.onRequest)
	gp.OnResponse().DoFunc(h.onResponse)
	h.gp = gp
	h.rt = (*poolRoundTripper)(h)
	if o.Cache != nil {
		next := originTransport{h}
		h.rt = goproxy.RoundTripperFunc(func(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
			return o.Cache.RoundTrip(req, next)
		})
	}
	return h
}

// idleConnTimeout closes origin connections unused this long.
const idleConnTimeout = 90 * time.Second

// newTransport builds a pool's Transport: of an address set, or of parent
// proxy via.
func (h *Handler) newTransport(via string) *http.Transport {
	tr := &http.Transport{
		Proxy:                  nil, // never chain to a proxy from our own environment
		DialContext:            h.dialFromContext,
		DialTLSContext:         h.dialTLSFromContext,
		MaxIdleConns:           4096,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        idleConnTimeout,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // stay transparent: never add Accept-Encoding
		ForceAttemptHTTP2:      false,
		MaxResponseHeaderBytes: h.o.MaxResponseHeaderBytes,
	}
	if via != "" {
		// A parent's pool: http URLs go to the parent in absolute form
		// (the Transport's proxy mode; dialFromContext connects to the
		// parent for parentHost), https URLs through its tunnel.
		tr.Proxy = parentProxy
	}
	return tr
}

// Reload applies a new config: no pooled origin connection approved under
// the old policy serves another request (idle ones close now, busy ones
// after their request), and idle is the new timeouts.idle.
func (h *Handler) Reload(idle time.Duration) {
	h.idle.Store(int64(idle))
	h.ups.retireAll()
}

// connState is the http.Server's ConnState hook: between requests a client
// connection keeps no write deadline of a response that is over.
func (h *Handler) connState(c net.Conn, s http.ConnState) {
	if s == http.StateIdle {
		c.SetWriteDeadline(time.Time{})
	}
}

// exchange is the per-request state shared between our wrapper and the
// goproxy callbacks, carried in the request context.
type exchange struct {
	rec *accesslog.Record
	// synthesized: the response is egressd's own (a refusal or an error
	// from onRequest), not an origin's.
	synthesized bool
	prefix      []byte       // bytes the HTTP server had buffered past the request (Hijack)
	tunnel      bool         // the tunnel owns the record from now on
	dlp         *dlp.Outcome // the DLP chain's answer for a forwarded request
	w           *respWriter  // the client's response writer (absolute-URI requests)
	trace       httptrace.ClientTrace
	// forwarding: an absolute-URI request on its way to the origin, with
	// fwd its state.
	forwarding bool
	fwd        forwarded
	dl         deadliner // the client connection's deadlines; nil in tests
	// abort: the client connection must be cut, not finished (a response
	// relayed in part); aborting: the panic that cuts it is under way.
	abort, aborting bool
	// pre is the decision serveStored made, which onRequest takes
	// instead of asking the policy again (when hasPre).
	pre    preDecision
	hasPre bool
	// inner: a request inside an inspected tunnel (ServeInspected); nil
	// for one the client sent to the proxy.
	inner *inspect.Tunnel
}

// preDecision is an answer of decide, kept for onRequest.
type preDecision struct {
	dec policy.Decision
	a   *answer // nil: the request goes on
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		return x
	}
	return &exchange{rec: accesslog.FromContext(ctx)}
}

// ServeHTTP implements http.Handler for the requests net/http reads:
// absolute-URI requests go to goproxy; a CONNECT whose head the fast path
// declined is taken off net/http and answered by serveConnect, as every
// CONNECT is.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inline := inlineConn(r)
	if r.Method == http.MethodConnect && inline == nil {
		h.hijackConnect(w, r)
		return
	}
	x, cw := h.serveRequest(w, r, inline)
	if inline == nil && h.o.Cache != nil {
		h.takeBack(w, r, x, cw)
	}
}

// serveRequest serves an absolute-URI request (or an in-line one) and
// finishes its exchange (the access line); it returns them for takeBack.
func (h *Handler) serveRequest(w http.ResponseWriter, r *http.Request, inline *accept.Conn) (*exchange, *respWriter) {
	listener := policy.ListenerHTTP
	if inline != nil {
		listener = policy.ListenerTransparent
	}
	client := clientAddr(r)
	rec := h.o.Log.NewRecord(listener, client.Addr())
	rec.ClientPort = client.Port()
	rec.Method, rec.Path, rec.UserAgent = r.Method, r.URL.EscapedPath(), r.UserAgent()
	x := &exchange{rec: rec}
	cw := &respWriter{ResponseWriter: w, x: x, idle: h.idle}
	cw.dl, _ = w.(deadliner)
	x.dl = cw.dl
	if r.ProtoAtLeast(1, 1) {
		x.w = cw
	}
	defer h.finishExchange(x, cw)
	if inline != nil {
		rec.OrigDst = inline.OrigDst
		if r.Method == http.MethodConnect || !inlineTarget(r, inline.OrigDst) {
			rec.Host, rec.Port = r.Host, inline.OrigDst.Port()
			rec.Deny(policy.ReasonBadRequest)
			answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}.serve(cw)
			return x, cw
		}
	} else if h.o.Auth != nil {
		user, ok := h.checkAuth(r, r.Header.Get("Proxy-Authorization"))
		if ok {
			rec.User = user
		} else if h.o.AuthRequired || r.Header.Get("Proxy-Authorization") != "" {
			rec.Host = r.URL.Hostname()
			rec.Deny(policy.ReasonAuthRequired)
			answer{status: http.StatusProxyAuthRequired, kind: denied, reason: policy.ReasonAuthRequired, authenticate: true}.serve(cw)
			return x, cw
		}
	}
	ctx := context.WithValue(r.Context(), exchangeKey{}, x)
	ctx = accesslog.WithRecord(ctx, rec)
	if wantsWebSocket(r) {
		h.serveUpgrade(cw, r.WithContext(ctx), x)
		return x, cw
	}
	if h.o.Cache != nil && h.serveStored(cw, r, x) {
		return x, cw
	}
	h.gp.ServeHTTP(cw, r.WithContext(ctx))
	return x, cw
}

// serveStored answers an absolute-URI GET or HEAD that the policy allows
// and the HTTP cache holds fresh straight from storage, without goproxy
// and the cache's response building: the same decision, the same stored
// fields and body, written the same way (goproxy's copy of a hit adds
// nothing). It returns false, having written nothing, for any other
// request, which then goes the general way with the decision made here
// (x.pre). Requests a DLP profile inspects always go the general way.
func (h *Handler) serveStored(w *respWriter, r *http.Request, x *exchange) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead || !r.URL.IsAbs() {
		return false
	}
	defPort := "80"
	switch r.URL.Scheme {
	case "http":
	case "https":
		defPort = "443"
	default:
		return false
	}
	dec, a := h.decide(r.Context(), x.rec, x.rec.Listener, r.URL.Host, defPort)
	x.pre, x.hasPre = preDecision{dec: dec, a: a}, true
	// A rule with methods, paths or headers to set (admit), or a DLP
	// profile, goes the general way.
	if a != nil || dec.HTTP != nil || h.o.DLP != nil && h.o.DLP.Active(dec.DLP) {
		return false
	}
	u := r.URL
	if host := normalizedAuthority(u.Host, dec); host != u.Host {
		nu := *u
		nu.Host = host
		u = &nu
	}
	st, ok := h.o.Cache.Fresh(r.Method, u, r.Header)
	if !ok {
		return false
	}
	stored := st.Header()
	for k := range stored {
		if isEgressHeader(k) {
			return false // the general way strips them
		}
	}
	wh := w.Header()
	for k, v := range stored {
		wh[k] = v // shared, read only: net/http only reads it
	}
	wh["Age"] = []string{strconv.FormatInt(st.Age(), 10)}
	wh["Content-Length"] = st.ContentLength()       // shared, read only
	wh[httpcache.HeaderXCache] = httpcache.HitValue // shared, read only
	x.rec.Cache = accesslog.CacheHit
	w.WriteHeader(st.Status())
	if r.Method == http.MethodGet {
		w.Write(st.Body())
	}
	return true
}

// finishExchange ends an exchange that the tunnel did not take over:
// findings of a streamed body's tail, the status and bytes, the access
// line; and a response relayed only in part is cut (deferred by the
// request's handler, whose panic net/http turns into a cut connection).
func (h *Handler) finishExchange(x *exchange, cw *respWriter) {
	rec := x.rec
	if x.forwarding {
		h.finishForwarded(x, cw)
	}
	if !x.tunnel {
		if x.dlp != nil {
			// Findings in a streamed body's tail arrive while the
			// request is sent.
			rec.Findings = append(rec.Findings, x.dlp.TailFindings()...)
			if len(rec.Findings) > 0 && rec.Decision.Verdict == policy.Allow {
				rec.Decision.Verdict = policy.Report // report mode: logged, forwarded
				rec.Reason = policy.ReasonDLP
			}
		}
		rec.Status = cw.status
		rec.Down.Store(cw.written)
		rec.Finish()
	}
	if x.abort && !x.aborting {
		// net/http cuts the connection without finishing the
		// response: the client cannot take a part for the whole.
		x.aborting = true
		panic(http.ErrAbortHandler)
	}
}

// serveNonProxy answers origin-form requests: a client that forgot it talks
// to a proxy. It is a 400, never a policy decision.
func (h *Handler) serveNonProxy(w http.ResponseWriter, r *http.Request) {
	x := exchangeFrom(r.Context())
	x.rec.Host = r.Host
	x.rec.Deny(policy.ReasonBadRequest)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusBadRequest)
	io.WriteString(w, "egressd: this is a forward proxy; send absolute-URI requests or CONNECT\n")
}

// decide asks the policy about hostport (defPort when it has none) and
// records the outcome in rec. It returns the answer to send instead when
// the request must not go on: 400 for a malformed target, 403 for a
// denial, 502 when the name did not resolve. Every forwarded request and
// every CONNECT is decided here, once.
func (h *Handler) decide(ctx context.Context, rec *accesslog.Record, listener policy.Listener, hostport, defPort string) (policy.Decision, *answer) {
	host, port, ok := splitHostPort(hostport, defPort)
	rec.Host, rec.Port = host, port
	if !ok {
		rec.Deny(policy.ReasonBadRequest)
		return policy.Decision{}, &answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}
	}
	dec, err := h.o.Decider.Decide(ctx, policy.Request{
		Listener: listener,
		Client:   policy.Client{Addr: rec.Client, User: rec.User},
		Host:     host,
		Port:     port,
	})
	rec.Decision = dec
	if dec.Host != "" {
		rec.Host = dec.Host
	} else if err == nil {
		// The policy could not read the host as a name or an IP (bad
		// IDNA, an empty label): the request is malformed, not denied.
		rec.Deny(policy.ReasonBadRequest)
		return dec, &answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}
	}
	if err != nil {
		reason := dec.Reason
		if reason == "" {
			reason = policy.ReasonDNSError
		}
		rec.Reason = reason
		h.o.Diag.Debug("decision failed", zap.String("host", host), zap.Error(err))
		return dec, &answer{status: http.StatusBadGateway, kind: upstreamError, reason: reason}
	}
	if !dec.Verdict.Passes() {
		return dec, &answer{status: http.StatusForbidden, kind: denied, reason: dec.Reason, close: true}
	}
	return dec, nil
}

// onRequest handles absolute-URI requests.
func (h *Handler) onRequest(r *http.Request, pctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	x := exchangeFrom(r.Context())
	defPort := "80"
	if r.URL.Scheme == "https" {
		defPort = "443"
	} else if r.URL.Scheme != "http" {
		x.rec.Host = r.URL.Host
		x.rec.Deny(policy.ReasonBadRequest)
		x.synthesized = true
		return r, answer{status: http.StatusBadRequest, kind: denied, reason: policy.ReasonBadRequest, close: true}.response(r)
	}
	var dec policy.Decision
	var a *answer
	if x.hasPre {
		dec, a = x.pre.dec, x.pre.a // serveStored asked already
	} else {
		dec, a = h.decide(r.Context(), x.rec, x.rec.Listener, r.URL.Host, defPort)
	}
	if a != nil {
		x.synthesized = true
		return r, a.response(r)
	}
	if resp := h.admit(r, x, dec); resp != nil {
		x.synthesized = true
		return r, resp
	}
	// The request goes on under the host's one normalized spelling (IDNA
	// to punycode, an IP literal in canonical form): what the Transport
	// dials and pools by, and what the origin sees, is what was decided.
	r.URL.Host = normalizedAuthority(r.URL.Host, dec)
	// RFC 9112 section 3.2.2: with an absolute target the received Host is
	// ignored; the origin gets the URI's authority. net/http already set
	// r.Host from the URI; make sure no Host header survives.
	r.Host = r.URL.Host
	r.Header.Del("Host")
	removeHopByHop(r.Header)
	f := &x.fwd
	f.x, f.addrs, f.via = x, dec.Addrs, dec.Via
	if r.Body != nil && r.Body != http.NoBody {
		// Every read of the client's body, DLP's included, is counted and
		// bounded by timeouts.idle.
		b := &countingBody{ReadCloser: r.Body, rec: x.rec, f: f, dl: x.dl, idle: h.idle}
		r.Body = b
		// Nothing is dialed or sent for a body that never starts: wait
		// (up to timeouts.idle) for its first byte. Not for a client
		// that waits for 100 Continue: the origin says whether it wants
		// the body.
		if !strings.EqualFold(r.Header.Get("Expect"), "100-continue") && b.prefetch() {
			x.rec.Reason = policy.ReasonTimeout
			x.synthesized = true
			return r, answer{status: http.StatusRequestTimeout, kind: upstreamError, reason: policy.ReasonTimeout, close: true}.response(r)
		}
	}
	if h.o.DLP != nil && h.o.DLP.Active(dec.DLP) {
		if resp := h.inspect(r, x, dec); resp != nil {
			x.synthesized = true
			return r, resp
		}
	}
	// request_headers_add: set after DLP, so an inspector's replacement
	// of the headers cannot drop them, and over any value the client sent.
	dec.HTTP.SetHeaders(dec, policy.Client{Addr: x.rec.Client, User: x.rec.User}, r.Header.Set)
	x.forwarding = true
	ctx := withDecision(r.Context(), dec, r.URL.Host, defPort)
	// The trace checks the connection the Transport picks before the
	// request goes out on it (forwarded.gotConn), and forwards 1xx
	// responses (103 Early Hints, 102 Processing; RFC 9110 section 15.2),
	// which Go's Transport drops unless a trace asks for them.
	x.trace.GotConn = f.gotConn
	if x.w != nil {
		x.trace.Got1xxResponse = x.forward1xx
	}
	ctx = httptrace.WithClientTrace(ctx, &x.trace)
	pctx.RoundTripper = h.rt
	return r.WithContext(ctx), nil
}

// admit applies what the decision's rule says of the HTTP request itself,
// before anything of it goes upstream: inside an inspected tunnel its Host
// must name the tunnel's host (host_mismatch), and its method and path
// must be among the rule's methods and paths (not_allowed). It returns
// the answer to send instead (403), or nil; in report mode a failed check
// is logged and the request goes on.
func (h *Handler) admit(r *http.Request, x *exchange, dec policy.Decision) *http.Response {
	if dec.Policy == nil {
		return nil
	}
	v, reason := policy.Allow, policy.ReasonNone
	if x.inner != nil {
		v, reason = dec.Policy.CheckHost(dec, r.Host)
	}
	if v == policy.Allow {
		v, reason = dec.Policy.CheckRequest(dec, r.Method, r.URL.EscapedPath())
	}
	switch v {
	case policy.Deny:
		x.rec.Deny(reason)
		return answer{status: http.StatusForbidden, kind: denied, reason: reason, close: true}.response(r)
	case policy.Report:
		x.rec.Decision.Verdict = policy.Report
		x.rec.Reason = reason
	}
	return nil
}

// inspect runs the DLP chain of the request's profile. It returns the
// answer to send instead of forwarding, or nil after it has put the body
// (held, or streamed and scanned) back on r.
func (h *Handler) inspect(r *http.Request, x *exchange, dec policy.Decision) *http.Response {
	rec := x.rec
	out := h.o.DLP.Inspect(r.Context(), dec.DLP, &dlp.Request{
		Client:        policy.Client{Addr: rec.Client, User: rec.User},
		Host:          dec.Host,
		Port:          dec.Port,
		Method:        r.Method,
		URL:           r.URL,
		Header:        r.Header,
		ContentLength: r.ContentLength,
	}, r.Body)
	if out == nil {
		return nil
	}
	x.dlp = out
	rec.DLPProfile, rec.DLPReport, rec.DLPICAP = out.Profile, out.Report, out.ICAP
	rec.Findings = out.Findings
	switch out.Action {
	case dlp.Block:
		rec.Deny(policy.ReasonDLP)
		if resp := out.Response; resp != nil {
			// The ICAP service's own answer, marked as egressd's denial.
			resp.Request = r
			resp.Header.Set("X-Egress-Denied", string(policy.ReasonDLP))
			resp.Header.Set("Connection", "close")
			resp.Close = true
			return resp
		}
		return answer{status: http.StatusForbidden, kind: denied, reason: policy.ReasonDLP, close: true}.response(r)
	case dlp.Unavailable:
		rec.Deny(policy.ReasonDLPUnavailable)
		return answer{status: http.StatusServiceUnavailable, kind: denied, reason: policy.ReasonDLPUnavailable, close: true}.response(r)
	}
	if len(out.Findings) > 0 && rec.Decision.Verdict == policy.Allow {
		rec.Decision.Verdict = policy.Report // report mode: logged, forwarded
		rec.Reason = policy.ReasonDLP
	}
	if rp := out.Replace; rp != nil {
		r.Method = rp.Method
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = rp.URL.Path, rp.URL.RawPath, rp.URL.RawQuery
		r.Header = rp.Header
		removeHopByHop(r.Header)
		r.Header.Del("Content-Length")
		r.ContentLength = int64(len(rp.Body))
	}
	r.Body = out.Body
	if r.Body == nil {
		r.Body = http.NoBody
	}
	return nil
}

// onResponse maps transport failures to 502 and strips hop-by-hop headers.
func (h *Handler) onResponse(resp *http.Response, pctx *goproxy.ProxyCtx) *http.Response {
	x := exchangeFrom(pctx.Req.Context())
	if resp == nil {
		if x.dlp.Cut() {
			// The streamed body had a finding past dlp.max_scan_bytes:
			// the upload was cut, the origin saw it abort.
			x.rec.Deny(policy.ReasonDLP)
			return answer{status: http.StatusForbidden, kind: denied, reason: policy.ReasonDLP, close: true}.response(pctx.Req)
		}
		if pctx.Error != nil {
			h.o.Diag.Debug("upstream failed", zap.String("host", x.rec.Host), zap.Error(pctx.Error))
		}
		return h.failed(pctx.Req, x, pctx.Error)
	}
	if x.synthesized {
		return resp // our own answer from onRequest
	}
	if via := x.rec.Decision.Via; via != "" && resp.StatusCode == http.StatusProxyAuthRequired && pctx.Req.URL.Scheme == "http" {
		// The parent refused egressd's credentials. Its 407 must not
		// reach the client, which would take it for egressd's own.
		// goproxy closes the body.
		x.rec.DialFailed(h.o.Dialer.Upstream.Refused(via, x.rec.IP, resp.StatusCode))
		return answer{status: http.StatusBadGateway, kind: upstreamError, reason: x.rec.Reason}.response(pctx.Req)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// No upgrade was asked for on this path (handshakes go through
		// serveUpgrade): an origin that switches anyway gets nothing
		// relayed. goproxy closes the body, the origin connection.
		x.rec.Reason = policy.ReasonDialError
		h.o.Diag.Debug("origin switched protocols unasked", zap.String("host", x.rec.Host))
		return answer{status: http.StatusBadGateway, kind: upstreamError, reason: policy.ReasonDialError}.response(pctx.Req)
	}
	// An origin's headers never steer egressd or pass as its own: hop-by-hop
	// headers stop here (RFC 9110 section 7.6.1), and so does any
	// X-Egress-* header, which clients read as egressd's verdict.
	if resp.Header != nil {
		removeHopByHop(resp.Header)
		removeEgressHeaders(resp.Header)
	}
	if h.o.Cache != nil {
		x.rec.Cache = cacheResult(resp.Header.Get(httpcache.HeaderXCache))
	}
	return resp
}

// originTransport is what the HTTP cache sends its misses through: the
// pinned Transport, plus how to detach a request of the cache's own from
// the client's exchange.
type originTransport struct{ h *Handler }

func (t originTransport) RoundTrip(r *http.Request) (*http.Response, error) { return t.h.roundTrip(r) }

func (originTransport) Detach(ctx context.Context) context.Context { return detach(ctx) }

// cacheResult is the access line's cache value for an X-Cache value.
func cacheResult(v string) string {
	switch httpcache.Status(v) {
	case httpcache.Hit:
		return accesslog.CacheHit
	case httpcache.Miss:
		return accesslog.CacheMiss
	case httpcache.Revalidated:
		return accesslog.CacheRevalidated
	}
	return ""
}

// hijackConnect takes a CONNECT whose head net/http read (the fast path
// declined it) away from net/http before any answer, and hands it to
// serveConnect with the bytes net/http had buffered past the head.
func (h *Handler) hijackConnect(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		h.o.Diag.Error("connect: response writer cannot hijack")
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		h.o.Diag.Debug("connect: hijack failed", zap.Error(err))
		return
	}
	c, unread := acceptConn(conn)
	if c == nil {
		// Every connection comes through the accept pipeline; anything
		// else is a wiring bug.
		h.o.Diag.Error("connect: client conn did not come from the accept pipeline", zap.String("type", fmt.Sprintf("%T", conn)))
		conn.Close()
		return
	}
	var prefix []byte
	if n := rw.Reader.Buffered(); n > 0 {
		buf, _ := rw.Reader.Peek(n)
		prefix = bytes.Clone(buf)
	}
	prefix = append(prefix, unread...)
	h.serveConnect(c, connectRequest{authority: r.URL.Host, proxyAuth: r.Header.Get("Proxy-Authorization")}, prefix)
}

// forward1xx writes an interim response from the origin to the client. The
// Transport calls it while the handler waits in RoundTrip for the final
// response, so nothing else writes to the client meanwhile.
func (x *exchange) forward1xx(code int, header textproto.MIMEHeader) error {
	if code == http.StatusContinue || code == http.StatusSwitchingProtocols {
		// 100: net/http's server answers the client's Expect itself;
		// 101 is final for the Transport.
		return nil
	}
	h := x.w.Header()
	for k, v := range header {
		h[k] = v
	}
	removeHopByHop(h)
	removeEgressHeaders(h)
	x.w.WriteHeader(code)
	for k := range h {
		delete(h, k)
	}
	return nil
}

// respWriter records status and size, and captures the bytes the HTTP server
// buffered past a CONNECT request when goproxy hijacks: goproxy v1.9.3
// https.go drops them on the ConnectHijack path, and they are usually the
// start of the client's TLS ClientHello.
type respWriter struct {
	http.ResponseWriter
	x       *exchange
	status  int
	written int64
	err     error         // the first write error
	dl      deadliner     // the server's own response writer; nil in tests
	idle    *atomic.Int64 // timeouts.idle
	wd      idleDeadline  // the client connection's write deadline armed
	// head is what takeBack needs of the final response's fields, noted
	// as they are sent (reading them after, through net/http's Header,
	// would copy them).
	head respHead
}

// respHead is what a final response's fields say of its framing.
type respHead struct {
	length int64 // Content-Length; -1: none or not one valid value
	keep   bool  // no Connection: close, Transfer-Encoding, Trailer or trailer fields
}

// noteHead notes the fields of the final response about to be sent.
func (w *respWriter) noteHead() {
	h := w.ResponseWriter.Header()
	w.head = respHead{length: -1, keep: !httpguts.HeaderValuesContainsToken(h["Connection"], "close") &&
		len(h["Transfer-Encoding"]) == 0 && len(h["Trailer"]) == 0}
	if cl := h["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.head.length = n
		}
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			w.head.keep = false
		}
	}
}

// deadliner is what net/http's response writer offers (as
// http.ResponseController uses it): deadlines on the client connection.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.noteHead()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.noteHead()
	}
	if w.dl != nil {
		// A client that stopped reading holds the response for at most
		// timeouts.idle without progress.
		if d := time.Duration(w.idle.Load()); d > 0 {
			if t, ok := w.wd.next(d); ok {
				w.dl.SetWriteDeadline(t)
			}
		}
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// ReadFrom copies a response body through a pooled buffer. goproxy copies
// every forwarded body with io.Copy, which allocates a fresh 32 KiB buffer
// per call unless the writer is an io.ReaderFrom, most of what a forwarded
// request would allocate (docs/benchmarks-notes.md).
func (w *respWriter) ReadFrom(r io.Reader) (int64, error) {
	return egress.CopyPooled(writeOnly{w}, r)
}

// writeOnly hides a writer's ReadFrom, so that io.CopyBuffer uses the buffer
// it is given instead of calling back into ReadFrom.
type writeOnly struct{ io.Writer }

func (w *respWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if n := rw.Reader.Buffered(); n > 0 {
		buf, _ := rw.Reader.Peek(n)
		w.x.prefix = append([]byte(nil), buf...)
		rw.Reader.Discard(n)
	}
	return c, rw, nil
}

// countingBody is a forwarded request's body from the client: it counts
// the bytes and bounds each wait for more by timeouts.idle. It is read on
// the Transport's write goroutine.
type countingBody struct {
	io.ReadCloser
	rec  *accesslog.Record
	f    *forwarded
	dl   deadliner // the client connection's; nil: no deadlines
	idle *atomic.Int64

	first    [1]byte // read by prefetch, not yet returned by Read
	hasFirst bool
	firstErr error
	rd       idleDeadline // the client connection's read deadline armed
}

// prefetch waits for the body's first byte, and reports whether it timed
// out. What it read (or the error) is what Read returns first.
func (b *countingBody) prefetch() (timedOut bool) {
	var n int
	n, b.firstErr = b.read(b.first[:])
	b.hasFirst = n > 0
	return n == 0 && b.f.clientTimeout.Load()
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.hasFirst && len(p) > 0 {
		b.hasFirst = false
		p[0] = b.first[0]
		return 1, b.firstErr
	}
	if b.firstErr != nil {
		return 0, b.firstErr
	}
	return b.read(p)
}

func (b *countingBody) read(p []byte) (int, error) {
	b.setDeadline()
	n, err := b.ReadCloser.Read(p)
	b.rec.Up.Add(int64(n))
	switch {
	case err == io.EOF && b.dl != nil:
		// The body is over: net/http's own reads (its check for a client
		// that went away, the next request) set theirs.
		b.dl.SetReadDeadline(time.Time{})
		b.rd.forget()
	case err != nil && isTimeout(err):
		b.f.clientTimeout.Store(true)
	}
	return n, err
}

// Close is net/http's, which may read what is left of the body (to keep
// the connection): bounded like any other read.
func (b *countingBody) Close() error {
	b.setDeadline()
	return b.ReadCloser.Close()
}

func (b *countingBody) setDeadline() {
	if b.dl != nil {
		if d := time.Duration(b.idle.Load()); d > 0 {
			if t, ok := b.rd.next(d); ok {
				b.dl.SetReadDeadline(t)
			}
		}
	}
}

// hopByHop are the headers RFC 9110 section 7.6.1 says a proxy must not forward.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// egressHeaderPrefix starts the headers egressd answers with
// (X-Egress-Denied, X-Egress-Error), canonical form.
const egressHeaderPrefix = "X-Egress-"

// removeEgressHeaders drops every X-Egress-* header, in any case.
func removeEgressHeaders(h http.Header) {
	for k := range h {
		if isEgressHeader(k) {
			delete(h, k)
		}
	}
}

// isEgressHeader reports a field name egressd's own answers use (X-Egress-*).
func isEgressHeader(k string) bool {
	return len(k) >= len(egressHeaderPrefix) && strings.EqualFold(k[:len(egressHeaderPrefix)], egressHeaderPrefix)
}

// normalizedAuthority is authority (host, or host:port, as the URI spelled
// it) with the host the decision normalized, bracketed if it is IPv6. It
// returns authority itself when that is already the spelling (the common
// case).
func normalizedAuthority(authority string, dec policy.Decision) string {
	host, port, err := net.SplitHostPort(authority)
	hasPort := err == nil
	if !hasPort {
		host = trimBrackets(authority)
	}
	v6 := strings.IndexByte(dec.Host, ':') >= 0
	if host == dec.Host && authority != "" && (authority[0] == '[') == v6 {
		return authority
	}
	if hasPort {
		return net.JoinHostPort(dec.Host, port)
	}
	if v6 {
		return "[" + dec.Host + "]"
	}
	return dec.Host
}

// splitHostPort splits a request authority. Hosts are returned raw: the
// policy normalizes them.
func splitHostPort(hostport, defPort string) (string, uint16, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if defPort == "" {
			return hostport, 0, false
		}
		host, port = hostport, defPort
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return host, 0, false
	}
	return host, uint16(p), true
}

// zapPrintf adapts goproxy's Printf logger to zap at Debug.
type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, v ...any) { z.l.Sugar().Debugf(format, v...) }
