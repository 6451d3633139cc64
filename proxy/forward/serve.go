package forward

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
)

// Serve runs one connection of the HTTP listener; it is the Handler's
// accept.FrontEnd. It peeks (MSG_PEEK: nothing is consumed) at what the
// client sends first: a plain CONNECT head (parseConnectHead) is served
// here, by serveConnect, without net/http; with the HTTP cache on, a plain
// absolute-form GET or HEAD (parseHitHead) goes to the hit path
// (serveHits), which answers fresh hits itself and hands the connection on
// at its first other request (net/http may give it back after answering
// it: takeBack); every other connection goes,
// untouched, to the Handler's http.Server (Run), which serves
// absolute-URI requests through goproxy, and CONNECTs whose
// head is unusual through the same serveConnect. A connection past a limit
// is refused (refuseLimit).
//
// Why the fast path: through net/http a tunnel costs the server's
// per-connection state and buffers and the request's contexts, for a
// request that is answered once and then relayed (docs/benchmarks-notes.md
// has the figures).
func (h *Handler) Serve(c *accept.Conn) {
	if c.Limit != "" {
		h.refuseLimit(c)
		return
	}
	bp := headBufs.Get().(*[headBufSize]byte)
	p := headParse{hits: h.o.Cache != nil}
	verdict, gone := h.peek(c.TCPConn, bp[:], &p, false)
	switch {
	case gone:
		// Closed, reset or silent past the handshake timeout before a
		// whole head arrived: net/http would close it without an answer.
		headBufs.Put(bp)
		c.Close()
		return
	case verdict == headAccepted && p.kind == kindConnect && p.connect.size <= h.maxHead:
		// Take the head off the socket. Whatever the client sent after
		// it (often its TLS ClientHello) stays there for the guard.
		_, err := io.ReadFull(c.TCPConn, bp[:p.connect.size])
		headBufs.Put(bp)
		if err != nil {
			c.Close()
			return
		}
		h.serveConnect(c, connectRequest{authority: p.connect.authority, proxyAuth: p.connect.proxyAuth}, nil)
		return
	case verdict == headAccepted && p.kind == kindHit && p.hit.size <= h.maxHead:
		handoff, replay, checked := h.serveHits(c, bp, p.hit)
		headBufs.Put(bp)
		if handoff {
			h.handOffDeclined(c, replay, checked, 0)
		}
		return
	}
	headBufs.Put(bp)
	h.handOff(c)
}

// handOff gives c to the http.Server (Run).
func (h *Handler) handOff(c net.Conn) {
	select {
	case h.handoff <- c:
	case <-h.stopped:
		c.Close()
	}
}

// replayConn is a connection the hit path hands to net/http after reading
// bytes of it that it did not answer (Read returns them first), or after
// checking the credentials of the request it leaves to net/http (auth,
// which ServeHTTP takes for that request: checkAuth).
type replayConn struct {
	*accept.Conn
	replay []byte
	auth   *authOutcome // nil once taken
	// wait: the requests net/http answers on it before takeBack gives it
	// back to the hit path; backoff: the wait it was handed over with.
	wait, backoff int
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo hides the TCPConn's, which would skip the replayed bytes.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// acceptConn returns the accept.Conn under a connection net/http serves,
// and the bytes the hit path read off it that net/http has not read yet
// (net/http reads them first, so there are none once it has a request).
func acceptConn(c net.Conn) (*accept.Conn, []byte) {
	switch c := c.(type) {
	case *accept.Conn:
		return c, nil
	case *replayConn:
		return c.Conn, c.replay
	}
	return nil, nil
}

// headBufSize is the most the fast path peeks at; a longer head goes to
// net/http.
const headBufSize = 4096

var headBufs = sync.Pool{New: func() any { return new([headBufSize]byte) }}

// headKind is which fast path a peeked head is for.
type headKind int

const (
	kindNone    headKind = iota
	kindConnect          // parseConnectHead: serveConnect
	kindHit              // parseHitHead: serveHits
)

// headParse is what peek made of a connection's first bytes.
type headParse struct {
	hits    bool // GET and HEAD heads are read too (the HTTP cache is on)
	kind    headKind
	connect connectHead
	hit     hitHead
}

// parse reads b with the parser its first byte calls for.
func (p *headParse) parse(b []byte) headVerdict {
	if len(b) > 0 && b[0] == 'C' {
		var v headVerdict
		p.kind = kindConnect
		p.connect, v = parseConnectHead(b)
		return v
	}
	if p.hits {
		return p.parseHit(b)
	}
	return headDeclined
}

func (p *headParse) parseHit(b []byte) headVerdict {
	var v headVerdict
	p.kind = kindHit
	p.hit, v = parseHitHead(b)
	return v
}

// peek waits, up to the handshake timeout, until what c has sent is a
// complete head or cannot become one a fast path takes (hitsOnly: the
// hit path). gone reports a connection that closed, failed or timed out
// first.
func (h *Handler) peek(c *net.TCPConn, buf []byte, p *headParse, hitsOnly bool) (verdict headVerdict, gone bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return headDeclined, false
	}
	if h.o.Handshake > 0 {
		c.SetReadDeadline(time.Now().Add(h.o.Handshake))
		defer c.SetReadDeadline(time.Time{})
	}
	seen := -1
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil || n == 0:
				gone = true
				return true
			}
			if hitsOnly {
				verdict = p.parseHit(buf[:n])
			} else {
				verdict = p.parse(buf[:n])
			}
			if verdict != headIncomplete {
				return true
			}
			if n == len(buf) || n == seen {
				// Too long for the fast path, or woken by something
				// other than new bytes (a FIN after a partial head):
				// net/http reads it and answers as it always has.
				verdict = headDeclined
				return true
			}
			seen = n
			return false
		}
	})
	if err != nil {
		return headDeclined, true
	}
	return verdict, gone
}

