package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// HTTPRule is what an inspect rule says about the HTTP requests seen under
// it: the methods and paths it allows (nil: any) and the request header
// fields it sets. It is part of a compiled Policy and immutable.
type HTTPRule struct {
	methods []string
	paths   []pathPattern
	headers []headerSet
}

// pathPattern is one paths entry: an exact path, or with Prefix every path
// that starts with it ("/api/v2/*" is the prefix "/api/v2/").
type pathPattern struct {
	path   string
	prefix bool
}

// headerSet is one request_headers_add entry, its value split into
// literal text and placeholders.
type headerSet struct {
	name  string
	parts []templatePart
}

type templatePart struct {
	lit   string
	field placeholder // placeholderNone: lit
}

type placeholder uint8

const (
	placeholderNone placeholder = iota
	placeholderGroup
	placeholderUser
	placeholderClient
	placeholderRule
	placeholderHost
)

// Placeholders are the names request_headers_add values may use, as
// {name}: the decision's group, rule and host, the client's user name and
// address.
var placeholders = map[string]placeholder{
	"group":  placeholderGroup,
	"user":   placeholderUser,
	"client": placeholderClient,
	"rule":   placeholderRule,
	"host":   placeholderHost,
}

// reservedHeaders may not be set by request_headers_add: they frame the
// message or route it (RFC 9110 section 7.6.1 hop-by-hop fields, Host,
// Content-Length), and Proxy-Authorization carries credentials.
var reservedHeaders = []string{
	"Host", "Content-Length", "Transfer-Encoding", "Connection", "Proxy-Connection",
	"Keep-Alive", "Te", "Trailer", "Upgrade", "Proxy-Authorization", "Proxy-Authenticate",
	"Expect",
}

var (
	errPathNotAbsolute = errors.New("a path starts with /")
	errPathWildcard    = errors.New(`"*" only as the last character, after a "/": "/api/*"`)
	errPathCanonical   = errors.New("not a canonical path (dot segments, empty segments, backslashes or percent-escapes never match a request)")
)

func (c *compiler) httpRule(path string, r Rule) *HTTPRule {
	if len(r.Methods) == 0 && len(r.Paths) == 0 && len(r.RequestHeadersAdd) == 0 {
		return nil
	}
	h := &HTTPRule{}
	for i, m := range r.Methods {
		p := fmt.Sprintf("%s.methods[%d]", path, i)
		switch {
		case m == "" || !httpguts.ValidHeaderFieldName(m):
			c.errorf(p, "%q: not an HTTP method token", m)
		case m != strings.ToUpper(m):
			c.errorf(p, "%q: methods are case-sensitive and standard ones are upper case: %q", m, strings.ToUpper(m))
		case m == "CONNECT":
			c.errorf(p, "CONNECT is never forwarded inside an inspected session")
		case !slices.Contains(h.methods, m):
			h.methods = append(h.methods, m)
		}
	}
	for i, s := range r.Paths {
		pp, err := parsePathPattern(s)
		if err != nil {
			c.errorf(fmt.Sprintf("%s.paths[%d]", path, i), "%q: %v", s, err)
			continue
		}
		h.paths = append(h.paths, pp)
	}
	names := make([]string, 0, len(r.RequestHeadersAdd))
	for name := range r.RequestHeadersAdd {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := path + ".request_headers_add." + name
		if !httpguts.ValidHeaderFieldName(name) {
			c.errorf(p, "%q: not a header field name", name)
			continue
		}
		canon := canonicalHeader(name)
		if slices.Contains(reservedHeaders, canon) {
			c.errorf(p, "%s: egressd does not set this field (it frames or routes the request)", canon)
			continue
		}
		parts, err := parseTemplate(r.RequestHeadersAdd[name])
		if err != nil {
			c.errorf(p, "%v", err)
			continue
		}
		h.headers = append(h.headers, headerSet{name: canon, parts: parts})
	}
	return h
}

