package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/cryptobyte"

	"github.com/egressd/egressd/proxy/sni/snitest"
)

// clientHello returns a real crypto/tls ClientHello for serverName.
func clientHello(serverName string, alpn ...string) []byte {
	return snitest.Hello(&tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: alpn})
}

// fragment re-frames a single-record ClientHello into records of at most n
// payload bytes.
func fragment(hello []byte, n int) []byte {
	body := hello[5:]
	var out []byte
	for len(body) > 0 {
		k := min(n, len(body))
		out = append(out, 0x16, 0x03, 0x01, byte(k>>8), byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	return out
}

// rebuild frames a handshake message body (after the 4-byte header) as a
// ClientHello in one record, fixing the lengths.
func rebuild(body []byte) []byte {
	msg := append([]byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{0x16, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// withExtension returns hello with ext (type, length and data) appended to
// its extension list.
func withExtension(t testing.TB, hello, ext []byte) []byte {
	t.Helper()
	body := append([]byte{}, hello[recordHeaderLen+handshakeHeaderLen:]...)
	p := 2 + 32
	p += 1 + int(body[p])                       // session id
	p += 2 + (int(body[p])<<8 | int(body[p+1])) // cipher suites
	p += 1 + int(body[p])                       // compression
	n := (int(body[p])<<8 | int(body[p+1])) + len(ext)
	body[p], body[p+1] = byte(n>>8), byte(n)
	return rebuild(append(body, ext...))
}

// sniExt is a raw server_name extension with the given (type, name) entries.
func sniExt(entries ...any) []byte {
	var b cryptobyte.Builder
	b.AddUint16(extServerName)
	b.AddUint16LengthPrefixed(func(e *cryptobyte.Builder) {
		e.AddUint16LengthPrefixed(func(l *cryptobyte.Builder) {
			for i := 0; i < len(entries); i += 2 {
				l.AddUint8(uint8(entries[i].(int)))
				l.AddUint16LengthPrefixed(func(n *cryptobyte.Builder) { n.AddBytes([]byte(entries[i+1].(string))) })
			}
		})
	})
	return b.BytesOrPanic()
}

// bareHello is a minimal TLS 1.2 ClientHello with the given extensions
// (nil: no extension block at all).
func bareHello(exts []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0xc0, 0x2f) // one cipher suite
	body = append(body, 1, 0)             // null compression
	if exts != nil {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	return rebuild(body)
}

func TestParse(t *testing.T) {
	t.Parallel()
	withSNI := clientHello("example.com", "h2", "http/1.1")
	ech := snitest.Hello(&tls.Config{
		ServerName:                     "inner.example",
		MinVersion:                     tls.VersionTLS13,
		EncryptedClientHelloConfigList: snitest.ECHConfigList(t, "public.example"),
		InsecureSkipVerify:             true,
	})
	exampleInfo := Info{ServerName: "example.com", HasSNI: true, ALPN: []string{"h2", "http/1.1"}, Version: tls.VersionTLS13}
	big := withExtension(t, withSNI, append([]byte{0xff, 0xaa, 0x40, 0x00}, make([]byte, 0x4000)...))
	cases := []struct {
		name    string
		in      []byte
		want    Info
		wantErr error
	}{
		{"sni and alpn", withSNI, exampleInfo, nil},
		{"no sni", clientHello(""), Info{Version: tls.VersionTLS13}, nil},
		{"ip server name sends no sni", clientHello("192.0.2.1"), Info{Version: tls.VersionTLS13}, nil},
		{"single alpn", clientHello("a.example", "h2"), Info{ServerName: "a.example", HasSNI: true, ALPN: []string{"h2"}, Version: tls.VersionTLS13}, nil},
		{"ech outer name", ech, Info{ServerName: "public.example", HasSNI: true, ECH: true, Version: tls.VersionTLS13}, nil},
		{"tls 1.2 without extensions", bareHello(nil), Info{Version: tls.VersionTLS12}, nil},
		{"tls 1.2 client", snitest.Hello(&tls.Config{ServerName: "a.example", MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}), Info{ServerName: "a.example", HasSNI: true, Version: tls.VersionTLS12}, nil},
		{"supported_versions with grease", bareHello([]byte{0, 43, 0, 7, 6, 0x7a, 0x7a, 3, 4, 3, 3}), Info{Version: tls.VersionTLS13}, nil},
		{"supported_versions only grease", bareHello([]byte{0, 43, 0, 3, 2, 0xaa, 0xaa}), Info{Version: tls.VersionTLS12}, nil},
		{"empty extension block", bareHello([]byte{}), Info{Version: tls.VersionTLS12}, nil},
		{"fragmented 100", fragment(withSNI, 100), exampleInfo, nil},
		{"fragmented 1", fragment(withSNI, 1), exampleInfo, nil},
		{"fragmented 3 (header split)", fragment(withSNI, 3), exampleInfo, nil},
		{"fragmented 16K over 2 records", fragment(big, MaxRecordLen), exampleInfo, nil},
		{"trailing bytes ignored", append(append([]byte{}, withSNI...), 0x17, 3, 3, 0, 1, 9), exampleInfo, nil},
		{"non-hostname name type skipped", bareHello(sniExt(1, "x", 0, "b.example")), Info{ServerName: "b.example", HasSNI: true, Version: tls.VersionTLS12}, nil},

		{"http", []byte("GET / HTTP/1.1\r\n"), Info{}, ErrNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), Info{}, ErrNotTLS},
		{"one http byte", []byte("C"), Info{}, ErrNotTLS},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x00, 0x02}, Info{}, ErrNotTLS},
		{"bad record version", []byte{0x16, 9}, Info{}, ErrNotTLS},
		{"alert record", []byte{0x15, 3, 1, 0, 2, 2, 40}, Info{}, ErrNotTLS},
		{"empty", nil, Info{}, ErrIncomplete},
		{"header only", withSNI[:5], Info{}, ErrIncomplete},
		{"truncated", withSNI[:40], Info{}, ErrIncomplete},
		{"truncated fragmented", fragment(withSNI, 100)[:300], Info{}, ErrIncomplete},

		{"not a client hello", []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, Info{}, ErrMalformed},
		{"zero length record", []byte{0x16, 3, 1, 0, 0}, Info{}, ErrMalformed},
		{"oversize record", []byte{0x16, 3, 1, 0x40, 0x01}, Info{}, ErrMalformed},
		{"interleaved record", append(fragment(withSNI, 100)[:105], 0x17, 3, 3, 0, 1, 0), Info{}, ErrMalformed},
		{"hello too large", []byte{0x16, 3, 1, 0, 4, 1, 1, 0, 1}, Info{}, ErrTooLarge},
		{"hello too large fragmented", []byte{0x16, 3, 1, 0, 2, 1, 1, 0x16, 3, 1, 0, 2, 0, 1}, Info{}, ErrTooLarge},
		{"length overruns body", rebuild([]byte{3, 3, 1}), Info{}, ErrMalformed},
		{"odd cipher suites", rebuild(append(append([]byte{3, 3}, make([]byte, 32)...), 0, 0, 1, 0xc0, 1, 0)), Info{}, ErrMalformed},
		{"garbage after extensions", rebuild(append(bareHello([]byte{})[9:], 0)), Info{}, ErrMalformed},
		{"duplicate server_name", withExtension(t, withSNI, sniExt(0, "evil.example")), Info{}, ErrMalformed},
		{"duplicate other extension", withExtension(t, withSNI, []byte{0x00, 0x10, 0, 5, 0, 3, 2, 'h', '2'}), Info{}, ErrMalformed},
		{"two host names", bareHello(sniExt(0, "a.example", 0, "b.example")), Info{}, ErrMalformed},
		{"empty host name", bareHello(sniExt(0, "")), Info{}, ErrMalformed},
		{"trailing dot", bareHello(sniExt(0, "a.example.")), Info{}, ErrMalformed},
		{"control byte in name", bareHello(sniExt(0, "a\nexample")), Info{}, ErrMalformed},
		{"non-ascii name", bareHello(sniExt(0, "bücher.example")), Info{}, ErrMalformed},
		{"empty server_name list", bareHello([]byte{0, 0, 0, 2, 0, 0}), Info{}, ErrMalformed},
		{"empty alpn protocol", bareHello([]byte{0, 0x10, 0, 3, 0, 1, 0}), Info{}, ErrMalformed},
		{"empty alpn list", bareHello([]byte{0, 0x10, 0, 2, 0, 0}), Info{}, ErrMalformed},
		{"empty supported_versions", bareHello([]byte{0, 43, 0, 1, 0}), Info{}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("Info (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseEveryPrefix: each proper prefix of a hello is incomplete, and
// Need never overshoots the bytes that are really missing.
func TestParseEveryPrefix(t *testing.T) {
	t.Parallel()
	for _, hello := range [][]byte{clientHello("prefix.example", "h2"), fragment(clientHello("frag.example"), 77)} {
		for i := range len(hello) {
			_, err := Parse(hello[:i])
			var inc *IncompleteError
			if !errors.As(err, &inc) {
				t.Fatalf("prefix %d/%d: %v", i, len(hello), err)
			}
			if inc.Need < 1 || i+inc.Need > len(hello) {
				t.Fatalf("prefix %d/%d: need %d", i, len(hello), inc.Need)
			}
		}
		if _, err := Parse(hello); err != nil {
			t.Fatal(err)
		}
	}
}

// TestParseDoesNotAlias: the returned strings do not change when the
// caller reuses its buffer.
func TestParseDoesNotAlias(t *testing.T) {
	t.Parallel()
	hello := clientHello("alias.example", "h2")
	info, err := Parse(hello)
	if err != nil {
		t.Fatal(err)
	}
	clear(hello)
	if diff := cmp.Diff(Info{ServerName: "alias.example", HasSNI: true, ALPN: []string{"h2"}, Version: tls.VersionTLS13}, info); diff != "" {
		t.Fatal(diff)
	}
}

func TestExtSetSpillsToMap(t *testing.T) {
	t.Parallel()
	var s extSet
	for i := range 100 {
		if s.addDup(uint16(1000 + i)) {
			t.Fatalf("%d reported twice", i)
		}
	}
	for _, v := range []uint16{1000, 1050, 1099, 0} {
		if v != 0 && !s.addDup(v) {
			t.Fatalf("duplicate %d missed", v)
		}
	}
}

// BenchmarkParse parses a real Go ClientHello (SNI, ALPN, post-quantum key
// share). The allocations are the name, the ALPN string and its slice.
func BenchmarkParse(b *testing.B) {
	hello := clientHello("bench.example.com", "h2", "http/1.1")
	b.Run("one-record", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(hello)))
		for b.Loop() {
			if _, err := Parse(hello); err != nil {
				b.Fatal(err)
			}
		}
	})
	frag := fragment(hello, 512)
	b.Run("fragmented-512", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frag)))
		for b.Loop() {
			if _, err := Parse(frag); err != nil {
				b.Fatal(err)
			}
		}
	})
	noALPN := clientHello("bench.example.com")
	b.Run("no-alpn", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(noALPN)))
		for b.Loop() {
			if _, err := Parse(noALPN); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// randomHello is a hello with a random name length, for the properties
// that must hold whatever the size.
func randomHello(r *mrand.Rand) ([]byte, string) {
	n := 1 + r.IntN(200)
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789-"
	var sb strings.Builder
	for i := range n {
		if i > 0 && i%20 == 0 {
			sb.WriteByte('.')
			continue
		}
		sb.WriteByte(letters[r.IntN(len(letters))])
	}
	name := sb.String() + ".example"
	return clientHello(name), name
}

func TestParseRandomFragmentations(t *testing.T) {
	t.Parallel()
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 50 {
		hello, name := randomHello(r)
		frag := fragment(hello, 1+r.IntN(600))
		info, err := Parse(frag)
		if err != nil || info.ServerName != name {
			t.Fatalf("%q: %+v %v", name, info, err)
		}
	}
}

// ext frames one extension: type, length, body.
func ext(typ uint16, body ...byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(body) >> 8), byte(len(body))}, body...)
}

