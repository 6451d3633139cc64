package limits

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// refusal is the HTTP answer to a connection past a limit. It is short, so
// it fits the socket buffer of a fresh connection: writing it never blocks.
var refusal = "HTTP/1.1 503 Service Unavailable\r\n" +
	"X-Egress-Error: limit\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n" +
	"Connection: close\r\n" +
	"\r\n" + refusalBody

const refusalBody = "egressd: refused: limit\n"

// SOCKS5 bytes of a refusal (RFC 1928).
const (
	socksVersion       = 0x05
	methodNoAuth       = 0x00
	methodNoAcceptable = 0xFF
	replyGeneralFail   = 0x01
	atypIPv4           = 0x01
	atypDomain         = 0x03
	atypIPv6           = 0x04
)

// maxRefusalRead bounds what a refusal reads from the client.
const maxRefusalRead = 16 << 10

// refuse answers c according to protocol and closes it, on its own
// goroutine so the accept loop goes on at once; past MaxRefusing, or after
// Close, it closes c without an answer.
func (l *Limiter) refuse(c net.Conn, ip netip.Addr, protocol policy.Listener, limit string) {
	rec := l.o.Log.NewRecord(protocol, ip)
	rec.Deny(policy.ReasonLimit)
	l.mu.Lock()
	if l.closed || len(l.refusing) >= l.o.MaxRefusing {
		l.mu.Unlock()
		c.Close()
		l.finish(rec, limit)
		return
	}
	l.refusing[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		if protocol == policy.ListenerSOCKS5 {
			refuseSOCKS5(c, rec, l.o.RefuseTimeout)
		} else {
			refuseHTTP(c, rec, l.o.RefuseTimeout)
		}
		c.Close()
		l.mu.Lock()
		delete(l.refusing, c)
		l.mu.Unlock()
		l.finish(rec, limit)
	}()
}

func (l *Limiter) finish(rec *accesslog.Record, limit string) {
	l.metrics.LimitRejected(rec.Listener, limit)
	rec.Finish()
}

// refuseHTTP reads the request head (for the access line, and so that no
// unread bytes turn the close into a reset that would lose the answer),
// answers 503, then waits for the client to close.
func refuseHTTP(c net.Conn, rec *accesslog.Record, timeout time.Duration) {
	c.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(io.LimitReader(c, maxRefusalRead), 4096)
	if req, err := http.ReadRequest(br); err == nil {
		if req.Method == http.MethodConnect {
			rec.Listener = policy.ListenerConnect
			rec.Host, rec.Port = splitHostPort(req.RequestURI, 0)
		} else {
			rec.Method = req.Method
			def := uint16(80)
			if req.URL.Scheme == "https" {
				def = 443
			}
			rec.Host, rec.Port = splitHostPort(req.URL.Host, def)
		}
	}
	rec.Status = http.StatusServiceUnavailable
	// A client that sent no request within the deadline still gets the
	// answer: the deadline restarts for writing it and lingering.
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, refusal); err != nil {
		return
	}
	linger(c)
}

// refuseSOCKS5 reads the greeting. When the client offers "no
// authentication" it is selected, the request is read and answered with
// general failure (0x01); otherwise no method is acceptable (0xFF). Either
// way the client knows at once that it will not be served.
func refuseSOCKS5(c net.Conn, rec *accesslog.Record, timeout time.Duration) {
	c.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(io.LimitReader(c, maxRefusalRead), 512)
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[0] != socksVersion {
		return // not SOCKS5: there is no answer it would understand
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == methodNoAuth
	}
	if !noAuth {
		c.Write([]byte{socksVersion, methodNoAcceptable})
		linger(c)
		return
	}
	if _, err := c.Write([]byte{socksVersion, methodNoAuth}); err != nil {
		return
	}
	rec.Host, rec.Port = readSOCKSRequest(br)
	rec.Status = replyGeneralFail
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{socksVersion, replyGeneralFail, 0, atypIPv4, 0, 0, 0, 0, 0, 0}); err != nil {
		return
	}
	linger(c)
}

// readSOCKSRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT and returns the
// destination as sent ("" and 0 when it could not be read).
func readSOCKSRequest(br *bufio.Reader) (string, uint16) {
	var h [4]byte
	if _, err := io.ReadFull(br, h[:]); err != nil || h[0] != socksVersion {
		return "", 0
	}
	var host string
	switch h[3] {
	case atypIPv4, atypIPv6:
		b := make([]byte, 4)
		if h[3] == atypIPv6 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(br, b); err != nil {
			return "", 0
		}
		a, _ := netip.AddrFromSlice(b)
		host = a.String()
	case atypDomain:
		n, err := br.ReadByte()
		if err != nil {
			return "", 0
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", 0
		}
		host = string(b)
	default:
		return "", 0
	}
	var p [2]byte
	if _, err := io.ReadFull(br, p[:]); err != nil {
		return host, 0
	}
	return host, binary.BigEndian.Uint16(p[:])
}

// linger half-closes c and reads until the client closes (or the refusal's
// deadline), so the answer is delivered before the socket goes.
func linger(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, maxRefusalRead))
}

func splitHostPort(hostport string, def uint16) (string, uint16) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, def
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return host, 0
	}
	return host, uint16(p)
}