// parsePathPattern parses one paths entry.
func parsePathPattern(s string) (pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, errPathNotAbsolute
	}
	p := pathPattern{path: s}
	if strings.HasSuffix(s, "/*") {
		p.path, p.prefix = s[:len(s)-1], true
	}
	if strings.Contains(p.path, "*") {
		return pathPattern{}, errPathWildcard
	}
	if !canonicalPath(p.path) || strings.ContainsRune(p.path, '%') {
		return pathPattern{}, errPathCanonical
	}
	return p, nil
}

// parseTemplate splits a request_headers_add value into literal text and
// {placeholders}. A brace that does not open a known placeholder is an
// error, so a typo ({grup}) is found at load time.
func parseTemplate(v string) ([]templatePart, error) {
	var parts []templatePart
	for len(v) > 0 {
		i := strings.IndexAny(v, "{}")
		if i < 0 {
			parts = append(parts, templatePart{lit: v})
			break
		}
		if i > 0 {
			parts = append(parts, templatePart{lit: v[:i]})
		}
		if v[i] == '}' {
			return nil, errors.New(`"}" without "{"`)
		}
		j := strings.IndexByte(v[i:], '}')
		if j < 0 {
			return nil, errors.New(`"{" without "}"`)
		}
		name := v[i+1 : i+j]
		ph, ok := placeholders[name]
		if !ok {
			return nil, fmt.Errorf("{%s}: unknown placeholder (known: {group}, {user}, {client}, {rule}, {host})", name)
		}
		parts = append(parts, templatePart{field: ph})
		v = v[i+j+1:]
	}
	for _, p := range parts {
		if p.field == placeholderNone && !validFieldText(p.lit) {
			return nil, errors.New("control characters are not allowed in a header value")
		}
	}
	return parts, nil
}

// canonicalPath reports whether a decoded path is in the one form paths are
// matched in: absolute, with no empty, "." or ".." segment and no
// backslash or control character. Origins disagree on what such paths
// mean (some fold "\" into "/", most resolve ".."), so a request with one
// never matches a paths entry.
func canonicalPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	rest := p[1:]
	for rest != "" {
		seg := rest
		next := ""
		if k := strings.IndexByte(rest, '/'); k >= 0 {
			seg, next = rest[:k], rest[k+1:]
			if seg == "" {
				return false // "//"
			}
		}
		if seg == "." || seg == ".." {
			return false
		}
		rest = next
	}
	return true
}

func (pp pathPattern) matches(p string) bool {
	if pp.prefix {
		return strings.HasPrefix(p, pp.path)
	}
	return p == pp.path
}

// CheckRequest judges one HTTP request seen under d's rule (forwarded, or
// inside an inspected tunnel): its method must be in the rule's methods and
// its path in the rule's paths, when the rule lists them. escapedPath is the
// request target's path as sent, without the query; it is matched
// percent-decoded, and under a rule with paths a path that is not canonical
// (see canonicalPath) or escapes a "/" or "\" (%2F, %5C) matches nothing.
// The verdict is Allow with ReasonNone, or for ReasonNotAllowed the
// client's mode's (Report in report mode).
func (p *Policy) CheckRequest(d Decision, method, escapedPath string) (Verdict, Reason) {
	h := d.HTTP
	if h == nil {
		return Allow, ReasonNone
	}
	if h.methods != nil && !slices.Contains(h.methods, method) {
		return enforce(modeOf(d, p), ReasonNotAllowed), ReasonNotAllowed
	}
	if h.paths != nil && !h.pathAllowed(escapedPath) {
		return enforce(modeOf(d, p), ReasonNotAllowed), ReasonNotAllowed
	}
	return Allow, ReasonNone
}

func (h *HTTPRule) pathAllowed(escaped string) bool {
	if escapedSeparator(escaped) {
		return false
	}
	decoded, err := url.PathUnescape(escaped)
	if err != nil || !canonicalPath(decoded) {
		return false
	}
	for _, pp := range h.paths {
		if pp.matches(decoded) {
			return true
		}
	}
	return false
}

