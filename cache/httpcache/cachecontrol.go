package httpcache

import (
	"net/http"
	"strings"
)

// maxDelta is the largest delta-seconds value the cache represents: RFC 9111
// section 1.2.2 says a larger one is to be taken as 2^31.
const maxDelta = 1 << 31

// unset marks an absent delta-seconds directive.
const unset = -1

// directives is a parsed Cache-Control field (RFC 9111 section 5.2), request
// or response. Delta-seconds values are unset when absent; a directive whose
// argument is not delta-seconds counts as present with the value 0 (so
// `max-age=-1` is stale, never fresh).
type directives struct {
	maxAge, sMaxAge           int64
	maxStale                  int64 // request; maxStaleAny when given without a value
	minFresh                  int64 // request
	staleWhileRevalidate      int64 // response, RFC 5861
	staleIfError              int64 // request or response, RFC 5861
	maxStaleAny               bool
	noCache, noStore, private bool
	public, mustRevalidate    bool
	proxyRevalidate           bool
	mustUnderstand            bool
	onlyIfCached              bool
	immutable                 bool
	// noCacheFields and privateFields are the field names of the qualified
	// forms (`private="Set-Cookie"`), lowercased. A qualified no-cache or
	// private also sets noCacheQualified or privateQualified, not noCache
	// or private.
	noCacheFields, privateFields       []string
	noCacheQualified, privateQualified bool
	hasExtension                       bool // a directive this cache does not know
}

// parseCacheControl parses every Cache-Control line of h as one list. Names
// are case-insensitive; arguments may be tokens or quoted strings; commas
// inside quoted strings do not split. The first occurrence of a directive
// wins, as RFC 9111 section 4.2.1 allows.
func parseCacheControl(h http.Header) directives {
	d := directives{maxAge: unset, sMaxAge: unset, maxStale: unset, minFresh: unset,
		staleWhileRevalidate: unset, staleIfError: unset}
	seen := 0 // bit set of directives already taken
	for _, line := range h.Values("Cache-Control") {
		parseDirectives(line, func(name, arg string, hasArg, quoted bool) {
			bit, known := directiveBits[name]
			if !known {
				d.hasExtension = true
				return
			}
			if seen&bit != 0 {
				return
			}
			seen |= bit
			switch name {
			case "max-age":
				d.maxAge = deltaSeconds(arg, hasArg)
			case "s-maxage":
				d.sMaxAge = deltaSeconds(arg, hasArg)
			case "max-stale":
				if hasArg {
					d.maxStale = deltaSeconds(arg, hasArg)
				} else {
					d.maxStaleAny = true
				}
			case "min-fresh":
				d.minFresh = deltaSeconds(arg, hasArg)
			case "stale-while-revalidate":
				d.staleWhileRevalidate = deltaSeconds(arg, hasArg)
			case "stale-if-error":
				d.staleIfError = deltaSeconds(arg, hasArg)
			case "no-cache":
				if hasArg {
					d.noCacheFields = fieldNames(arg)
					d.noCacheQualified = true
				} else {
					d.noCache = true
				}
			case "private":
				if hasArg {
					d.privateFields = fieldNames(arg)
					d.privateQualified = true
				} else {
					d.private = true
				}
			case "no-store":
				d.noStore = true
			case "public":
				d.public = true
			case "must-revalidate":
				d.mustRevalidate = true
			case "proxy-revalidate":
				d.proxyRevalidate = true
			case "must-understand":
				d.mustUnderstand = true
			case "only-if-cached":
				d.onlyIfCached = true
			case "immutable":
				d.immutable = true
			}
		})
	}
	return d
}

var directiveBits = map[string]int{
	"max-age": 1 << 0, "s-maxage": 1 << 1, "max-stale": 1 << 2, "min-fresh": 1 << 3,
	"stale-while-revalidate": 1 << 4, "stale-if-error": 1 << 5, "no-cache": 1 << 6,
	"private": 1 << 7, "no-store": 1 << 8, "public": 1 << 9, "must-revalidate": 1 << 10,
	"proxy-revalidate": 1 << 11, "must-understand": 1 << 12, "only-if-cached": 1 << 13,
	"immutable": 1 << 14, "no-transform": 1 << 15,
}

