package httpcache

import (
	"net/http"
	"slices"
	"strings"
)

// varyNames returns the request field names a response's Vary lists
// (RFC 9111 section 4.1), lowercased, sorted and without duplicates, and
// star when any member is "*" (the response then matches no later request).
func varyNames(h http.Header) (names []string, star bool) {
	for _, line := range h.Values("Vary") {
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			switch {
			case f == "":
			case f == "*":
				star = true
			default:
				names = append(names, strings.ToLower(f))
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), star
}

// varyKey is the secondary cache key of req for the given field names: each
// name with its normalized value, or a marker that the request did not send
// it (absent and empty differ: RFC 9111 section 4.1 compares what was sent).
// Two requests select the same stored response when their keys are equal.
func varyKey(req http.Header, names []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		vals := req.Values(n) // canonicalizes n
		if len(vals) == 0 {
			b.WriteString("\x00!\n")
			continue
		}
		b.WriteString("\x00=")
		normalizeList(&b, n, vals)
		b.WriteByte('\n')
	}
	return b.String()
}

// normalizeList writes a field's lines as one list with the whitespace
// around members removed and empty members dropped, the normalization
// RFC 9111 section 4.1 allows for any field (combining lines, whitespace).
// Inside a member of an unknown field nothing changes: a byte there may
// matter to the origin. Accept-Language is a case-insensitive set of
// ranges, so its members also lose their inner whitespace, are lowercased
// and are sorted, each keeping its own weight.
func normalizeList(b *strings.Builder, name string, vals []string) {
	var members []string
	for _, v := range vals {
		for _, m := range strings.Split(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				members = append(members, m)
			}
		}
	}
	if name == "accept-language" {
		for i, m := range members {
			members[i] = strings.ToLower(strings.Join(strings.Fields(strings.ReplaceAll(m, ";", " ; ")), ""))
		}
		slices.Sort(members)
	}
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m)
	}
}
