package proxyproto

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// v2 builds a v2 header: verCmd, famProto, then the body.
func v2(verCmd, famProto byte, body ...byte) []byte {
	b := append([]byte(nil), v2Sig...)
	b = append(b, verCmd, famProto, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(body)))
	return append(b, body...)
}

// v2Inet builds a v2 PROXY TCP header for src and dst (both v4 or both v6),
// with extra bytes (TLVs) after the addresses.
func v2Inet(src, dst netip.AddrPort, extra ...byte) []byte {
	fam := byte(0x11)
	if src.Addr().Is6() {
		fam = 0x21
	}
	var body []byte
	body = append(body, src.Addr().AsSlice()...)
	body = append(body, dst.Addr().AsSlice()...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, dst.Port())
	return v2(0x21, fam, append(body, extra...)...)
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:40000")
	dst4 = netip.MustParseAddrPort("198.51.100.1:3128")
	src6 = netip.MustParseAddrPort("[2001:db8::10]:40000")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:1080")
)

func TestParseHeaderValid(t *testing.T) {
	tlv := []byte{0xEA, 0x00, 0x03, 'v', 'p', 'c'} // an AWS-style TLV, ignored
	cases := []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 3128\r\n"), Header{Version: 1, Source: src4, Dest: dst4}},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 40000 1080\r\n"), Header{Version: 1, Source: src6, Dest: dst6}},
		{"v1 tcp6 mapped", []byte("PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 1 2\r\n"),
			Header{Version: 1, Source: netip.MustParseAddrPort("[::ffff:192.0.2.10]:1"), Dest: netip.MustParseAddrPort("[2001:db8::1]:2")}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Header{Version: 1, Local: true}},
		{"v1 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
			Header{Version: 1, Source: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Dest: netip.MustParseAddrPort("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}},
		{"v2 tcp4", v2Inet(src4, dst4), Header{Version: 2, Source: src4, Dest: dst4}},
		{"v2 tcp6", v2Inet(src6, dst6), Header{Version: 2, Source: src6, Dest: dst6}},
		{"v2 tcp4 with tlv", v2Inet(src4, dst4, tlv...), Header{Version: 2, Source: src4, Dest: dst4}},
		{"v2 local", v2(0x20, 0x00), Header{Version: 2, Local: true}},
		{"v2 local with addresses", v2(0x20, 0x11, make([]byte, 12)...), Header{Version: 2, Local: true}},
		{"v2 proxy unspec", v2(0x21, 0x00), Header{Version: 2, Local: true}},
		{"v2 proxy unix", v2(0x21, 0x31, make([]byte, 216)...), Header{Version: 2, Local: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			payload := []byte("\x05\x01\x00GET / HTTP/1.1\r\n")
			h, n, err := ParseHeader(append(append([]byte(nil), tc.in...), payload...))
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if n != len(tc.in) {
				t.Errorf("length %d, want %d: the payload must stay the client's", n, len(tc.in))
			}
			if diff := cmp.Diff(tc.want, h, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			// Every strict prefix is incomplete, never an error or a
			// different header: a reader never has to guess.
			for i := 0; i < len(tc.in); i++ {
				_, need, err := ParseHeader(tc.in[:i])
				if !errors.Is(err, ErrIncomplete) {
					t.Fatalf("prefix of %d bytes: %v, want ErrIncomplete", i, err)
				}
				if need <= i {
					t.Fatalf("prefix of %d bytes: needs %d, want more than it has", i, need)
				}
			}
		})
	}
}

func TestParseHeaderInvalid(t *testing.T) {
	long := "PROXY TCP4 " + strings.Repeat("1", 100) + "\r\n"
	cases := []struct {
		name string
		in   []byte
		want error // nil: any malformed-header error
	}{
		{"http", []byte("GET / HTTP/1.1\r\n"), ErrNoHeader},
		{"socks5", []byte{5, 1, 0}, ErrNoHeader},
		{"tls", []byte{0x16, 0x03, 0x01}, ErrNoHeader},
		{"lower-case proxy", []byte("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), ErrNoHeader},
		{"v1 no CR", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), nil},
		{"v1 too long", []byte(long), nil},
		{"v1 no CRLF in 107 bytes", []byte("PROXY UNKNOWN " + strings.Repeat("x", 100)), nil},
		{"v1 tcp5", []byte("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), nil},
		{"v1 tcp4 with v6", []byte("PROXY TCP4 ::1 ::1 1 2\r\n"), nil},
		{"v1 tcp6 with v4", []byte("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), nil},
		{"v1 zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), nil},
		{"v1 port too big", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), nil},
		{"v1 port sign", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), nil},
		{"v1 double space", []byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), nil},
		{"v1 missing field", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), nil},
		{"v1 extra field", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), nil},
		{"v1 leading-zero address", []byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), nil},
		{"v1 stray CR", []byte("PROXY TCP4 1.2.3.4\r 5.6.7.8 1 2\r\n"), nil},
		{"v2 version 1", v2(0x11, 0x11, make([]byte, 12)...), nil},
		{"v2 command 2", v2(0x22, 0x11, make([]byte, 12)...), nil},
		{"v2 family 4", v2(0x21, 0x41, make([]byte, 12)...), nil},
		{"v2 protocol 3", v2(0x21, 0x13, make([]byte, 12)...), nil},
		{"v2 udp", v2(0x21, 0x12, make([]byte, 12)...), nil},
		{"v2 short inet", v2(0x21, 0x11, make([]byte, 11)...), nil},
		{"v2 short inet6", v2(0x21, 0x21, make([]byte, 35)...), nil},
		{"v2 short unix", v2(0x21, 0x31, make([]byte, 215)...), nil},
		{"v2 too long", v2(0x21, 0x11, make([]byte, MaxV2Payload+1)...), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := ParseHeader(tc.in)
			switch {
			case err == nil:
				t.Fatalf("ParseHeader = %+v, %d; want an error", h, n)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error %v, want %v", err, tc.want)
			case tc.want == nil && (errors.Is(err, ErrNoHeader) || errors.Is(err, ErrIncomplete)):
				t.Fatalf("error %v, want a malformed-header error", err)
			}
		})
	}
}

func TestMatchSignature(t *testing.T) {
	cases := []struct {
		in   string
		want sigMatch
	}{
		{"", sigPartial},
		{"P", sigPartial},
		{"PROXY", sigPartial},
		{"PROXY ", sigV1},
		{"\r\n\r\n\x00\r\nQUI", sigPartial},
		{"\r\n\r\n\x00\r\nQUIT\n", sigV2},
		{"POST", sigNone},
		{"\r\n\r\n\x01", sigNone},
		{"\x05", sigNone},
	}
	for _, tc := range cases {
		if got := matchSignature([]byte(tc.in)); got != tc.want {
			t.Errorf("matchSignature(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