// parseDirectives calls fn for each `name[=arg]` element of a comma list,
// name lowercased, quoted arguments unquoted. Anything malformed after a
// name (junk before the next comma) is skipped, never taken as a directive.
func parseDirectives(s string, fn func(name, arg string, hasArg, quoted bool)) {
	i := 0
	for i < len(s) {
		// Skip separators and whitespace before a name.
		for i < len(s) && (s[i] == ',' || s[i] == ' ' || s[i] == '\t') {
			i++
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		name := s[start:i]
		j := i
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		var arg string
		var hasArg, quoted, bad bool
		if j < len(s) && s[j] == '=' {
			hasArg = true
			j++
			for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
				j++
			}
			if j < len(s) && s[j] == '"' {
				arg, j, bad = quotedString(s, j)
				quoted = true
			} else {
				a := j
				for j < len(s) && isTokenChar(s[j]) {
					j++
				}
				arg = s[a:j]
			}
		}
		i = j
		// Whatever follows before the next comma makes the element malformed.
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i < len(s) && s[i] != ',' {
			bad = true
			i = skipElement(s, i)
		}
		if name == "" {
			if i == start { // no progress: a lone separator-less junk byte
				i++
			}
			continue
		}
		if !bad {
			fn(strings.ToLower(name), arg, hasArg, quoted)
		}
	}
}

// skipElement returns the index of the comma ending the element that
// contains s[i] (or len(s)), stepping over quoted strings.
func skipElement(s string, i int) int {
	for i < len(s) && s[i] != ',' {
		if s[i] == '"' {
			_, i, _ = quotedString(s, i)
			continue
		}
		i++
	}
	return i
}

// quotedString reads the quoted-string starting at s[i] == '"'. It returns
// the unescaped content and the index after the closing quote; bad is set
// when the string does not end.
func quotedString(s string, i int) (string, int, bool) {
	var b strings.Builder
	i++
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, false
		case c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i += 2
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), i, true
}

// isTokenChar reports whether c is a tchar (RFC 9110 section 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// deltaSeconds parses a delta-seconds argument (RFC 9111 section 1.2.2):
// digits only, leading zeros allowed, values past 2^31 taken as 2^31. A
// missing or malformed argument is 0: the directive is there, and a cache
// that cannot read it must not treat the response as fresh for longer.
func deltaSeconds(arg string, hasArg bool) int64 {
	if !hasArg || arg == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(arg); i++ {
		c := arg[i]
		if c < '0' || c > '9' {
			return 0
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, maxDelta)
}

// fieldNames splits a quoted list of field names, lowercased.
func fieldNames(arg string) []string {
	var names []string
	for _, f := range strings.Split(arg, ",") {
		if f = strings.TrimSpace(f); f != "" {
			names = append(names, strings.ToLower(f))
		}
	}
	return names
}

// parseAge reads the Age field (RFC 9111 section 5.1): the first line's first
// list member, digits only; anything else is ignored (0, false).
func parseAge(h http.Header) (int64, bool) {
	v := h.Values("Age")
	if len(v) == 0 {
		return 0, false
	}
	s := v[0]
	if i := strings.IndexByte(s, ','); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	return deltaSeconds(s, true), true
}

// targetedDirectives reads CDN-Cache-Control (RFC 9213). That field is
// addressed to CDNs, which egressd is not, so it never permits more than
// the response's own Cache-Control and Expires do: a response an origin
// lets CDNs keep may still be private to one client of a forward proxy.
// The cache takes from it what restricts (no-store, private, no-cache, a
// shorter max-age: the origin's word that shared caches in front of it must
// not keep or reuse the response) and, for a response that says nothing
// about its freshness otherwise, max-age as the heuristic freshness RFC
// 9111 section 4.2.2 leaves to the cache (a better guess than 10% of the
// time since Last-Modified: the origin's own). max-age counts only as a
// Structured Fields integer (unquoted digits).
func targetedDirectives(h http.Header) directives {
	d := directives{maxAge: unset}
	for _, line := range h.Values("Cdn-Cache-Control") {
		parseDirectives(line, func(name, arg string, hasArg, quoted bool) {
			switch name {
			case "no-store":
				d.noStore = true
			case "private":
				d.private = true
			case "no-cache":
				d.noCache = true
			case "max-age":
				if hasArg && !quoted && allDigits(arg) && d.maxAge == unset {
					d.maxAge = deltaSeconds(arg, true)
				}
			}
		})
	}
	return d
}
