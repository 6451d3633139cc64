package httpcache

import (
	"net/http"
	"strconv"
	"strings"
)

// notModified evaluates a request's If-None-Match, or else its
// If-Modified-Since, against a stored 2xx response (RFC 9111 section 4.3.2,
// RFC 9110 section 13.2.2): true means the client's copy is current and a
// 304 answers it.
func notModified(h http.Header, o *object) bool {
	if o.status < 200 || o.status > 299 {
		return false
	}
	if inm := h.Values("If-None-Match"); len(inm) > 0 {
		return etagListMatches(inm, o.etag)
	}
	ims := h.Values("If-Modified-Since")
	if len(ims) != 1 {
		return false
	}
	since, ok := parseHTTPDate(strings.TrimSpace(ims[0]))
	if !ok {
		return false
	}
	modified := o.lastModified
	if modified.IsZero() {
		modified = o.date
	}
	return !modified.After(since)
}

// etagListMatches reports whether an If-None-Match list names etag, by weak
// comparison (RFC 9110 section 8.8.3.2), or is "*".
func etagListMatches(lines []string, etag string) bool {
	for _, line := range lines {
		for _, t := range splitETags(line) {
			if t == "*" {
				return true
			}
			if etag != "" && weakTag(t) == weakTag(etag) {
				return true
			}
		}
	}
	return false
}

// splitETags splits a list of entity-tags; commas inside the quotes of an
// opaque tag do not split.
func splitETags(s string) []string {
	var tags []string
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return tags
		}
		if s[0] == '*' {
			tags = append(tags, "*")
			s = s[1:]
			continue
		}
		start := 0
		if strings.HasPrefix(s, "W/") {
			start = 2
		}
		if start >= len(s) || s[start] != '"' {
			// Not an entity-tag: skip to the next comma.
			i := strings.IndexByte(s, ',')
			if i < 0 {
				return tags
			}
			s = s[i:]
			continue
		}
		end := strings.IndexByte(s[start+1:], '"')
		if end < 0 {
			return tags
		}
		tags = append(tags, s[:start+end+2])
		s = s[start+end+2:]
	}
}

func weakTag(t string) string { return strings.TrimPrefix(t, "W/") }

// singleRange reads a Range of one byte range (RFC 9110 section 14.1.2)
// satisfiable within size, honouring If-Range. Anything else (several
// ranges, another unit, an unsatisfiable range, an If-Range that does not
// match) is answered with the whole body, as a server may.
func singleRange(spec string, size int64, h http.Header, o *object) (first, last int64, ok bool) {
	if ir := h.Values("If-Range"); len(ir) > 0 {
		v := strings.TrimSpace(ir[0])
		switch {
		case strings.HasPrefix(v, `"`):
			if o.etag == "" || v != o.etag { // strong comparison
				return 0, 0, false
			}
		default:
			t, ok := parseHTTPDate(v)
			if !ok || o.lastModified.IsZero() || !t.Equal(o.lastModified) {
				return 0, 0, false
			}
		}
	}
	unit, set, found := strings.Cut(spec, "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(set, ",") || size == 0 {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(set), "-")
	if !found {
		return 0, 0, false
	}
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == "" { // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || !allDigits(b) {
			return 0, 0, false
		}
		return max(0, size-n), size - 1, true
	}
	f, err := strconv.ParseInt(a, 10, 64)
	if err != nil || !allDigits(a) || f >= size {
		return 0, 0, false
	}
	l := size - 1
	if b != "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || !allDigits(b) || n < f {
			return 0, 0, false
		}
		l = min(n, size-1)
	}
	return f, l, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
