package forward

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/rawio"
)

// serveHits is the hit path: it answers fresh HTTP cache hits on c, one
// request after another on the keep-alive connection, without net/http;
// head is the first request, peeked (nothing consumed) into bp. Each
// request is answered here only when the answer is exactly the one the
// net/http path (ServeHTTP, serveStored) would give: the same credentials
// check, the same policy decision, the same stored response selected by
// the cache, the same bytes, access line and metrics. Anything else (a
// miss, a stale object, a denial, a 407, a rule with DLP or HTTP checks, a
// head parseHitHead declines) goes to net/http, which reads that request
// as it always did and keeps the connection (until takeBack gives it
// back after a response; takeback.go): serveHits
// returns handoff true, and replay, the bytes of the connection it has
// read and not answered (nil when it answered nothing: the first request
// stays on the socket, untouched), and checked, the credentials check it
// made of the request it declined, if any (ServeHTTP takes it instead of
// checking again). It returns false when it closed c.
//
// The first head is peeked, so that a connection the hit path does not
// take reaches net/http as the client sent it; later heads are read (a
// peek and a second read of the same bytes cost a system call per hit)
// and replayed to net/http ahead of the socket when declined.
func (h *Handler) serveHits(c *accept.Conn, bp *[headBufSize]byte, head hitHead) (handoff bool, replay []byte, checked *authOutcome) {
	handoff, replay, checked, _ = h.hitLoop(c, bp, &head, 0)
	return handoff, replay, checked
}

// resumeHits continues the keep-alive loop of a connection net/http gave
// back (takeBack) on the hit path: bp holds the have bytes net/http had
// read past the request it answered; the next request is read (not
// peeked) from them and the socket. Its results are serveHits', and
// served, the hits it answered.
func (h *Handler) resumeHits(c *accept.Conn, bp *[headBufSize]byte, have int) (handoff bool, replay []byte, checked *authOutcome, served int) {
	return h.hitLoop(c, bp, nil, have)
}

// hitLoop is serveHits (first: the peeked first head) and resumeHits
// (first nil: the next head is read after the have bytes in bp).
func (h *Handler) hitLoop(c *accept.Conn, bp *[headBufSize]byte, first *hitHead, have int) (handoff bool, replay []byte, checked *authOutcome, hits int) {
	var rd, wd idleDeadline
	var head hitHead
	peeked := first != nil // head is on the socket still, not in bp's first have bytes
	if peeked {
		head = *first
	}
	for {
		if !peeked {
			next, verdict, n, gone := h.nextHead(c, bp, have, &rd)
			have = n
			if gone {
				c.Close()
				return false, nil, nil, hits
			}
			if verdict != headAccepted || next.size > h.maxHead {
				break
			}
			head = next
		}
		var served bool
		if served, checked = h.serveHit(c, bp, &head, &wd, peeked); !served {
			break
		}
		hits++
		if !peeked {
			// A pipelined request after the head stays for the next turn.
			have = copy(bp[:], bp[head.size:have])
		}
		peeked = false
		if head.close || h.hitClosing.Load() {
			c.Close()
			return false, nil, nil, hits
		}
	}
	// net/http sets its own read deadlines; it must find no write deadline
	// of ours.
	if rd.at.Load() != 0 {
		c.SetReadDeadline(time.Time{})
	}
	if wd.at.Load() != 0 {
		c.SetWriteDeadline(time.Time{})
	}
	if peeked || have == 0 {
		return true, nil, checked, hits
	}
	return true, bytes.Clone(bp[:have]), checked, hits
}