// httpListener is the net.Listener the Handler's http.Server accepts
// from: the connections Serve hands it.
type httpListener struct{ h *Handler }

func (l httpListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.h.handoff:
		return c, nil
	case <-l.h.stopped:
		return nil, net.ErrClosed
	}
}

func (l httpListener) Close() error {
	l.h.stopOnce.Do(func() { close(l.h.stopped) })
	return nil
}

func (l httpListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "tcp" }
func (handoffAddr) String() string  { return "egressd-http-handoff" }

// Run serves the connections Serve hands to net/http until Shutdown or
// Close. It blocks.
func (h *Handler) Run() error {
	if err := h.srv.Serve(httpListener{h}); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// Shutdown stops taking connections and waits, up to ctx, for the requests
// net/http is serving (http.Server.Shutdown); idle keep-alive connections
// are closed. Tunnels are not net/http's: the accept pipeline and the
// tunnel registry wait for them.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.closeHitIdle()
	return h.srv.Shutdown(ctx)
}

// Close cuts every connection net/http holds and stops taking more.
func (h *Handler) Close() error {
	h.closeHitIdle()
	httpListener{h}.Close()
	return h.srv.Close()
}

type connKey struct{}

// connContext is the http.Server's ConnContext: every request on a
// connection carries it, for its client (clientAddr).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if rc, ok := c.(*replayConn); ok {
		ctx = context.WithValue(ctx, replayKey{}, rc)
	}
	if ac, _ := acceptConn(c); ac != nil {
		return context.WithValue(ctx, connKey{}, ac)
	}
	return ctx
}

type replayKey struct{}

// checkAuth checks the credentials header of r, a request net/http read:
// with h.o.Auth, unless the hit path checked this request already before
// leaving it to net/http (the first request on its connection, with the
// same header), in which case that check's outcome stands.
func (h *Handler) checkAuth(r *http.Request, header string) (string, bool) {
	if rc, _ := r.Context().Value(replayKey{}).(*replayConn); rc != nil && rc.auth != nil {
		a := rc.auth
		rc.auth = nil
		if a.header == header {
			return a.user, a.ok
		}
	}
	return h.o.Auth(header)
}

// clientAddr is the client of a request net/http serves: the one the
// accept pipeline identified for its connection (address and port).
func clientAddr(r *http.Request) netip.AddrPort {
	if c, ok := r.Context().Value(connKey{}).(*accept.Conn); ok {
		return c.Client
	}
	return netip.AddrPort{}
}

// maxRefusalRead bounds what a refusal reads from the client.
const maxRefusalRead = 16 << 10

// refuseLimit refuses a connection past a limit: it reads the request head
// (for the access line, and so that no unread bytes turn the close into a
// reset that loses the answer), answers 503 with X-Egress-Error: limit,
// then waits for the client to close. Each step is bounded by
// Options.RefuseTimeout. An in-line connection (c.OrigDst set:
// ServeInline) is refused the same way, its client believing it talks to
// the origin: its line is the transparent listener's, with orig_dst, and
// its host is the request's Host (inlineTarget), else the address dialed.
func (h *Handler) refuseLimit(c *accept.Conn) {
	inline := c.OrigDst.IsValid()
	listener := policy.ListenerHTTP
	if inline {
		listener = policy.ListenerTransparent
	}
	rec := h.o.Log.NewRecord(listener, c.Client.Addr())
	rec.ClientPort = c.Client.Port()
	if inline {
		rec.OrigDst = c.OrigDst
		rec.Host, rec.Port = c.OrigDst.Addr().String(), c.OrigDst.Port()
	}
	rec.Deny(policy.ReasonLimit)
	c.SetDeadline(time.Now().Add(h.o.RefuseTimeout))
	br := bufio.NewReaderSize(io.LimitReader(c.TCPConn, maxRefusalRead), 4096)
	if req, err := http.ReadRequest(br); err == nil {
		switch {
		case inline:
			rec.Method, rec.Path, rec.UserAgent = req.Method, req.URL.EscapedPath(), req.UserAgent()
			if req.Method != http.MethodConnect && inlineTarget(req, c.OrigDst) {
				rec.Host, rec.Port, _ = splitHostPort(req.URL.Host, "80")
			}
		case req.Method == http.MethodConnect:
			rec.Listener = policy.ListenerConnect
			rec.Host, rec.Port, _ = splitHostPort(req.RequestURI, "")
		default:
			rec.Method, rec.Path, rec.UserAgent = req.Method, req.URL.EscapedPath(), req.UserAgent()
			def := "80"
			if req.URL.Scheme == "https" {
				def = "443"
			}
			rec.Host, rec.Port, _ = splitHostPort(req.URL.Host, def)
		}
	}
	rec.Status = http.StatusServiceUnavailable
	// A client that sent no request in time still gets the answer.
	a := answer{status: http.StatusServiceUnavailable, kind: refused, reason: policy.ReasonLimit}
	if a.write(c.TCPConn, h.o.RefuseTimeout) == nil {
		c.SetReadDeadline(time.Now().Add(h.o.RefuseTimeout))
		linger(c.TCPConn)
	}
	h.o.Log.Metrics().LimitRejected(rec.Listener, c.Limit)
	rec.Finish()
	c.Close()
}

// linger half-closes c and reads until the client closes (or c's read
// deadline), so that an answer is delivered before the socket goes.
func linger(c *net.TCPConn) {
	c.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(c, maxRefusalRead))
}
