package forward

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
)

// hitHead is an absolute-form GET or HEAD request head as the hit path
// reads it (see Handler.serveHits): what a cache hit depends on.
type hitHead struct {
	method    string      // http.MethodGet or http.MethodHead
	target    string      // the request target as sent: "http://host[:port]/path[?query]"
	proxyAuth string      // the Proxy-Authorization value, trimmed; "" if none
	userAgent string      // the first User-Agent value; "" if none
	close     bool        // Connection: close
	header    http.Header // every field but Host, as net/http's request would carry them
	size      int         // bytes of the head, through the blank line
}

// parseHitHead reads a GET or HEAD request head in absolute form from b,
// the bytes a client has sent so far. Like parseConnectHead it is
// deliberately narrower than HTTP: it accepts only heads that net/http
// parses the same way (FuzzHitHead checks this against http.ReadRequest)
// and that a stored response can answer exactly as the net/http path
// would. Everything else is declined and goes the general way: another
// method, version or scheme, a target that URL parsing would rewrite, a
// body or its framing (Content-Length, Transfer-Encoding), folded or
// non-ASCII fields, no Host or more than one, repeated Proxy-Authorization
// or Connection, Connection tokens other than close and keep-alive, and
// every field that asks for more than a plain hit: Authorization,
// Cache-Control, Pragma, conditionals (If-*), Range, Expect, Upgrade, TE,
// Trailer, HTTP2-Settings.
func parseHitHead(b []byte) (hitHead, headVerdict) {
	var method string
	switch {
	case bytes.HasPrefix(b, []byte("GET ")):
		method = http.MethodGet
	case bytes.HasPrefix(b, []byte("HEAD ")):
		method = http.MethodHead
	case bytes.HasPrefix([]byte("GET "), b), bytes.HasPrefix([]byte("HEAD "), b):
		return hitHead{}, headIncomplete
	default:
		return hitHead{}, headDeclined
	}
	eol := bytes.Index(b, []byte("\r\n"))
	if eol < 0 {
		if bytes.IndexByte(b, '\n') >= 0 {
			return hitHead{}, headDeclined // a bare LF: net/http's to judge
		}
		return hitHead{}, headIncomplete
	}
	const proto = " HTTP/1.1"
	line := b[len(method)+1 : eol]
	if !bytes.HasSuffix(line, []byte(proto)) {
		return hitHead{}, headDeclined
	}
	target := line[:len(line)-len(proto)]
	if !validHitTarget(target) {
		return hitHead{}, headDeclined
	}
	// A first pass checks the whole head without allocating: most calls
	// see a head still arriving, or one to decline.
	pos := eol + 2
	hosts, auths, conns, fields := 0, 0, 0, 0
	closeConn := false
	for {
		end := bytes.Index(b[pos:], []byte("\r\n"))
		if end < 0 {
			// A line still arriving; its CR may be here without its LF.
			if !allBytes(bytes.TrimSuffix(b[pos:], []byte("\r")), isFieldByte) {
				return hitHead{}, headDeclined
			}
			return hitHead{}, headIncomplete
		}
		field := b[pos : pos+end]
		pos += end + 2
		if len(field) == 0 {
			break
		}
		name, value, ok := splitField(field)
		if !ok {
			return hitHead{}, headDeclined
		}
		kind := fieldKind(name)
		if kind != fieldHost {
			fields++
		}
		switch kind {
		case fieldDecline:
			return hitHead{}, headDeclined
		case fieldHost:
			hosts++
			if hosts > 1 || len(value) == 0 || !allBytes(value, isTargetByte) {
				return hitHead{}, headDeclined
			}
		case fieldProxyAuth:
			auths++
			if auths > 1 {
				return hitHead{}, headDeclined
			}
		case fieldConnection:
			conns++
			c, ok := connectionTokens(value)
			if conns > 1 || !ok {
				return hitHead{}, headDeclined
			}
			closeConn = c
		case fieldProxyConnection:
			if !equalFoldASCII(value, "keep-alive") {
				return hitHead{}, headDeclined
			}
		}
	}
	if hosts != 1 {
		return hitHead{}, headDeclined // net/http answers 400 without one
	}
	// One string of the head; target, fields and values are parts of it.
	str := string(b[:pos])
	lineStart := len(method) + 1
	h := hitHead{method: method, target: str[lineStart : lineStart+len(target)], close: closeConn, size: pos,
		header: make(http.Header, fields)}
	vals := make([]string, fields) // backing for one value per field name
	for p := eol + 2; ; {
		end := strings.Index(str[p:], "\r\n")
		field := str[p : p+end]
		p += end + 2
		if len(field) == 0 {
			break
		}
		colon := strings.IndexByte(field, ':')
		name, value := field[:colon], trimOWSString(field[colon+1:])
		switch fieldKind([]byte(name)) {
		case fieldHost:
			continue // net/http keeps it in Request.Host only
		case fieldProxyAuth:
			h.proxyAuth = value
		}
		key := textproto.CanonicalMIMEHeaderKey(name) // name itself when canonical
		if vs, ok := h.header[key]; ok {
			h.header[key] = append(vs, value)
			continue
		}
		if key == "User-Agent" {
			h.userAgent = value
		}
		vals[0] = value
		h.header[key] = vals[:1:1]
		vals = vals[1:]
	}
	return h, headAccepted
}

