package forward

import (
	"net/http"

	"golang.org/x/net/http/httpguts"

	"github.com/egressd/egressd/proxy/accept"
)

// takeBack gives a connection of the HTTP listener back to the hit path
// after net/http answered a request on it (with the HTTP cache on), so
// that the fresh hits a keep-alive client asks for after a miss are
// served there too; the hit path hands it to net/http again at its next
// request it does not answer, as at the first. It does so only when the
// exchange left nothing in net/http's state: a plain forwarded HTTP/1.1
// request without a body, not asking to close; a response whose length
// the head states and which was written in full (or has no body), not
// chunked, without trailers, not closing the connection, and no error;
// and the Handler not shutting down. Otherwise the connection stays with
// net/http, as before.
//
// net/http's Hijack writes out the response head but not the body it
// still buffers: the response is flushed first. The bytes net/http had
// read past the request (a pipelined request, the byte of its background
// read) and those of the hit path's replay it had not read yet go to the
// hit path, in that order. The hit path runs on a goroutine of its own,
// so that net/http's state of the connection and of the request is
// released when ServeHTTP returns; from then on the connection is the hit
// path's (its idle tracking, Shutdown's closeHitIdle, and Close of the
// accept.Conn, which releases it once).
func (h *Handler) takeBack(w http.ResponseWriter, r *http.Request, x *exchange, cw *respWriter) {
	if _, ok := r.Context().Value(connKey{}).(*accept.Conn); !ok || h.hitClosing.Load() || !canTakeBack(r, x, cw) {
		return
	}
	backoff := 0
	if rc, _ := r.Context().Value(replayKey{}).(*replayConn); rc != nil {
		if rc.wait > 0 {
			rc.wait-- // the hit path declined its last turn at once
			return
		}
		backoff = rc.backoff
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	conn, rw, err := rc.Hijack()
	if err != nil {
		return
	}
	c, unread := acceptConn(conn)
	if c == nil {
		conn.Close() // connKey says it is one; never here
		return
	}
	h.takenBack.Add(1)
	buffered := rw.Reader.Buffered()
	bp := headBufs.Get().(*[headBufSize]byte)
	if buffered+len(unread) > len(bp) {
		// More than a head's buffer already read: net/http again.
		headBufs.Put(bp)
		replay, _ := rw.Reader.Peek(buffered)
		h.handOff(&replayConn{Conn: c, replay: append(append([]byte(nil), replay...), unread...), backoff: backoff})
		return
	}
	have := 0
	if buffered > 0 {
		have, _ = rw.Reader.Read(bp[:buffered]) // from its buffer only
	}
	have += copy(bp[have:], unread)
	go h.resume(c, bp, have, backoff)
}

// maxTakeBackWait bounds the backoff of takeBack on a connection whose
// requests the hit path keeps declining.
const maxTakeBackWait = 64

// resume runs the hit path on a connection takeBack took from net/http
// (backoff: the wait of its previous turn). A turn that declined the
// first request it read (another miss) cost that request a hand-off to
// net/http for nothing; net/http then answers twice the previous wait of
// requests (2 at first, at most maxTakeBackWait; the declined one
// included) before the next turn, so a connection of misses rarely
// bounces. A turn that served a hit resets the wait.
func (h *Handler) resume(c *accept.Conn, bp *[headBufSize]byte, have, backoff int) {
	handoff, replay, checked, hits := h.resumeHits(c, bp, have)
	headBufs.Put(bp)
	if !handoff {
		return
	}
	wait := 0
	if hits == 0 {
		wait = min(max(2*backoff, 2), maxTakeBackWait)
	}
	h.handOffDeclined(c, replay, checked, wait)
}

// handOffDeclined gives net/http a connection the hit path declined a
// request on, with the bytes it read and did not answer, its credentials
// check of that request, and the requests net/http answers before
// takeBack tries again (wait).
func (h *Handler) handOffDeclined(c *accept.Conn, replay []byte, checked *authOutcome, wait int) {
	if replay != nil || checked != nil || wait > 0 {
		h.handOff(&replayConn{Conn: c, replay: replay, auth: checked, wait: wait, backoff: wait})
		return
	}
	h.handOff(c)
}

// canTakeBack reports whether the exchange x of r is over in full, with
// nothing of it left to net/http.
func canTakeBack(r *http.Request, x *exchange, cw *respWriter) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close || r.Method == http.MethodConnect ||
		r.Body != http.NoBody || r.ContentLength != 0 || len(r.TransferEncoding) > 0 ||
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") { // wantsWebSocket's and any other
		return false
	}
	if x == nil || x.tunnel || x.abort || x.prefix != nil || cw.err != nil || cw.status < 200 || !cw.head.keep {
		return false
	}
	if r.Method == http.MethodHead || !bodyAllowed(cw.status) {
		return cw.written == 0
	}
	// Without a Content-Length net/http would chunk what it still
	// buffers, or close after it.
	return cw.head.length >= 0 && cw.written == cw.head.length
}

// bodyAllowed is net/http's bodyAllowedForStatus.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
