package proxyproto

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

// FuzzParseHeader: ParseHeader never panics and is self-consistent: a
// header's length is within the input, the header alone parses the same,
// and every strict prefix of it is incomplete (so a reader that stops at
// the first complete parse never reads a byte of the client's payload).
// Incomplete inputs ask for more bytes than they have, within bounds.
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.10 198.51.100.1 40000 3128\r\nGET /",
		"PROXY TCP6 2001:db8::10 2001:db8::1 40000 1080\r\n\x05\x01\x00",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4",
		"GET / HTTP/1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Add(v2Inet(src4, dst4, 0xEA, 0, 1, 'x'))
	f.Add(v2Inet(src6, dst6))
	f.Add(v2(0x20, 0x00))
	f.Add(v2(0x21, 0x31, make([]byte, 216)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		switch {
		case errors.Is(err, ErrNoHeader):
			if m := matchSignature(b); m != sigNone {
				t.Fatalf("ErrNoHeader for input matching signature %d", m)
			}
			return
		case errors.Is(err, ErrIncomplete):
			if n <= len(b) || n > v2Fixed+MaxV2Payload {
				t.Fatalf("incomplete %d bytes asks for %d", len(b), n)
			}
			return
		case err != nil:
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		h2, n2, err := ParseHeader(b[:n])
		if err != nil || n2 != n || h2 != h {
			t.Fatalf("header alone parses differently: %+v %d %v vs %+v %d", h2, n2, err, h, n)
		}
		for i := 0; i < n; i++ {
			if _, _, err := ParseHeader(b[:i]); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("prefix %d of a %d-byte header: %v", i, n, err)
			}
		}
		if h.Local != !h.Source.IsValid() {
			t.Fatalf("Local %v with source %v", h.Local, h.Source)
		}
	})
}

// FuzzRoundTrip: what a load balancer encodes, v1 or v2, parses back to the
// same addresses.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{192, 0, 2, 10}, []byte{198, 51, 100, 1}, uint16(40000), uint16(3128))
	f.Add(make([]byte, 16), make([]byte, 16), uint16(0), uint16(65535))
	f.Fuzz(func(t *testing.T, s, d []byte, sp, dp uint16) {
		sa, ok1 := netip.AddrFromSlice(s)
		da, ok2 := netip.AddrFromSlice(d)
		if !ok1 || !ok2 || sa.Is4() != da.Is4() {
			return
		}
		src, dst := netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp)
		want := Header{Version: 2, Source: src, Dest: dst}
		if h, _, err := ParseHeader(v2Inet(src, dst)); err != nil || h != want {
			t.Fatalf("v2 %v %v: %+v %v", src, dst, h, err)
		}
		proto := "TCP4"
		if sa.Is6() {
			proto = "TCP6"
		}
		line := fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, sa, da, sp, dp)
		want.Version = 1
		if h, n, err := ParseHeader([]byte(line)); err != nil || h != want || n != len(line) {
			t.Fatalf("v1 %q: %+v %d %v", line, h, n, err)
		}
	})
}