// trimOWSString is trimOWS of a string.
func trimOWSString(s string) string { return strings.Trim(s, " \t") }

// splitField splits a header line into its name (a token) and its value
// (trimmed of optional whitespace; visible ASCII, space and tab).
func splitField(field []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(field, ':')
	if colon <= 0 || !allBytes(field[:colon], isTokenByte) {
		return nil, nil, false // includes obs-fold (a leading space)
	}
	value = trimOWS(field[colon+1:])
	if !allBytes(value, isFieldByte) {
		return nil, nil, false
	}
	return field[:colon], value, true
}

type hitField int

const (
	fieldOther hitField = iota
	fieldDecline
	fieldHost
	fieldProxyAuth
	fieldConnection
	fieldProxyConnection
)

// declinedFields: a request with any of them goes the general way.
var declinedFields = []string{
	"content-length", "transfer-encoding", "expect", "upgrade", "te", "trailer",
	"authorization", "cache-control", "pragma", "range", "http2-settings",
}

func fieldKind(name []byte) hitField {
	switch {
	case equalFoldASCII(name, "host"):
		return fieldHost
	case equalFoldASCII(name, "proxy-authorization"):
		return fieldProxyAuth
	case equalFoldASCII(name, "connection"):
		return fieldConnection
	case equalFoldASCII(name, "proxy-connection"):
		return fieldProxyConnection
	case len(name) >= 3 && equalFoldASCII(name[:3], "if-"):
		return fieldDecline // conditionals
	}
	for _, d := range declinedFields {
		if equalFoldASCII(name, d) {
			return fieldDecline
		}
	}
	return fieldOther
}

// connectionTokens reads a Connection value: ok only when every token is
// close or keep-alive (any other names a hop-by-hop field, or an upgrade);
// closeConn when one is close.
func connectionTokens(v []byte) (closeConn, ok bool) {
	for len(v) > 0 {
		tok := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		tok = trimOWS(tok)
		switch {
		case equalFoldASCII(tok, "close"):
			closeConn = true
		case equalFoldASCII(tok, "keep-alive"):
		default:
			return false, false
		}
	}
	return closeConn, true
}

// validHitTarget accepts "http://" authority path [ "?" query ], where
// authority is a DNS-style name, an IPv4 literal or a bracketed IPv6
// literal, with an optional port, and path and query use only characters
// (and well-formed percent escapes) that URL parsing keeps as they are.
// No userinfo, fragment, empty path, other scheme or upper-case scheme.
func validHitTarget(t []byte) bool {
	const scheme = "http://"
	if len(t) > headBufSize || !bytes.HasPrefix(t, []byte(scheme)) {
		return false
	}
	rest := t[len(scheme):]
	slash := bytes.IndexByte(rest, '/')
	if slash <= 0 || !validHitAuthority(rest[:slash]) {
		return false
	}
	path := rest[slash:]
	query := []byte(nil)
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path, query = path[:q], path[q+1:]
	}
	return validEscapes(path, isPathByte) && validEscapes(query, isQueryByte)
}

// validHitAuthority is validTarget's host and port, with the port optional.
func validHitAuthority(a []byte) bool {
	if len(a) == 0 || len(a) > maxTarget || !allBytes(a, isTargetByte) {
		return false
	}
	host := a
	if colon := bytes.LastIndexByte(a, ':'); colon >= 0 && bytes.IndexByte(a[colon:], ']') < 0 {
		if !validPort(a[colon+1:]) {
			return false
		}
		host = a[:colon]
	}
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		return validTarget(append(append([]byte(nil), host...), ":1"...))
	}
	return len(host) > 0 && bytes.IndexAny(host, ":[]") < 0
}

// validEscapes: every byte is ok or starts a percent escape of two hex
// digits.
func validEscapes(b []byte, ok func(byte) bool) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '%' {
			if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if !ok(c) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// isPathByte: RFC 3986 pchar and '/' without percent (unreserved,
// sub-delims, ':' and '@'), which net/url keeps in EscapedPath as sent.
func isPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
		return true
	}
	return false
}

// isQueryByte: RFC 3986 query characters without percent.
func isQueryByte(c byte) bool { return isPathByte(c) || c == '?' }
