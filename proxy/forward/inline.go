package forward

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/egressd/egressd/proxy/accept"
)

// ServeInline serves a connection the in-line mode's transparent listener
// took on one of policy.http_ports (c.OrigDst is the destination the
// client dialed): it goes to the Handler's http.Server, where each request
// on it, one by one on a keep-alive connection, is decided by its own Host
// (inlineTarget) and then forwarded as an absolute-URI request is: the
// same decision, DLP, HTTP cache and pinned origin connections. There are
// no proxy credentials on such a connection: the client's address is its
// identity. A connection past a limit is answered 503 with
// X-Egress-Error: limit, as Serve answers one (refuseLimit).
func (h *Handler) ServeInline(c *accept.Conn) {
	if c.Limit != "" {
		h.refuseLimit(c)
		return
	}
	select {
	case h.handoff <- c:
	case <-h.stopped:
		c.Close()
	}
}

// inlineConn returns the accept.Conn of a request net/http read on an
// in-line connection, nil for any other request.
func inlineConn(r *http.Request) *accept.Conn {
	if c, ok := r.Context().Value(connKey{}).(*accept.Conn); ok && c.OrigDst.IsValid() {
		return c
	}
	return nil
}

// inlineTarget makes a request read on an in-line connection the
// absolute-URI request egressd forwards: http://Host/path on the port the
// client dialed. Host is net/http's r.Host: the Host header for an
// origin-form request, the URI's authority for an absolute-form one (RFC
// 9112 section 3.2.2). false: the request has no Host, or its Host names
// another port than the one dialed (the decision would be about a port the
// connection does not go to).
func inlineTarget(r *http.Request, dst netip.AddrPort) bool {
	host := r.Host
	port := strconv.Itoa(int(dst.Port()))
	if h, p, err := net.SplitHostPort(host); err == nil {
		if p != port {
			return false
		}
		host = h
	} else {
		host = trimBrackets(host)
	}
	if host == "" || strings.ContainsAny(host, "/?#@[]%") {
		return false
	}
	if strings.IndexByte(host, ':') >= 0 {
		// Only an IPv6 literal has colons (a zone never reaches an origin).
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
	}
	authority := host
	switch {
	case dst.Port() != 80:
		authority = net.JoinHostPort(host, port)
	case strings.IndexByte(host, ':') >= 0:
		authority = "[" + host + "]"
	}
	// What goes on is a URL whose authority is exactly this one.
	if u, err := url.Parse("http://" + authority + "/"); err != nil || u.Host != authority {
		return false
	}
	r.URL.Scheme = "http"
	r.URL.Host = authority
	r.URL.User = nil
	r.Host = authority
	return true
}