// TestParseExtensionBodies: a hello whose extension crypto/tls's server
// would not parse is malformed for Parse too, so the guard never relays a
// hello an upstream reads differently or not at all; well-formed bodies of
// the same extensions parse, and so does an extension crypto/tls ignores.
func TestParseExtensionBodies(t *testing.T) {
	t.Parallel()
	sni := sniExt(0, "a.example")
	for _, tc := range []struct {
		name string
		exts []byte
		ok   bool
	}{
		{"well-formed", cat(sni, ext(extStatusRequest, 1, 0, 0, 0, 0), ext(extSupportedGroups, 0, 2, 0, 29),
			ext(extECPointFormats, 1, 0), ext(extSignatureAlgorithms, 0, 2, 4, 3), ext(extSignatureAlgsCert, 0, 2, 4, 3),
			ext(extSCT), ext(extExtendedMasterSecret), ext(extEarlyData), ext(extSupportedVersions, 2, 3, 4),
			ext(extCookie, 0, 1, 9), ext(extPSKModes, 1, 1), ext(extKeyShare, 0, 5, 0, 29, 0, 1, 7),
			ext(extRenegotiationInfo, 0), ext(extECH, 1), ext(0x1234, 1, 2, 3),
			ext(extPreSharedKey, 0, 7, 0, 1, 'x', 0, 0, 0, 0, 0, 2, 1, 5)), true},
		{"empty ech", cat(sni, ext(extECH)), true},
		{"outer ech", cat(sni, ext(extECH, 0, 0, 1, 0, 1, 7, 0, 1, 9, 0, 1, 8)), true},
		{"status_request cut", cat(sni, ext(extStatusRequest, 1, 0, 0)), false},
		{"supported_groups empty", cat(sni, ext(extSupportedGroups, 0, 0)), false},
		{"supported_groups odd", cat(sni, ext(extSupportedGroups, 0, 1, 0)), false},
		{"supported_groups trailing", cat(sni, ext(extSupportedGroups, 0, 2, 0, 29, 0)), false},
		{"ec_point_formats empty", cat(sni, ext(extECPointFormats, 0)), false},
		{"signature_algorithms empty", cat(sni, ext(extSignatureAlgorithms, 0, 0)), false},
		{"signature_algorithms_cert odd", cat(sni, ext(extSignatureAlgsCert, 0, 3, 4, 3, 1)), false},
		{"sct with a body", cat(sni, ext(extSCT, 0)), false},
		{"extended_master_secret with a body", cat(sni, ext(extExtendedMasterSecret, 0)), false},
		{"early_data with a body", cat(sni, ext(extEarlyData, 0)), false},
		{"supported_versions empty", cat(sni, ext(extSupportedVersions, 0)), false},
		{"supported_versions odd", cat(sni, ext(extSupportedVersions, 1, 3)), false},
		{"cookie empty", cat(sni, ext(extCookie, 0, 0)), false},
		{"psk modes cut", cat(sni, ext(extPSKModes, 2, 1)), false},
		{"key_share empty key", cat(sni, ext(extKeyShare, 0, 4, 0, 29, 0, 0)), false},
		{"renegotiation_info trailing", cat(sni, ext(extRenegotiationInfo, 0, 0)), false},
		{"pre_shared_key not last", cat(ext(extPreSharedKey, 0, 7, 0, 1, 'x', 0, 0, 0, 0, 0, 2, 1, 5), sni), false},
		{"pre_shared_key no binders", cat(sni, ext(extPreSharedKey, 0, 7, 0, 1, 'x', 0, 0, 0, 0, 0, 0)), false},
		{"pre_shared_key empty label", cat(sni, ext(extPreSharedKey, 0, 6, 0, 0, 0, 0, 0, 0, 0, 2, 1, 5)), false},
		{"ech of unknown type", cat(sni, ext(extECH, 2)), false},
		{"inner ech with a body", cat(sni, ext(extECH, 1, 0)), false},
		{"outer ech cut", cat(sni, ext(extECH, 0, 0, 1, 0, 1, 7, 0, 1)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hello := bareHello(tc.exts)
			_, err := Parse(hello)
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse: %v, want ok %v", err, tc.ok)
			}
			if chi := tlsView(hello); tc.ok != (chi != nil) {
				t.Fatalf("crypto/tls read %+v, want ok %v: the case does not match crypto/tls", chi, tc.ok)
			}
		})
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestVersionName(t *testing.T) {
	t.Parallel()
	for v, want := range map[uint16]string{0: "", tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1",
		tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3", 0x0300: "SSLv3", 0x7f1c: "0x7f1c", 0xfeff: "0xfeff"} {
		if got := VersionName(v); got != want {
			t.Errorf("VersionName(%#04x) = %q, want %q", v, got, want)
		}
	}
}
