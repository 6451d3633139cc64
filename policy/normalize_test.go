package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeHost(t *testing.T) {
	t.Parallel()
	type want struct {
		Host string
		Addr string
		IsIP bool
	}
	tests := []struct {
		name string
		raw  string
		want want
	}{
		{"lowercase name", "example.com", want{Host: "example.com"}},
		{"uppercase", "ExAmPle.COM", want{Host: "example.com"}},
		{"trailing dot", "example.com.", want{Host: "example.com"}},
		{"single label", "localhost", want{Host: "localhost"}},
		{"digits in labels", "1st.2nd.example", want{Host: "1st.2nd.example"}},
		{"hyphens", "a-b.c-d.com", want{Host: "a-b.c-d.com"}},
		{"idn", "bücher.example", want{Host: "xn--bcher-kva.example"}},
		{"idn uppercase", "BÜCHER.example", want{Host: "xn--bcher-kva.example"}},
		{"punycode kept", "xn--bcher-kva.example", want{Host: "xn--bcher-kva.example"}},
		{"punycode uppercase", "XN--BCHER-KVA.example", want{Host: "xn--bcher-kva.example"}},
		{"ideographic full stop", "example。com", want{Host: "example.com"}},
		{"ipv4 canonical", "169.254.169.254", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 trailing dot", "127.0.0.1.", want{Host: "127.0.0.1", Addr: "127.0.0.1", IsIP: true}},
		{"ipv4 decimal", "2852039166", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 hex", "0xa9fea9fe", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 hex upper", "0XA9FEA9FE", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 octal", "0251.0376.0251.0376", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 hex dotted", "0xa9.0xfe.0xa9.0xfe", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 mixed", "0xa9.254.0251.0xfe", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 short two parts", "127.1", want{Host: "127.0.0.1", Addr: "127.0.0.1", IsIP: true}},
		{"ipv4 short three parts", "169.254.43518", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 a.b 24 bit", "169.16689662", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 zero", "0", want{Host: "0.0.0.0", Addr: "0.0.0.0", IsIP: true}},
		{"ipv4 0x alone", "0x", want{Host: "0.0.0.0", Addr: "0.0.0.0", IsIP: true}},
		{"ipv4 leading zeros octal", "010.0.0.1", want{Host: "8.0.0.1", Addr: "8.0.0.1", IsIP: true}},
		{"ipv4 max", "4294967295", want{Host: "255.255.255.255", Addr: "255.255.255.255", IsIP: true}},
		{"ipv4 fullwidth digits", "１２７．０．０．１", want{Host: "127.0.0.1", Addr: "127.0.0.1", IsIP: true}},
		{"ipv6 bracketed", "[::1]", want{Host: "::1", Addr: "::1", IsIP: true}},
		{"ipv6 bare", "::1", want{Host: "::1", Addr: "::1", IsIP: true}},
		{"ipv6 uppercase", "[2001:DB8::1]", want{Host: "2001:db8::1", Addr: "2001:db8::1", IsIP: true}},
		{"ipv6 long form", "2001:0db8:0000:0000:0000:0000:0000:0001", want{Host: "2001:db8::1", Addr: "2001:db8::1", IsIP: true}},
		{"ipv4 mapped unmapped", "[::ffff:a9fe:a9fe]", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
		{"ipv4 mapped dotted", "::ffff:169.254.169.254", want{Host: "169.254.169.254", Addr: "169.254.169.254", IsIP: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host, addr, isIP, err := NormalizeHost(tt.raw)
			if err != nil {
				t.Fatalf("NormalizeHost(%q): %v", tt.raw, err)
			}
			got := want{Host: host, IsIP: isIP}
			if addr.IsValid() {
				got.Addr = addr.String()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NormalizeHost(%q) mismatch (-want +got):\n%s", tt.raw, diff)
			}
		})
	}
}

func TestNormalizeHostErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		raw  string
	}{
		{"empty", ""},
		{"dot", "."},
		{"two trailing dots", "example.com.."},
		{"leading dot", ".example.com"},
		{"empty label", "a..com"},
		{"underscore", "a_b.example"},
		{"space", "a b.example"},
		{"slash", "a/b.example"},
		{"at", "user@example.com"},
		{"percent", "ex%41mple.com"},
		{"star", "*.example.com"},
		{"leading hyphen", "-a.example.com"},
		{"trailing hyphen", "a-.example.com"},
		{"hyphens 3-4", "ab--c.example.com"},
		{"bad punycode", "xn--zz.example"},
		{"label too long", strings.Repeat("a", 64) + ".com"},
		{"name too long", strings.Repeat("abcdefghi.", 26) + "com"},
		{"ipv4 octet too big", "1.2.3.256"},
		{"ipv4 five parts", "1.2.3.4.5"},
		{"ipv4 overflow", "4294967296"},
		{"ipv4 short overflow", "127.16777216"},
		{"ipv4 bad octal", "09.1.1.1"},
		{"ipv4 bad hex", "0xg.1.1.1"},
		{"numeric tld", "example.123"},
		{"hex tld", "example.0x1f"},
		{"ipv4 empty part", "1..2.3"},
		{"ipv6 zone", "[fe80::1%eth0]"},
		{"ipv6 zone bare", "fe80::1%25eth0"},
		{"ipv6 bad", "[::g]"},
		{"ipv4 in brackets", "[127.0.0.1]"},
		{"unclosed bracket", "[::1"},
		{"host with port", "example.com:443"},
		{"bidi violation", "a\u05d0.example"},
		{"zero width joiner", "a\u200d.example"},
		{"control char", "a\x00.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host, _, _, err := NormalizeHost(tt.raw)
			if err == nil {
				t.Fatalf("NormalizeHost(%q) = %q, want error", tt.raw, host)
			}
			if !errors.Is(err, ErrBadHost) {
				t.Errorf("NormalizeHost(%q) error %v does not wrap ErrBadHost", tt.raw, err)
			}
		})
	}
}

func TestNormalizeHostAllocs(t *testing.T) {
	for _, raw := range []string{"api.github.com", "api.github.com.", "10.1.2.3", "[2001:db8::1]", "2001:db8::1"} {
		n := testing.AllocsPerRun(100, func() {
			if _, _, _, err := NormalizeHost(raw); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("NormalizeHost(%q): %v allocs, want 0", raw, n)
		}
	}
}

func TestNormalizeHostIdempotent(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"BÜCHER.example.", "0xa9fea9fe", "[::FFFF:a9fe:a9fe]", "Example.COM"} {
		h1, a1, _, err := NormalizeHost(raw)
		if err != nil {
			t.Fatal(err)
		}
		h2, a2, _, err := NormalizeHost(h1)
		if err != nil {
			t.Fatalf("renormalize %q: %v", h1, err)
		}
		if h1 != h2 || a1 != a2 {
			t.Errorf("not idempotent: %q -> %q (%v) -> %q (%v)", raw, h1, a1, h2, a2)
		}
	}
}
