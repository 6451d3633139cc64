package forward

import (
	"bytes"
	"net/netip"
)

// connectHead is a CONNECT request head as the fast path reads it (see
// Handler.Serve): only what egressd acts on.
type connectHead struct {
	authority string // the request target, as sent ("host:port")
	proxyAuth string // the Proxy-Authorization value, trimmed; "" if none
	hasAuth   bool   // a Proxy-Authorization header was present
	size      int    // bytes of the head, through the blank line
}

// headVerdict says what parseConnectHead made of its input.
type headVerdict int

const (
	headIncomplete headVerdict = iota // could still become a CONNECT head the fast path takes
	headAccepted                      // a complete head the fast path takes
	headDeclined                      // anything else: net/http reads it, as it always did
)

// parseConnectHead reads a CONNECT request head from b, the bytes a client
// has sent so far. It is deliberately narrower than HTTP: it accepts only
// heads that net/http parses the same way (FuzzConnectHead checks this
// against http.ReadRequest), so that answering them without net/http cannot
// change what any request means. Everything unusual (another method or
// version, folded or non-ASCII headers, a body, a target that URL parsing
// would rewrite, repeated Host or Proxy-Authorization) is declined and goes
// the general way: net/http reads it (and ServeHTTP hands a CONNECT to the
// same serveConnect).
func parseConnectHead(b []byte) (connectHead, headVerdict) {
	const method = "CONNECT "
	if len(b) < len(method) {
		if bytes.HasPrefix([]byte(method), b) {
			return connectHead{}, headIncomplete
		}
		return connectHead{}, headDeclined
	}
	if string(b[:len(method)]) != method {
		return connectHead{}, headDeclined
	}
	eol := bytes.Index(b, []byte("\r\n"))
	if eol < 0 {
		if bytes.IndexByte(b, '\n') >= 0 {
			return connectHead{}, headDeclined // a bare LF: net/http's to judge
		}
		return connectHead{}, headIncomplete
	}
	const proto = " HTTP/1.1"
	line := b[len(method):eol]
	if !bytes.HasSuffix(line, []byte(proto)) {
		return connectHead{}, headDeclined
	}
	target := line[:len(line)-len(proto)]
	if !validTarget(target) {
		return connectHead{}, headDeclined
	}
	h := connectHead{}
	hosts := 0
	pos := eol + 2
	for {
		end := bytes.Index(b[pos:], []byte("\r\n"))
		if end < 0 {
			// A line still arriving; its CR may be here without its LF.
			if !allBytes(bytes.TrimSuffix(b[pos:], []byte("\r")), isFieldByte) {
				return connectHead{}, headDeclined
			}
			return connectHead{}, headIncomplete
		}
		field := b[pos : pos+end]
		pos += end + 2
		if len(field) == 0 {
			break
		}
		colon := bytes.IndexByte(field, ':')
		if colon <= 0 || !allBytes(field[:colon], isTokenByte) {
			return connectHead{}, headDeclined // includes obs-fold (a leading space)
		}
		name, value := field[:colon], trimOWS(field[colon+1:])
		if !allBytes(value, isFieldByte) {
			return connectHead{}, headDeclined
		}
		switch {
		case equalFoldASCII(name, "proxy-authorization"):
			if h.hasAuth {
				return connectHead{}, headDeclined
			}
			h.hasAuth, h.proxyAuth = true, string(value)
		case equalFoldASCII(name, "host"):
			hosts++
			if hosts > 1 || !allBytes(value, isTargetByte) {
				return connectHead{}, headDeclined
			}
		case equalFoldASCII(name, "content-length"), equalFoldASCII(name, "transfer-encoding"):
			return connectHead{}, headDeclined
		}
	}
	h.authority = string(target)
	h.size = pos
	return h, headAccepted
}

// maxTarget bounds the request target: a DNS name (253), brackets, a colon
// and a port.
const maxTarget = 253 + 2 + 1 + 5

func allBytes(b []byte, ok func(byte) bool) bool {
	for _, c := range b {
		if !ok(c) {
			return false
		}
	}
	return true
}

// validTarget accepts host:port with a DNS-style name or IPv4 literal, or
// [IPv6]:port, as net/url parses them unchanged; anything else (no port,
// unbracketed colons, escapes, userinfo, paths) is net/http's to judge.
func validTarget(t []byte) bool {
	if len(t) == 0 || len(t) > maxTarget || !allBytes(t, isTargetByte) {
		return false
	}
	colon := bytes.LastIndexByte(t, ':')
	if colon < 0 || !validPort(t[colon+1:]) {
		return false
	}
	host := t[:colon]
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		a, err := netip.ParseAddr(string(host[1 : len(host)-1]))
		return err == nil && a.Is6() && a.Zone() == ""
	}
	return len(host) > 0 && bytes.IndexAny(host, ":[]") < 0
}

func validPort(p []byte) bool {
	if len(p) == 0 || len(p) > 5 {
		return false
	}
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isTargetByte: host names, IPv4 and bracketed IPv6 literals and a port.
// No '%' (URL parsing would unescape it), '@' (userinfo) or '/', '?', '#'.
func isTargetByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'
}

// isTokenByte is RFC 9110's tchar.
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isFieldByte: visible ASCII, space and tab. Stricter than HTTP (no
// obs-text), which only sends more heads the general way.
func isFieldByte(c byte) bool { return c == '\t' || ' ' <= c && c < 0x7f }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFoldASCII compares b with lower, which is lower-case ASCII.
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