// escapedSeparator reports a percent-escaped "/" or "\" in a path: origins
// split such a path in different places.
func escapedSeparator(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		switch p[i+1 : i+3] {
		case "2f", "2F", "5c", "5C":
			return true
		}
	}
	return false
}

// CheckHost judges the Host of an HTTP request inside a tunnel decided as
// d (inspected TLS: d.Host is the SNI): it must name d.Host, and when it
// carries a port, d.Port. An empty host (HTTP/1.0) names nothing else and
// passes. The verdict is Allow, or for ReasonHostMismatch the client's
// mode's (Report in report mode).
func (p *Policy) CheckHost(d Decision, hostport string) (Verdict, Reason) {
	if hostport == "" {
		return Allow, ReasonNone
	}
	host, port, ok := splitHostHeader(hostport)
	if !ok || port != "" && port != strconv.Itoa(int(d.Port)) {
		return enforce(modeOf(d, p), ReasonHostMismatch), ReasonHostMismatch
	}
	norm, addr, isIP, err := NormalizeHost(host)
	switch {
	case err != nil:
	case d.IsIP && isIP:
		if da, derr := netip.ParseAddr(d.Host); derr == nil && addr.Unmap() == da.Unmap() {
			return Allow, ReasonNone
		}
	case !d.IsIP && !isIP && norm == d.Host:
		return Allow, ReasonNone
	}
	return enforce(modeOf(d, p), ReasonHostMismatch), ReasonHostMismatch
}

// splitHostHeader splits a Host value: a name or IPv4 address with an
// optional port, or a bracketed IPv6 address with an optional port.
func splitHostHeader(v string) (host, port string, ok bool) {
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest := v[1:end], v[end+1:]
		switch {
		case rest == "":
			return host, "", true
		case rest[0] == ':' && len(rest) > 1:
			return host, rest[1:], true
		}
		return "", "", false
	}
	switch strings.Count(v, ":") {
	case 0:
		return v, "", true
	case 1:
		i := strings.IndexByte(v, ':')
		if i == len(v)-1 {
			return "", "", false
		}
		return v[:i], v[i+1:], true
	}
	return "", "", false
}

// SetHeaders calls set for each request header field the rule sets, its
// placeholders filled from d and the client c. Values are cleaned of
// control characters (a user name may hold any byte).
func (h *HTTPRule) SetHeaders(d Decision, c Client, set func(name, value string)) {
	if h == nil {
		return
	}
	for _, hs := range h.headers {
		var b strings.Builder
		for _, p := range hs.parts {
			switch p.field {
			case placeholderNone:
				b.WriteString(p.lit)
			case placeholderGroup:
				writeFieldText(&b, d.Group)
			case placeholderUser:
				writeFieldText(&b, c.User)
			case placeholderClient:
				if c.Addr.IsValid() {
					b.WriteString(c.Addr.Unmap().String())
				}
			case placeholderRule:
				writeFieldText(&b, d.Rule)
			case placeholderHost:
				writeFieldText(&b, d.Host)
			}
		}
		set(hs.name, b.String())
	}
}

// HasHeaders reports whether the rule sets any request header field.
func (h *HTTPRule) HasHeaders() bool { return h != nil && len(h.headers) > 0 }

// validFieldText reports whether s may appear in a header field value
// (RFC 9110 section 5.5: no control characters but HTAB).
func validFieldText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// writeFieldText writes s with each control character replaced by "?".
func writeFieldText(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			c = '?'
		}
		b.WriteByte(c)
	}
}

// canonicalHeader is the canonical form of a header field name
// (textproto.CanonicalMIMEHeaderKey's, without importing net/textproto
// for one function).
func canonicalHeader(s string) string {
	b := []byte(strings.ToLower(s))
	upper := true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}
