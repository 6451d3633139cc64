package httpcache

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzCacheControl: any field value parses without panicking; every
// delta-seconds value is unset or within [0, 2^31]; text inside a quoted
// string is never taken as a directive; a directive's first occurrence
// wins over anything appended after it.
func FuzzCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "MaX-AgE=60, public", `max-age="60"`, "max-age=-1", "max-age=1.5", "max-age=99999999999",
		`no-cache="Set-Cookie, X-A", private="X-B"`, `foo="max-age=8", max-age=1`, "max-age=1, foo=\"max-age=8\"",
		"s-maxage=10, max-age=100, must-revalidate, proxy-revalidate", "no-store, must-understand",
		"max-stale, min-fresh=5, only-if-cached", "stale-while-revalidate=30, stale-if-error=60", `a="\"", max-age=3`,
		"max-age=003600", "max-age='3600'", ",,,", "=", `"`, "max-age=1 2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := parseCacheControl(http.Header{"Cache-Control": {s}})
		for _, v := range []int64{d.maxAge, d.sMaxAge, d.maxStale, d.minFresh, d.staleWhileRevalidate, d.staleIfError} {
			if v != unset && (v < 0 || v > maxDelta) {
				t.Fatalf("%q: delta %d out of range", s, v)
			}
		}
		quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
		q := parseCacheControl(http.Header{"Cache-Control": {`x="` + quoted + `"`}})
		if q.maxAge != unset || q.sMaxAge != unset || q.noStore || q.noCache || q.private || q.public || q.mustRevalidate {
			t.Fatalf("%q inside a quoted string was taken as directives: %+v", s, q)
		}
		if d.maxAge != unset {
			again := parseCacheControl(http.Header{"Cache-Control": {s, "max-age=12345"}})
			if again.maxAge != d.maxAge {
				t.Fatalf("%q then max-age=12345: max-age %d, want the first, %d", s, again.maxAge, d.maxAge)
			}
		}
		parseAge(http.Header{"Age": {s}})
		targetedDirectives(http.Header{"Cdn-Cache-Control": {s}})
	})
}

// FuzzHTTPDate: any string parses without panicking; a date that parses is
// UTC and survives formatting and parsing again; an IMF-fixdate that parses
// means what net/http reads in it.
func FuzzHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"sun, 06 nov 1994 08:49:37 gmt", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 94 08:49:37 GMT",
		"Sun 06 Nov 1994 08:49:37 GMT", "Sun, 06  Nov 1994 08:49:37 GMT", "Sun, 06-Nov-1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 08.49.37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT", "Thu, 31 Feb 2026 00:00:00 GMT",
		"Fri, 31 Dec 9999 23:59:60 GMT", "0", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, ok := parseHTTPDate(s)
		if !ok {
			return
		}
		if tm.Location() != time.UTC {
			t.Fatalf("%q: %v is not UTC", s, tm)
		}
		back, ok := parseHTTPDate(string(appendHTTPDate(nil, tm)))
		if !ok || !back.Equal(tm) {
			t.Fatalf("%q: %v does not survive formatting (%v, %v)", s, tm, back, ok)
		}
		if len(s) == 29 && s[3] == ',' && strings.HasSuffix(s, "GMT") {
			std, err := time.Parse(http.TimeFormat, s)
			if err == nil && !std.Equal(tm) && !strings.Contains(s, ":60 ") {
				t.Fatalf("%q: %v, net/http reads %v", s, tm, std)
			}
		}
	})
}

// FuzzVaryKey: Vary and request values parse without panicking; the key
// does not depend on how a list is split across field lines or on the
// whitespace around its members; a field sent empty and one not sent
// differ.
func FuzzVaryKey(f *testing.F) {
	for _, s := range [][2]string{
		{"Accept-Encoding", "gzip, br"}, {"accept-language, X-Foo", " en ,   de"}, {"*", "a"}, {", *", ""},
		{"Foo, Foo", "1,2"}, {"", ""}, {"Accept-Language", "fr;q=0.5, DE;q=1.0"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, vary, value string) {
		names, _ := varyNames(http.Header{"Vary": {vary}})
		if len(names) == 0 {
			return
		}
		one := http.Header{}
		split := http.Header{}
		for _, n := range names {
			one[http.CanonicalHeaderKey(n)] = []string{value}
			split[http.CanonicalHeaderKey(n)] = strings.Split(value, ",")
		}
		if a, b := varyKey(one, names), varyKey(split, names); a != b {
			t.Fatalf("Vary %q, value %q: one line %q, split lines %q", vary, value, a, b)
		}
		spaced := http.Header{}
		for k, vs := range one {
			spaced[k] = []string{" " + strings.ReplaceAll(vs[0], ",", " , ") + "\t"}
		}
		if a, b := varyKey(one, names), varyKey(spaced, names); a != b {
			t.Fatalf("Vary %q, value %q: whitespace around members changed the key: %q, %q", vary, value, a, b)
		}
		empty := http.Header{}
		for _, n := range names {
			empty[http.CanonicalHeaderKey(n)] = []string{""}
		}
		if varyKey(empty, names) == varyKey(http.Header{}, names) {
			t.Fatalf("Vary %q: an empty field and an absent one have one key", vary)
		}
	})
}

// FuzzConditional: If-None-Match lists and Range values parse without
// panicking, and a range served lies within the body.
func FuzzConditional(f *testing.F) {
	for _, s := range []string{
		`"a", W/"b", *`, `W/"x"`, `"a,b", "c"`, `junk, "a"`, "bytes=2-4", "bytes=-3", "bytes=7-", "bytes=0-1,4-5",
		"bytes=9999999999999999999-", "items=1-2", "bytes= 1 - 2 ",
	} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, s string, size int64) {
		o := &object{status: 200, etag: `"a"`}
		etagListMatches([]string{s}, o.etag)
		notModified(http.Header{"If-None-Match": {s}}, o)
		if size < 0 {
			size = -size
		}
		first, last, ok := singleRange(s, size, http.Header{}, o)
		if ok && (first < 0 || first > last || last >= size) {
			t.Fatalf("Range %q of %d bytes: %d-%d", s, size, first, last)
		}
	})
}