// serveHit answers head from the HTTP cache if it is a hit the hit path
// may serve, and reports whether it did (the connection may have failed
// meanwhile: the next read sees it). peeked: head is still on the socket
// (it is read off it before the answer); otherwise it is in bp already.
// When it returns false nothing more has been read from c, nor anything
// written to it.
func (h *Handler) serveHit(c *accept.Conn, bp *[headBufSize]byte, head *hitHead, wd *idleDeadline, peeked bool) (served bool, checked *authOutcome) {
	// net/http's own parsing of the target (ReadRequest): the same URL.
	u, err := url.ParseRequestURI(head.target)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || u.Opaque != "" {
		return false, nil
	}
	// Nothing stored for the URL: a miss, decided and counted once, by
	// the net/http path.
	if !h.o.Cache.Holds(u) {
		return false, nil
	}
	rec := h.o.Log.NewRecord(policy.ListenerHTTP, c.Client.Addr())
	rec.ClientPort = c.Client.Port()
	rec.Method, rec.Path, rec.UserAgent = head.method, u.EscapedPath(), head.userAgent
	// The credentials check, handed on with a request left to net/http
	// (allocated only then: a hit needs none).
	var auth authOutcome
	authed := false
	if h.o.Auth != nil {
		user, ok := h.o.Auth(head.proxyAuth)
		auth, authed = authOutcome{header: head.proxyAuth, user: user, ok: ok}, true
		if ok {
			rec.User = user
		} else if h.o.AuthRequired || head.proxyAuth != "" {
			return false, auth.handedOn(authed) // 407: ServeHTTP answers it
		}
	}
	dec, a := h.decide(context.Background(), rec, policy.ListenerHTTP, u.Host, "80")
	// As serveStored: a denial or an error, a rule with methods, paths or
	// headers to set, or a DLP profile goes the general way.
	if a != nil || dec.HTTP != nil || h.o.DLP != nil && h.o.DLP.Active(dec.DLP) {
		return false, auth.handedOn(authed)
	}
	if host := normalizedAuthority(u.Host, dec); host != u.Host {
		u.Host = host
	}
	st, ok := h.o.Cache.Fresh(head.method, u, head.header)
	if !ok {
		return false, auth.handedOn(authed)
	}
	wire := st.Memo(buildHitWire).(*hitWire)
	if !wire.ok {
		return false, auth.handedOn(authed)
	}
	// It is a hit: take a peeked head off the socket (only it; a
	// pipelined request after it stays there) and answer.
	if peeked {
		if _, err := io.ReadFull(rawReader{c}, bp[:head.size]); err != nil {
			return false, auth.handedOn(authed) // the connection failed: net/http sees it too
		}
	}
	h.fastHits.Add(1) // before the answer, which a test may wait for
	get := head.method == http.MethodGet
	closeConn := head.close || h.hitClosing.Load()
	bufp := hitBufs.Get().(*[]byte)
	b := wire.appendHead((*bufp)[:0], st.Age(), get, closeConn)
	body := st.Body()
	if !get {
		body = nil
	}
	inline := len(body) <= maxInlineBody
	if inline {
		b = append(b, body...)
	}
	if d := time.Duration(h.idle.Load()); d > 0 {
		if t, ok := wd.next(d); ok {
			c.SetWriteDeadline(t)
		}
	}
	var n int
	if inline {
		n, err = rawio.Write(c.TCPConn, b)
		n -= len(b) - len(body)
	} else {
		// A large body: one writev of the head and the stored body.
		bufs := net.Buffers{b, body}
		var w int64
		w, err = bufs.WriteTo(c.TCPConn)
		n = int(w) - len(b)
	}
	*bufp = b[:0]
	if cap(b) <= maxHitBuf {
		hitBufs.Put(bufp)
	}
	rec.Cache = accesslog.CacheHit
	rec.Status = http.StatusOK
	rec.Down.Store(int64(max(n, 0)))
	rec.Finish()
	if err != nil {
		head.close = true // the client is gone or stopped reading: close
	}
	return true, nil
}

// authOutcome is a credentials check the hit path made of a request it
// then left to net/http: ServeHTTP takes it (checkAuth) instead of
// checking the same request again.
type authOutcome struct {
	header string // the Proxy-Authorization value checked
	user   string
	ok     bool
}

// handedOn is the check to hand on with a declined request: nil when none
// was made (made false).
func (a authOutcome) handedOn(made bool) *authOutcome {
	if !made {
		return nil
	}
	return &a
}

// maxInlineBody is the largest body a hit copies into the head's buffer
// to go out in one write; a larger one goes in a second write.
const maxInlineBody = 32 << 10

// maxHitBuf bounds the buffers hitBufs keeps.
const maxHitBuf = 64 << 10

var hitBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// rawReader reads c with rawio.
type rawReader struct{ c *accept.Conn }

func (r rawReader) Read(p []byte) (int, error) { return rawio.Read(r.c.TCPConn, p) }

// nextHead reads the next request on a connection the hit path served
// into bp, after the have bytes already there (a pipelined request's):
// up to timeouts.idle for its first byte (as net/http's IdleTimeout), then
// up to timeouts.handshake for the rest of its head (as its
// ReadHeaderTimeout). n is the bytes in bp now. gone: the connection
// closed, failed, timed out or the Handler shuts down before a byte of a
// request arrived, or timed out in the middle of a head (net/http closes
// such connections without an answer). A head that cannot be read whole
// (the client closed after part of it, or it does not fit in bp) is
// declined: net/http reads what there is and answers as it always has.
func (h *Handler) nextHead(c *accept.Conn, bp *[headBufSize]byte, have int, rd *idleDeadline) (head hitHead, verdict headVerdict, n int, gone bool) {
	n = have
	if n > 0 {
		if head, verdict = parseHitHead(bp[:n]); verdict != headIncomplete {
			return head, verdict, n, false
		}
	}
	h.hitMu.Lock()
	if h.hitClosing.Load() {
		h.hitMu.Unlock()
		return hitHead{}, headDeclined, n, true
	}
	h.hitIdle[c] = struct{}{}
	h.hitMu.Unlock()
	defer func() {
		h.hitMu.Lock()
		delete(h.hitIdle, c)
		h.hitMu.Unlock()
	}()
	wait := time.Duration(h.idle.Load())
	if n > 0 {
		wait = h.o.Handshake // the rest of a head already begun
	}
	if wait > 0 {
		if t, ok := rd.next(wait); ok {
			c.SetReadDeadline(t)
		}
	} else if rd.at.Load() != 0 {
		c.SetReadDeadline(time.Time{})
		rd.forget()
	}
	// Shutdown marks the Handler closing before it wakes the waiters: a
	// deadline armed above after its wake-up is caught here.
	if h.hitClosing.Load() {
		return hitHead{}, headDeclined, n, true
	}
	begun := n > 0
	for {
		m, err := rawio.Read(c.TCPConn, bp[n:])
		n += m
		switch {
		case err != nil && n == 0:
			return hitHead{}, headDeclined, 0, true
		case err != nil && isTimeout(err):
			return hitHead{}, headDeclined, n, true
		case err != nil:
			return hitHead{}, headDeclined, n, false // net/http reads the part and the end
		}
		if head, verdict = parseHitHead(bp[:n]); verdict != headIncomplete {
			return head, verdict, n, false
		}
		if n == len(bp) {
			return hitHead{}, headDeclined, n, false // too long for the hit path
		}
		if !begun && h.o.Handshake > 0 {
			// A head has begun: the rest within timeouts.handshake.
			begun = true
			c.SetReadDeadline(time.Now().Add(h.o.Handshake))
			rd.forget()
		}
	}
}

