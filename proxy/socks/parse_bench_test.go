package socks

import (
	"bytes"
	"testing"

	socks5 "github.com/armon/go-socks5"
)

// BenchmarkParseRequest: the state machine's request parser against
// go-socks5's NewRequest on the same bytes (a CONNECT by name), the cost of
// using the library's parser on every tunnel.
func BenchmarkParseRequest(b *testing.B) {
	in := reqDomain(cmdConnect, "origin.bench.test", 443)
	b.Run("parseRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, n := parseRequest(in); n != len(in) {
				b.Fatal(n)
			}
		}
	})
	b.Run("go-socks5 NewRequest", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(in)
		for b.Loop() {
			r.Reset(in)
			if _, err := socks5.NewRequest(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
