package forward

import (
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/rawio"
)

// answerKind is what one of egressd's own answers says, and so its header
// and body.
type answerKind int

const (
	// denied: the policy (or authentication, or DLP) refused the request.
	// X-Egress-Denied: reason.
	denied answerKind = iota
	// upstreamError: egressd could not reach the destination (DNS, dial,
	// timeout). X-Egress-Error: reason.
	upstreamError
	// refused: egressd has no room for the connection (a limit).
	// X-Egress-Error: reason.
	refused
)

// answer is one of egressd's own HTTP answers. Clients read the reason
// token in its header and body, never internal error text. It is the one
// description of those answers; write puts it on a raw connection
// (CONNECT, refusals past a limit), response hands it to goproxy
// (absolute-URI requests), serve writes it through a ResponseWriter.
type answer struct {
	status int
	kind   answerKind
	reason policy.Reason
	// authenticate: a 407 asking for credentials (Proxy-Authenticate).
	authenticate bool
	// close: the connection ends after it.
	close bool
}

func (a answer) headerName() string {
	if a.kind == denied {
		return "X-Egress-Denied"
	}
	return "X-Egress-Error"
}

func (a answer) body() string {
	switch a.kind {
	case denied:
		return "egressd: denied: " + string(a.reason) + "\n"
	case refused:
		return "egressd: refused: " + string(a.reason) + "\n"
	}
	return "egressd: upstream error: " + string(a.reason) + "\n"
}

const authenticateValue = `Basic realm="egressd"`

// write puts a on c, a connection no HTTP server owns any more, bounded by
// timeout; c is closed after it (a says Connection: close).
func (a answer) write(c *net.TCPConn, timeout time.Duration) error {
	body := a.body()
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(a.status)...)
	b = append(b, "\r\n"...)
	b = append(b, a.headerName()...)
	b = append(b, ": "...)
	b = append(b, a.reason...)
	b = append(b, "\r\n"...)
	if a.authenticate {
		b = append(b, "Proxy-Authenticate: "+authenticateValue+"\r\n"...)
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nConnection: close\r\n\r\n"...)
	b = append(b, body...)
	if timeout > 0 {
		c.SetWriteDeadline(time.Now().Add(timeout))
	}
	_, err := rawio.Write(c, b)
	return err
}

// response is a as goproxy's answer to request r.
func (a answer) response(r *http.Request) *http.Response {
	resp := goproxy.NewResponse(r, "text/plain; charset=utf-8", a.status, a.body())
	resp.Header.Set(a.headerName(), string(a.reason))
	if a.authenticate {
		resp.Header.Set("Proxy-Authenticate", authenticateValue)
	}
	if a.close {
		resp.Header.Set("Connection", "close")
		resp.Close = true
	}
	return resp
}

// serve writes a through w (net/http's, before goproxy runs).
func (a answer) serve(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set(a.headerName(), string(a.reason))
	if a.authenticate {
		h.Set("Proxy-Authenticate", authenticateValue)
	}
	if a.close {
		h.Set("Connection", "close")
	}
	w.WriteHeader(a.status)
	w.Write([]byte(a.body()))
}