// closeHitIdle stops the hit path's keep-alive: connections waiting for
// their next request close now, the others after the request they serve.
func (h *Handler) closeHitIdle() {
	h.hitClosing.Store(true)
	h.hitMu.Lock()
	defer h.hitMu.Unlock()
	past := time.Unix(1, 0)
	for c := range h.hitIdle {
		c.SetReadDeadline(past)
	}
}

// hitWire is a stored response's header block as net/http writes it for
// serveStored, built once per stored response (httpcache.Stored.Memo).
// net/http writes a response's fields sorted by name, then Date when the
// handler set none, a sniffed Content-Type when it set none, and
// Connection: close; serveStored sets Age, Content-Length and X-Cache over
// the stored fields, so the stored fields are kept in four runs around
// those three.
type hitWire struct {
	ok      bool      // false: the hit path does not serve it
	seg     [4][]byte // fields before Age, before Content-Length, before X-Cache, after X-Cache
	length  string    // the Content-Length value
	date    bool      // the stored fields have a Date
	sniffed string    // the Content-Type net/http sniffs for a GET (no Content-Type, no Content-Encoding)
}

// buildHitWire builds st's hitWire and reports the heap it holds, which
// the cache counts in max_bytes with the stored response: the struct and
// one buffer for the four runs, sized up front (a field's line is at most
// its name, value and 4 bytes), so it holds no growth slack. Only 200
// responses are served on the hit path (another status can change what
// net/http writes), and none with an X-Egress-* field (serveStored
// declines them too).
func buildHitWire(st httpcache.Stored) (any, int64) {
	w := &hitWire{}
	size := int64(unsafe.Sizeof(*w))
	stored := st.Header()
	cl := st.ContentLength()
	if st.Status() != http.StatusOK || len(cl) != 1 {
		return w, size
	}
	var parts [4]http.Header
	lines := 0
	for k, v := range stored {
		if isEgressHeader(k) {
			return w, size
		}
		var i int
		switch {
		case k == "Age" || k == "Content-Length" || k == httpcache.HeaderXCache:
			continue // serveStored replaces them
		case k < "Age":
			i = 0
		case k < "Content-Length":
			i = 1
		case k < httpcache.HeaderXCache:
			i = 2
		default:
			i = 3
		}
		if parts[i] == nil {
			parts[i] = http.Header{}
		}
		parts[i][k] = v
		for _, s := range v {
			lines += len(k) + len(s) + 4
		}
	}
	var b bytes.Buffer
	b.Grow(lines)
	var ends [4]int
	for i, p := range parts {
		p.Write(&b)
		ends[i] = b.Len()
	}
	buf, start := b.Bytes(), 0
	for i, end := range ends {
		w.seg[i] = buf[start:end:end]
		start = end
	}
	size += int64(cap(buf))
	w.length = cl[0]
	_, w.date = stored["Date"]
	if _, typed := stored["Content-Type"]; !typed && stored.Get("Content-Encoding") == "" && len(st.Body()) > 0 {
		w.sniffed = http.DetectContentType(st.Body()) // one of its constant strings
	}
	w.ok = true
	return w, size
}

// appendHead appends the response head of a hit of age seconds to b.
func (w *hitWire) appendHead(b []byte, age int64, get, closeConn bool) []byte {
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	b = append(b, w.seg[0]...)
	b = append(b, "Age: "...)
	b = strconv.AppendInt(b, age, 10)
	b = append(b, "\r\n"...)
	b = append(b, w.seg[1]...)
	b = append(b, "Content-Length: "...)
	b = append(b, w.length...)
	b = append(b, "\r\n"...)
	b = append(b, w.seg[2]...)
	b = append(b, httpcache.HeaderXCache+": "+string(httpcache.Hit)+"\r\n"...)
	b = append(b, w.seg[3]...)
	if !w.date {
		b = append(b, "Date: "...)
		b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	if get && w.sniffed != "" {
		b = append(b, "Content-Type: "...)
		b = append(b, w.sniffed...)
		b = append(b, "\r\n"...)
	}
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}
